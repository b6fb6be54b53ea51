// Every transport end to end against a tiny in-test server speaking the
// protocol (test/fixtures/server.js): connections cut mid-stream, silent
// servers, error statuses, lost history. Each stream must arrive whole,
// every event exactly once.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { startServer, tokenScript } from '../test-support/protocol-server.js';
import { TokenwireClient, HTTPStatusError, StreamNotFoundError } from '../src/tokenwire.js';
import { crc32Hex } from '../src/crc32.js';

let srv;
before(async () => {
  srv = await startServer();
});
after(async () => {
  await srv.close();
});

const N = 12;
const EXPECTED_TEXT = Array.from({ length: N }, (_, i) => `tok${i + 1} `).join('');

function client(transport, options = {}) {
  return new TokenwireClient({
    baseUrl: srv.url,
    transport,
    WebSocket,
    random: () => 0, // reconnect at once
    checkpoint: false,
    ...options,
  });
}

async function drain(handle) {
  const events = [];
  for await (const ev of handle) events.push(ev);
  return events;
}

const seqs = (events) => events.filter((e) => typeof e.seq === 'number').map((e) => e.seq);

for (const transport of ['sse', 'ndjson', 'ws']) {
  test(`${transport}: cut mid-stream three times, resumes after the last seq, every event exactly once`, async () => {
    srv.plans.length = 0;
    srv.plans.push({ cutAfter: 3 }, { cutAfter: 4 }, { cutAfter: 1 });
    const c = client(transport);
    const created = srv.create({}, tokenScript(N));
    const start = srv.requests.length;
    const h = c.subscribe(created.id);
    const events = await drain(h);
    assert.deepEqual(seqs(events), Array.from({ length: N + 1 }, (_, i) => i + 1));
    assert.equal(h.text, EXPECTED_TEXT);
    assert.equal(h.status, 'done');
    const reqs = srv.requests.slice(start).filter((r) => r.method !== 'WS' || r.op === 'subscribe');
    assert.deepEqual(
      reqs.map((r) => r.after),
      [0, 3, 7, 8],
    );
    if (transport === 'sse') {
      assert.deepEqual(
        reqs.map((r) => r.lastEventId),
        [null, '3', '7', '8'],
        'Last-Event-ID header on every resume',
      );
    }
    c.close();
  });
}

for (const transport of ['sse', 'ndjson', 'ws']) {
  test(`${transport}: coalesceMs asks every subscription and resume for the window`, async () => {
    srv.plans.length = 0;
    srv.plans.push({ cutAfter: 3 });
    const c = client(transport);
    const created = srv.create({}, tokenScript(N));
    const start = srv.requests.length;
    const h = c.subscribe(created.id, { coalesceMs: 20 });
    const events = await drain(h);
    assert.deepEqual(seqs(events), Array.from({ length: N + 1 }, (_, i) => i + 1));
    const reqs = srv.requests.slice(start).filter((r) => r.method !== 'WS' || r.op === 'subscribe');
    assert.equal(reqs.length, 2);
    const want = transport === 'ws' ? 20 : '20'; // an op field, or a query parameter
    assert.deepEqual(reqs.map((r) => r.coalesce), [want, want]);
    // Without it, nothing is sent: the server's default applies.
    const plain = srv.create({}, tokenScript(2));
    const at = srv.requests.length;
    await drain(c.subscribe(plain.id));
    const first = srv.requests.slice(at).find((r) => r.method !== 'WS' || r.op === 'subscribe');
    assert.equal(first.coalesce, null);
    for (const bad of [-1, 1001, 2.5, '20', true]) {
      assert.throws(() => c.subscribe(plain.id, { coalesceMs: bad }), /coalesceMs must be an integer 0\.\.1000/);
    }
    c.close();
  });
}

for (const transport of ['sse', 'ndjson']) {
  test(`${transport}: resuming at the terminal event gets 204 and ends as the stream did, without reconnecting`, async () => {
    srv.plans.length = 0;
    const s = srv.create({}, tokenScript(3));
    await drain(client(transport).subscribe(s.id)); // let the stream end
    const start = srv.requests.length;
    const h = client(transport).subscribe(s.id, { after: 4 });
    const events = await drain(h);
    assert.deepEqual(seqs(events), [4], 'only the local terminal event, at the last seq');
    assert.equal(h.status, 'done');
    assert.equal(h.error, null);
    const gets = srv.requests.slice(start).filter((r) => r.path.endsWith(transport === 'sse' ? '/events' : '/ndjson'));
    assert.equal(gets.length, 1, 'a 204 is not retried');
  });
}

