// The plain Node SSE peer: seed 002's pattern, one async generator per request piped
// through Readable.from(), fed by a queue per subscriber (what a Node app writes).
// Run: node bench/node/sse_server.mjs --port PORT

import { Readable } from "node:stream";
import { benchServer, listen } from "./surface.mjs";

const TERMINAL = new Set(["done", "error", "cancelled"]);

class Subscriber {
  constructor() {
    this.items = [];
    this.wake = null;
  }
  push(item) {
    this.items.push(item);
    if (this.wake) {
      this.wake();
      this.wake = null;
    }
  }
  next() {
    if (this.items.length) return Promise.resolve(this.items.shift());
    return new Promise((resolve) => (this.wake = () => resolve(this.items.shift())));
  }
}

async function* events(stream, sub) {
  try {
    yield "retry: 2000\n\n";
    for (;;) {
      const { kind, frame } = await sub.next();
      yield frame;
      if (TERMINAL.has(kind)) return;
    }
  } finally {
    stream.subs.delete(sub);
  }
}

const { server } = benchServer({
  publish(stream, kind, fields) {
    const seq = stream.lastSeq;
    // Encoded once per event; each subscriber's generator yields the same string.
    const frame = `id: ${seq}\nevent: ${kind}\ndata: ${JSON.stringify({ seq, kind, ...fields })}\n\n`;
    for (const sub of stream.subs) sub.push({ kind, frame });
  },
  subscribers: (stream) => stream.subs.size,
  route(req, res, stream, rest) {
    if (rest !== "events") {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, {
      "Content-Type": "text/event-stream",
      "Cache-Control": "no-cache",
      Connection: "keep-alive",
      "X-Accel-Buffering": "no",
    });
    const sub = new Subscriber();
    stream.subs.add(sub);
    const readable = Readable.from(events(stream, sub));
    readable.pipe(res);
    res.on("close", () => {
      // The generator waits on its queue: wake it so it returns (and runs its finally).
      stream.subs.delete(sub);
      sub.push({ kind: "cancelled", frame: "" });
      readable.destroy();
    });
  },
});
listen(server);
