// The bench surface every raced server exposes (see bench/apps.py), for the Node peers:
//   POST /v1/streams {prompt: KEY, max_tokens: M, delay_ms: D} -> 201 {id}
//   GET /v1/streams/:id -> {id, last_seq, subscribers}; DELETE /v1/streams/:id
//   POST /bench/go {key: KEY} opens the gate; GET /healthz.
// A stream's producer waits for its gate, then publishes M token events D ms apart
// (0: as fast as it can, yielding to the loop every 64), each text a wall-clock
// stamp in ns followed by a space, then the terminal event `done`.

import http from "node:http";
import { performance } from "node:perf_hooks";

const originNs = BigInt(Math.round(performance.timeOrigin * 1e6));

// Wall-clock ns, comparable with Python's time.time_ns() on the same machine.
export function nowNs() {
  return (originNs + BigInt(Math.round(performance.now() * 1e6))).toString();
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const tick = () => new Promise((resolve) => setImmediate(resolve));

class Gates {
  constructor() {
    this.gates = new Map();
  }
  get(key) {
    let gate = this.gates.get(key);
    if (!gate) {
      let open;
      const promise = new Promise((resolve) => (open = resolve));
      gate = { promise, open };
      this.gates.set(key, gate);
    }
    return gate;
  }
  open(key) {
    this.get(key).open();
    this.gates.delete(key);
  }
}

async function readJson(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return chunks.length ? JSON.parse(Buffer.concat(chunks).toString()) : {};
}

function reply(res, status, body) {
  const data = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(data) });
  res.end(data);
}

// `hooks.publish(stream, kind, fields)` delivers one event; `hooks.subscribers(stream)`
// counts them; `hooks.route(req, res, stream)` answers GET /v1/streams/:id/<rest>.
export function benchServer(hooks) {
  const gates = new Gates();
  const streams = new Map();
  let counter = 0;

  async function produce(stream, gate, count, delayMs) {
    await gate.promise;
    const interval = delayMs;
    const start = performance.now();
    for (let i = 0; i < count && !stream.stopped; i++) {
      if (interval) {
        const wait = start + i * interval - performance.now();
        if (wait > 0) await sleep(wait);
      } else if (i % 64 === 63) {
        await tick();
      }
      stream.lastSeq += 1;
      hooks.publish(stream, "token", { text: `${nowNs()} ` });
    }
    stream.lastSeq += 1;
    hooks.publish(stream, stream.stopped ? "cancelled" : "done", { finish_reason: "length" });
  }

  const server = http.createServer(async (req, res) => {
    try {
      const url = new URL(req.url, "http://x");
      const parts = url.pathname.split("/").filter(Boolean);
      if (url.pathname === "/healthz") return reply(res, 200, { status: "ok" });
      if (url.pathname === "/bench/go" && req.method === "POST") {
        gates.open((await readJson(req)).key);
        return reply(res, 200, { ok: true });
      }
      if (url.pathname === "/v1/streams" && req.method === "POST") {
        const body = await readJson(req);
        counter += 1;
        const stream = { id: `st_${counter}`, lastSeq: 0, stopped: false, subs: new Set() };
        streams.set(stream.id, stream);
        produce(stream, gates.get(body.prompt), Number(body.max_tokens), Number(body.delay_ms || 0));
        return reply(res, 201, { id: stream.id });
      }
      if (parts[0] === "v1" && parts[1] === "streams" && parts.length >= 3) {
        const stream = streams.get(parts[2]);
        if (!stream) return reply(res, 404, { error: { code: "not_found", message: parts[2] } });
        if (parts.length === 3 && req.method === "GET") {
          return reply(res, 200, { id: stream.id, last_seq: stream.lastSeq, subscribers: hooks.subscribers(stream) });
        }
        if (parts.length === 3 && req.method === "DELETE") {
          stream.stopped = true;
          streams.delete(stream.id);
          return reply(res, 200, { id: stream.id });
        }
        return hooks.route(req, res, stream, parts.slice(3).join("/"));
      }
      reply(res, 404, { error: { code: "not_found", message: url.pathname } });
    } catch (err) {
      reply(res, 400, { error: { code: "bad_request", message: String(err) } });
    }
  });
  return { server, streams };
}

export function listen(server) {
  const args = process.argv.slice(2);
  const port = Number(args[args.indexOf("--port") + 1]);
  const backlog = args.includes("--backlog") ? Number(args[args.indexOf("--backlog") + 1]) : 4096;
  server.listen({ host: "127.0.0.1", port, backlog });
  process.on("SIGTERM", () => process.exit(0));
}