test('sse: start() POSTs, streams, and survives a cut with catch-up merging', async () => {
  srv.plans.length = 0;
  srv.plans.push({ cutAfter: 2 }, { merge: true });
  const c = client('sse');
  const h = c.start({ model: 'scripted', prompt: 'hello', max_tokens: 5 });
  const events = await drain(h);
  const tokens = events.filter((e) => e.kind === 'token');
  assert.equal(tokens.length, 3, 'two tokens, then one merged frame');
  assert.deepEqual([tokens[2].from_seq, tokens[2].seq], [3, 5]);
  assert.equal(h.text, 'tok1 tok2 tok3 tok4 tok5 ');
  assert.equal(h.stats.tokens, 5);
  assert.ok(h.stats.ttftMs >= 0);
  assert.match(h.id, /^st_/);
});

test('sse: lost history is an explicit gap, never silent', async () => {
  srv.plans.length = 0;
  const s = srv.create({});
  s.firstRetained = 4;
  const h = client('sse').subscribe(s.id);
  const events = await drain(h);
  const gap = events.find((e) => e.kind === 'gap');
  assert.deepEqual(gap, { kind: 'gap', from_seq: 1, to_seq: 3, reason: 'not_recovered', epoch: 'ep1' });
  assert.deepEqual(seqs(events), [4, 5, 6]);
  assert.equal(h.text, 'tok4 tok5 ');
});

test('sse: 503 is retried, 404 is final', async () => {
  srv.plans.length = 0;
  srv.plans.push({ status: 503 }, { status: 503 });
  const s = srv.create({});
  const h = client('sse').subscribe(s.id);
  await drain(h);
  assert.equal(h.text, 'tok1 tok2 tok3 tok4 tok5 ');

  const gone = client('sse').subscribe('st_nope');
  await assert.rejects(drain(gone), (err) => err instanceof HTTPStatusError && err.status === 404 && err.code === 'not_found');
  assert.equal(gone.state, 'error');
});

test('sse: a silent server is dropped after two heartbeat intervals and resumed', async () => {
  srv.plans.length = 0;
  srv.plans.push({ silentAfter: 2 });
  const s = srv.create({});
  const start = srv.requests.length;
  const states = [];
  const h = client('sse', { heartbeatMs: 40 }).subscribe(s.id, { onState: (st) => states.push(st) });
  const events = await drain(h);
  assert.deepEqual(seqs(events), [1, 2, 3, 4, 5, 6]);
  assert.ok(states.includes('reconnecting'));
  assert.deepEqual(
    srv.requests.slice(start).map((r) => r.after),
    [0, 2],
  );
});

test('sse: cancel() sends DELETE and ends with the server\'s cancelled event', async () => {
  srv.plans.length = 0;
  const s = srv.create({});
  s.log.pop(); // no `done`: the stream is still running
  const h = client('sse').subscribe(s.id);
  const ended = drain(h);
  await new Promise((resolve) => h.on('token', (ev) => ev.seq === 5 && resolve()));
  await h.cancel();
  const events = await ended;
  assert.equal(events[events.length - 1].kind, 'cancelled');
  assert.equal(h.status, 'cancelled');
  assert.ok(srv.requests.some((r) => r.method === 'DELETE' && r.path === `/v1/streams/${s.id}`));
});

test('ndjson: start() and stream to the end', async () => {
  srv.plans.length = 0;
  const h = client('ndjson').start({ model: 'scripted', prompt: 'x' });
  const events = await drain(h);
  assert.equal(events[0].kind, 'open');
  assert.equal(h.text, 'tok1 tok2 tok3 tok4 tok5 ');
});

test('ws: start op, binary tensor chunk frames, a cut socket, cancel op', async () => {
  srv.plans.length = 0;
  const values = new Float32Array(Array.from({ length: 10 }, (_, i) => i / 4));
  const bytes = new Uint8Array(values.buffer);
  const tensorStream = srv.create({});
  tensorStream.log.length = 0;
  tensorStream.append({ kind: 'tensor.header', tensor_id: 'logits', shape: [2, 5], dtype: 'float32', strides: [20, 4], byteorder: 'little', nbytes: 40, chunk_bytes: 16, chunks: 3, meta: { step: 1 } });
  for (let i = 0; i < 3; i++) tensorStream.append({ kind: 'tensor.chunk', tensor_id: 'logits', index: i, offset: i * 16, data: bytes.slice(i * 16, (i + 1) * 16) });
  tensorStream.append({ kind: 'tensor.end', tensor_id: 'logits', checksum: `crc32:${crc32Hex(bytes)}` });
  tensorStream.append({ kind: 'done', finish_reason: 'stop', usage: null });

  const c = client('ws');
  srv.plans.push({ cutAfter: 2 }); // the socket dies after the header and one chunk
  const tensors = [];
  const h = c.subscribe(tensorStream.id, { onTensor: (t) => tensors.push(t) });
  const events = await drain(h);
  assert.deepEqual(seqs(events.filter((e) => e.kind !== 'tensor')), [1, 2, 3, 4, 5, 6]);
  assert.equal(events.filter((e) => e.kind === 'open').length, 2, 'one open per subscription');
  assert.equal(tensors.length, 1);
  assert.deepEqual([...tensors[0].array], [...values]);
  assert.deepEqual(tensors[0].shape, [2, 5]);
  assert.deepEqual(tensors[0].meta, { step: 1 });

  // Two streams multiplexed on one socket, one of them stopped with the cancel op.
  const a = c.start({ model: 'scripted', prompt: 'a' });
  const running = srv.create({});
  running.log.pop();
  const b = c.subscribe(running.id);
  const bEvents = drain(b);
  await drain(a);
  assert.equal(a.text, 'tok1 tok2 tok3 tok4 tok5 ');
  await new Promise((resolve) => (b.lastSeq >= 5 ? resolve() : b.on('token', (ev) => ev.seq === 5 && resolve())));
  await b.cancel();
  const last = (await bEvents).pop();
  assert.equal(last.kind, 'cancelled');
  assert.ok(srv.requests.some((r) => r.method === 'WS' && r.op === 'cancel' && r.stream === running.id));

  const gone = c.subscribe('st_nope');
  await assert.rejects(drain(gone), (err) => err instanceof StreamNotFoundError && err.code === 'not_found');
  c.close();
});

