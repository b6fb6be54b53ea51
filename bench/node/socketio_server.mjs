// The Node socket.io 4 peer: seed 004's events (job:open, model:chunk, job:completed)
// broadcast to the room job:{id}, as a socket.io app does it (one encode per emit).
// Run: node bench/node/socketio_server.mjs --port PORT

import { Server } from "socket.io";
import { benchServer, listen } from "./surface.mjs";

const ENDS = { done: "job:completed", error: "job:error", cancelled: "job:error" };

let io;
const { server, streams } = benchServer({
  publish(stream, kind, fields) {
    const room = io.to(`job:${stream.id}`);
    const seq = stream.lastSeq;
    if (kind === "token") {
      room.emit("model:chunk", {
        jobId: stream.id,
        chunk: fields.text,
        sequence: seq,
        timestamp: Date.now(),
        metadata: { kind },
      });
    } else {
      room.emit(ENDS[kind] || "job:event", { jobId: stream.id, sequence: seq, ...fields });
    }
  },
  subscribers: (stream) => io.sockets.adapter.rooms.get(`job:${stream.id}`)?.size ?? 0,
  route(req, res) {
    res.writeHead(404).end();
  },
});

io = new Server(server, { serveClient: false, cors: { origin: "*" } });
io.on("connection", (socket) => {
  socket.on("subscribe", (msg) => {
    const stream = streams.get(msg?.jobId);
    if (!stream) {
      socket.emit("error", { code: "stream_not_found", message: String(msg?.jobId) });
      return;
    }
    socket.join(`job:${stream.id}`);
    socket.emit("job:open", { jobId: stream.id, last_seq: stream.lastSeq, status: "running" });
  });
});
listen(server);
