// A tiny in-test tokenwire server speaking docs/protocol.md over SSE, NDJSON
// and WebSocket, with knobs to misbehave: cut a connection after k events, go
// silent, answer an error status, forget history, merge catch-up tokens.

import http from 'node:http';
import path from 'node:path';
import { readFile } from 'node:fs/promises';
import { WebSocketServer } from 'ws';
import { encodeChunkFrame } from '../src/wsframe.js';
import { encodeBase64 } from '../src/base64.js';

const TERMINAL = new Set(['done', 'error', 'cancelled']);

export function tokenScript(n, { prefix = 'tok' } = {}) {
  const events = [];
  for (let i = 1; i <= n; i++) events.push({ kind: 'token', text: `${prefix}${i} ` });
  events.push({ kind: 'done', finish_reason: 'length', usage: { prompt_tokens: 1, completion_tokens: n, total_tokens: n + 1 } });
  return events;
}

class FakeStream {
  constructor(id, events) {
    this.id = id;
    this.epoch = 'ep1';
    this.log = [];
    this.firstRetained = 1; // seqs below this are "no longer retained"
    this.listeners = new Set();
    for (const ev of events) this.append(ev);
  }

  get status() {
    const last = this.log[this.log.length - 1];
    return last && TERMINAL.has(last.kind) ? last.kind : 'running';
  }

  get ended() {
    return this.status !== 'running';
  }

  append(ev) {
    if (this.ended) return null;
    const e = { seq: this.log.length + 1, ...ev };
    this.log.push(e);
    for (const l of this.listeners) l(e);
    return e;
  }
}

// Text form of an event: tensor chunk bytes as base64.
function textForm(ev) {
  if (ev.kind === 'tensor.chunk' && ev.data instanceof Uint8Array) return { ...ev, data: encodeBase64(ev.data) };
  return ev;
}

// Catch-up merging: runs of tokens become one frame with from_seq.
function coalesce(events) {
  const out = [];
  for (const ev of events) {
    const prev = out[out.length - 1];
    if (ev.kind === 'token' && prev && prev.kind === 'token') {
      out[out.length - 1] = { seq: ev.seq, kind: 'token', text: prev.text + ev.text, from_seq: prev.from_seq ?? prev.seq };
    } else out.push(ev);
  }
  return out;
}

const TYPES = { '.js': 'text/javascript', '.html': 'text/html', '.ts': 'text/plain' };

/**
 * @param {object} [o]
 * @param {number} [o.retryMs] the SSE `retry:` the server announces
 * @param {(body: object, id: string) => object[]} [o.script] events of a new stream
 * @param {string} [o.staticDir] serve this folder at /static/ (the browser check)
 * @param {(req, res) => boolean} [o.extra] other routes; true when handled
 * @param {number} [o.cutFirstAfter] cut every stream's first subscription after this many events
 */