test('eventsource fallback: the error of a 204 (resumed at the end) ends the handle, no reconnect', async () => {
  const made = [];
  class FakeEventSource {
    constructor(url) {
      this.url = url;
      this.listeners = new Map();
      made.push(this);
    }
    addEventListener(name, fn) {
      if (!this.listeners.has(name)) this.listeners.set(name, []);
      this.listeners.get(name).push(fn);
    }
    emit(type, init) {
      for (const fn of this.listeners.get(type) ?? []) fn({ type, ...init });
    }
    close() {
      this.closed = true;
    }
  }
  srv.plans.length = 0;
  const s = srv.create({}, tokenScript(3));
  await drain(client('sse').subscribe(s.id)); // let the stream end
  const c = new TokenwireClient({ baseUrl: srv.url, transport: 'eventsource', EventSource: FakeEventSource, checkpoint: false, random: () => 0 });
  const h = c.subscribe(s.id, { after: 4 });
  const all = drain(h);
  await new Promise((r) => setImmediate(r));
  made[0].emit('error', {}); // what EventSource does on a 204: error, then no reconnect
  const events = await all;
  assert.deepEqual(seqs(events), [4]);
  assert.equal(h.status, 'done');
  assert.equal(made.length, 1);
  assert.ok(made[0].closed);
});

test('eventsource fallback: routes the server\'s open/error events apart from the connection\'s', async () => {
  // A minimal EventSource stand-in: replays a scripted SSE exchange as DOM-like events.
  const made = [];
  class FakeEventSource {
    constructor(url) {
      this.url = url;
      this.listeners = new Map();
      made.push(this);
    }
    addEventListener(name, fn) {
      if (!this.listeners.has(name)) this.listeners.set(name, []);
      this.listeners.get(name).push(fn);
    }
    emit(type, init) {
      for (const fn of this.listeners.get(type) ?? []) fn({ type, ...init });
    }
    close() {
      this.closed = true;
    }
  }
  const c = new TokenwireClient({ baseUrl: srv.url, transport: 'eventsource', EventSource: FakeEventSource, checkpoint: false, random: () => 0 });
  const h = c.subscribe('st_1');
  const all = drain(h);
  await new Promise((r) => setImmediate(r));
  let es = made[0];
  assert.equal(es.url, `${srv.url}/v1/streams/st_1/events`);
  es.emit('open', {}); // the connection opened: no data, not our frame
  es.emit('open', { data: JSON.stringify({ stream: 'st_1', epoch: 'e', recovered: true, first_seq: 1, last_seq: 0, status: 'running' }) });
  es.emit('token', { data: JSON.stringify({ seq: 1, kind: 'token', text: 'a' }), lastEventId: '1' });
  es.emit('error', {}); // connection error: the transport diagnoses and reconnects
  await new Promise((r) => setTimeout(r, 30));
  es = made[1];
  assert.ok(made[0].closed);
  assert.equal(es.url, `${srv.url}/v1/streams/st_1/events?after=1`);
  // The open frame's current name; the first connection used the old one.
  es.emit('tw-open', { data: JSON.stringify({ stream: 'st_1', epoch: 'e', recovered: true, first_seq: 1, last_seq: 1, status: 'running' }) });
  es.emit('token', { data: JSON.stringify({ seq: 1, kind: 'token', text: 'a' }) });
  es.emit('token', { data: JSON.stringify({ seq: 2, kind: 'token', text: 'b' }) });
  es.emit('error', { data: JSON.stringify({ seq: 3, kind: 'error', code: 'boom', message: 'x' }) });
  const events = await all;
  assert.deepEqual(events.map((e) => e.kind), ['open', 'token', 'open', 'token', 'error']);
  assert.equal(h.text, 'ab');
  assert.equal(h.error.code, 'boom');
});
