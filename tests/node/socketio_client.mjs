// A socket.io-client run for tokenwire's end-to-end tests (tests/test_socketio.py).
//
//   node tests/node/socketio_client.mjs '<json options>'
//
// Options: {url, scenario, jobId?, cuts?, request?, transports?}. Scenarios:
//   resume     subscribe {jobId, lastSequence: 0}; after cuts[i] model:chunk events
//              disconnect, connect a new socket and subscribe with lastSequence = the
//              last sequence seen; to job:completed or job:error
//   start      emit start {request} with an ack, then read to the end
//   cancel     subscribe, emit cancel {jobId} after 3 chunks, read to job:error
//   malformed  emit bad payloads (acks and error events), then subscribe properly
//
// Prints one JSON line per thing that happened: {"socket": n, "event": name, "data": …}
// for every server event, {"ack": name, "data": …} for acks, and {"exit": 0} last.

import { io } from "socket.io-client";

const opts = JSON.parse(process.argv[2]);
const TERMINAL = new Set(["job:completed", "job:error"]);
let socketCount = 0;

function print(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

function connect() {
  const n = ++socketCount;
  const transports = opts.transports || ["websocket"];
  const socket = io(opts.url, { forceNew: true, reconnection: false, transports });
  // What the app consumed: nothing after it decided to leave.
  socket.leaving = false;
  socket.onAny((event, data) => {
    if (socket.leaving) return;
    if (data && data.data instanceof ArrayBuffer) data.data = { bytes: data.data.byteLength };
    print({ socket: n, event, data });
  });
  return new Promise((resolve, reject) => {
    socket.once("connect", () => resolve(socket));
    socket.once("connect_error", reject);
  });
}

function waitFor(socket, pred) {
  return new Promise((resolve) => {
    const listener = (event, data) => {
      if (pred(event, data)) {
        socket.offAny(listener);
        resolve([event, data]);
      }
    };
    socket.onAny(listener);
  });
}

async function ack(socket, name, payload) {
  const reply = await socket.timeout(10000).emitWithAck(name, payload);
  print({ ack: name, data: reply });
  return reply;
}

async function resume() {
  const cuts = [...(opts.cuts || [])];
  let last = 0;
  for (;;) {
    const socket = await connect();
    let chunks = 0;
    const limit = cuts.length ? cuts.shift() : Infinity;
    const stop = waitFor(socket, (event, data) => {
      if (data && typeof data.sequence === "number") last = data.sequence;
      if (event === "model:chunk") chunks += 1;
      socket.leaving = TERMINAL.has(event) || chunks >= limit;
      return socket.leaving;
    });
    await ack(socket, "subscribe", { jobId: opts.jobId, lastSequence: last });
    const [event] = await stop;
    socket.disconnect();
    if (TERMINAL.has(event)) return;
  }
}

async function start() {
  const socket = await connect();
  const end = waitFor(socket, (event) => TERMINAL.has(event));
  const reply = await ack(socket, "start", { request: opts.request });
  if (reply.ok) await end;
  socket.disconnect();
}

async function cancel() {
  const socket = await connect();
  let chunks = 0;
  const third = waitFor(socket, (event) => event === "model:chunk" && ++chunks === 3);
  const end = waitFor(socket, (event) => TERMINAL.has(event));
  await ack(socket, "subscribe", { jobId: opts.jobId, lastSequence: 0 });
  await third;
  await ack(socket, "cancel", { jobId: opts.jobId });
  await end;
  socket.disconnect();
}

async function malformed() {
  const socket = await connect();
  await ack(socket, "subscribe", "not an object");
  await ack(socket, "subscribe", { jobId: 5 });
  await ack(socket, "subscribe", { jobId: opts.jobId, lastSequence: -1 });
  await ack(socket, "subscribe", { jobId: "st_unknown" });
  await ack(socket, "cancel", {});
  await ack(socket, "start", { request: { prompt: 5 } });
  await ack(socket, "no-such-event", { jobId: opts.jobId });
  socket.emit("subscribe"); // no payload, no ack: the error event still comes
  await waitFor(socket, (event) => event === "error");
  const end = waitFor(socket, (event) => TERMINAL.has(event));
  await ack(socket, "subscribe", { jobId: opts.jobId, lastSequence: 0 });
  await end;
  socket.disconnect();
}

const scenarios = { resume, start, cancel, malformed };

try {
  await scenarios[opts.scenario]();
  print({ exit: 0 });
  process.exit(0);
} catch (err) {
  print({ exit: 1, error: String(err && err.stack ? err.stack : err) });
  process.exit(1);
}