export async function startServer({ retryMs = 5, script = () => tokenScript(5), staticDir, extra, cutFirstAfter } = {}) {
  const streams = new Map();
  const requests = []; // {method, path, after, lastEventId}
  const plans = []; // per GET/subscribe connection, in order: {cutAfter, silentAfter, status, merge}
  let n = 0;
  const seen = new Set(); // streams subscribed at least once (cutFirstAfter)
  const planFor = (s) => {
    const first = !seen.has(s.id);
    seen.add(s.id);
    if (first && cutFirstAfter !== undefined) return { cutAfter: cutFirstAfter };
    return plans.shift() ?? {};
  };

  const create = (body, events) => {
    const id = `st_${++n}`;
    const s = new FakeStream(id, events ?? script(body, id));
    streams.set(id, s);
    return s;
  };

  const cancel = (s) => s && s.append({ kind: 'cancelled', reason: 'stopped' });

  // Deliver backlog then live events through `send`, honouring the plan.
  function follow(s, after, plan, send, end, destroy) {
    let sent = 0;
    let stopped = false;
    const push = (ev) => {
      if (stopped) return;
      if (plan.silentAfter !== undefined && sent >= plan.silentAfter) return;
      send(ev);
      sent += ev.from_seq ? ev.seq - ev.from_seq + 1 : 1;
      if (plan.cutAfter !== undefined && sent >= plan.cutAfter) {
        stopped = true;
        s.listeners.delete(push);
        destroy();
        return;
      }
      if (TERMINAL.has(ev.kind)) {
        stopped = true;
        s.listeners.delete(push);
        end();
      }
    };
    let backlog = s.log.filter((e) => e.seq > after && e.seq >= s.firstRetained);
    if (plan.merge) backlog = coalesce(backlog);
    for (const ev of backlog) push(ev);
    if (!stopped) s.listeners.add(push);
    return () => {
      stopped = true;
      s.listeners.delete(push);
    };
  }

  const openFrame = (s, after) => ({
    stream: s.id,
    epoch: s.epoch,
    recovered: after + 1 >= s.firstRetained,
    first_seq: s.firstRetained,
    last_seq: s.log.length,
    status: s.status,
  });

  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, 'http://x');
    if (extra && (await extra(req, res, url))) return;
    if (staticDir && url.pathname.startsWith('/static/')) {
      const file = path.join(staticDir, path.normalize(url.pathname.slice('/static/'.length)));
      if (!file.startsWith(staticDir)) return res.writeHead(403).end();
      try {
        const body = await readFile(file);
        res.writeHead(200, { 'Content-Type': TYPES[path.extname(file)] ?? 'application/octet-stream' });
        res.end(body);
      } catch {
        res.writeHead(404).end();
      }
      return;
    }
    const parts = url.pathname.split('/').filter(Boolean); // v1 streams {id} events
    const lastEventId = req.headers['last-event-id'];
    const queryAfter = url.searchParams.get('after');
    const after = Number(queryAfter ?? lastEventId ?? 0);
    requests.push({ method: req.method, path: url.pathname, after, lastEventId: lastEventId ?? null, query: queryAfter, coalesce: url.searchParams.get('coalesce_ms') });
    const json = (status, body) => {
      res.writeHead(status, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (req.method === 'POST' && url.pathname === '/v1/streams') {
      let raw = '';
      for await (const chunk of req) raw += chunk;
      const s = create(JSON.parse(raw));
      json(201, { id: s.id, status: 'running', events_url: `/v1/streams/${s.id}/events` });
      return;
    }
    const s = streams.get(parts[2]);
    if (!s) return json(404, { error: { code: 'not_found', message: 'unknown stream' } });
    if (req.method === 'DELETE' && parts.length === 3) {
      cancel(s);
      return json(200, { id: s.id, status: s.status });
    }
    if (req.method === 'GET' && parts.length === 3) return json(200, { id: s.id, status: s.status, last_seq: s.log.length });
    const plan = planFor(s);
    if (plan.status) return json(plan.status, { error: { code: 'overloaded', message: 'try later' } });
    // Resumed at or past the terminal event: 204, as tokenwire answers.
    if (s.ended && after >= s.log.length) return res.writeHead(204).end();
    if (parts[3] === 'events') {
      res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache', 'X-Accel-Buffering': 'no' });
      res.write(`retry: ${retryMs}\n\n`);
      res.write(`event: tw-open\ndata: ${JSON.stringify(openFrame(s, after))}\n\n`);
      const stop = follow(
        s,
        after,
        plan,
        (ev) => res.write(`event: ${ev.kind}\ndata: ${JSON.stringify(textForm(ev))}\nid: ${ev.seq}\n\n`),
        () => res.end(),
        () => res.write('\n', () => res.destroy()), // flush what was sent, then cut
      );
      req.on('close', stop);
      return;
    }
    if (parts[3] === 'ndjson') {
      res.writeHead(200, { 'Content-Type': 'application/x-ndjson' });
      res.write(JSON.stringify({ kind: 'open', ...openFrame(s, after) }) + '\n');
      const stop = follow(
        s,
        after,
        plan,
        (ev) => res.write(JSON.stringify(textForm(ev)) + '\n'),
        () => res.end(),
        () => res.write('\n', () => res.destroy()),
      );
      req.on('close', stop);
      return;
    }
    json(404, { error: { code: 'not_found', message: 'no such route' } });
  });

  const wss = new WebSocketServer({ server, path: '/v1/ws' });
  const sockets = new Set();
  wss.on('connection', (ws) => {
    sockets.add(ws);
    const subs = new Map();
    const subscribe = (s, after) => {
      const plan = planFor(s);
      ws.send(JSON.stringify({ type: 'open', ...openFrame(s, after) }));
      const stop = follow(
        s,
        after,
        plan,
        (ev) => {
          if (ev.kind === 'tensor.chunk') ws.send(encodeChunkFrame({ stream: s.id, ...ev }));
          else ws.send(JSON.stringify({ type: 'event', stream: s.id, ...ev }));
        },
        () => subs.delete(s.id),
        () => ws.send(JSON.stringify({ type: 'heartbeat', ts: 0 }), () => ws.terminate()),
      );
      subs.set(s.id, stop);
    };
    ws.on('message', (raw) => {
      const msg = JSON.parse(String(raw));
      requests.push({ method: 'WS', op: msg.op, stream: msg.stream, after: msg.after ?? 0, coalesce: msg.coalesce_ms ?? null });
      if (msg.op === 'start') {
        const s = create(msg.request);
        ws.send(JSON.stringify({ type: 'started', id: msg.id, stream: s.id, status: 'running' }));
        subscribe(s, 0);
      } else if (msg.op === 'subscribe') {
        const s = streams.get(msg.stream);
        if (!s) return ws.send(JSON.stringify({ type: 'error', code: 'not_found', message: 'unknown stream', stream: msg.stream }));
        subscribe(s, msg.after ?? 0);
      } else if (msg.op === 'unsubscribe') {
        const stop = subs.get(msg.stream);
        if (stop) stop();
        subs.delete(msg.stream);
        ws.send(JSON.stringify({ type: 'unsubscribed', stream: msg.stream }));
      } else if (msg.op === 'cancel') {
        cancel(streams.get(msg.stream));
      }
    });
    ws.on('close', () => {
      sockets.delete(ws);
      for (const stop of subs.values()) stop();
    });
  });

  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}`,
    streams,
    requests,
    plans,
    create,
    async close() {
      for (const ws of sockets) ws.terminate();
      wss.close();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
