// The client, handle and connection driver against a scripted in-memory
// transport and a manual clock: no network, no real time.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TokenwireClient, ManualClock, StreamStore, HTTPStatusError, TransportError, StreamGapError, ReconnectExhaustedError, HeartbeatTimeoutError } from '../src/tokenwire.js';
import { encodeBase64 } from '../src/base64.js';
import { crc32Hex } from '../src/crc32.js';
import { FakeTransport, MemoryStorage } from '../test-support/fakes.js';

const OPEN = { stream: 'st_1', epoch: 'e1', recovered: true, first_seq: 1, last_seq: 0, status: 'running' };
const tok = (seq, text, extra) => ({ seq, kind: 'token', text, ...extra });

function setup(options = {}) {
  const transport = new FakeTransport();
  const clock = new ManualClock(1000);
  const storage = new MemoryStorage();
  const client = new TokenwireClient({
    transport,
    clock,
    random: () => 0.5,
    heartbeatMs: 1000,
    backoff: { baseMs: 100, capMs: 1000, maxAttempts: 3 },
    checkpoint: { storage, intervalMs: 0 },
    ...options,
  });
  return { transport, clock, storage, client };
}

const collect = async (handle) => {
  const out = [];
  for await (const ev of handle) out.push(ev);
  return out;
};

test('start: the first connection carries the request, reconnects carry the stream id and last seq', async () => {
  const { transport, clock, client } = setup();
  const states = [];
  const h = client.start({ model: 'scripted', prompt: 'hi' }, { onState: (s) => states.push(s) });
  const all = collect(h);
  assert.equal(h.status, 'pending');
  let c = transport.last;
  assert.deepEqual(c.target, { request: { model: 'scripted', prompt: 'hi' }, after: 0 });
  c.sink.started({ id: 'st_1', status: 'running' });
  assert.equal(await h.ready, 'st_1');
  c.sink.open(OPEN);
  c.sink.event(tok(1, 'Hello'));
  c.sink.event(tok(2, ' world'));
  c.sink.end(new TransportError('reset'));
  assert.equal(h.state, 'reconnecting');
  assert.ok(c.closed);
  clock.advance(100);
  c = transport.last;
  assert.deepEqual(c.target, { stream: 'st_1', after: 2 });
  c.sink.open({ ...OPEN, last_seq: 2 });
  c.sink.event(tok(2, ' world')); // duplicate
  c.sink.event(tok(4, '!!', { from_seq: 3 })); // merged catch-up frame
  c.sink.event({ seq: 5, kind: 'done', finish_reason: 'stop', usage: null });
  const events = await all;
  assert.deepEqual(
    events.map((e) => `${e.kind}${e.seq ?? ''}`),
    ['open', 'token1', 'token2', 'open', 'token4', 'done5'],
  );
  assert.equal(h.text, 'Hello world!!');
  assert.equal(h.status, 'done');
  assert.equal(h.stats.tokens, 4);
  assert.deepEqual(states, ['connecting', 'connected', 'reconnecting', 'connecting', 'connected', 'closed']);
  assert.ok(c.closed, 'the connection is closed after the terminal event');
});

test('heartbeat: silence for two intervals reconnects (manual clock)', () => {
  const { transport, clock, client } = setup();
  const h = client.subscribe('st_1');
  const c = transport.last;
  c.sink.open(OPEN);
  clock.advance(1500);
  c.sink.bytes(); // a comment heartbeat
  clock.advance(1999);
  assert.equal(h.state, 'connected');
  assert.equal(transport.connections.length, 1);
  clock.advance(1);
  assert.equal(h.state, 'reconnecting');
  assert.ok(c.closed, 'the silent connection is dropped');
  clock.advance(100);
  assert.equal(transport.connections.length, 2);
  assert.equal(h.state, 'connecting');
  h.close();
});

test('gap: recovered:false reaches the app as a gap event (and StreamGapError with gapPolicy "error")', async () => {
  const { transport, client } = setup();
  const gaps = [];
  const h = client.subscribe('st_1', { after: 4, onGap: (g) => gaps.push(g) });
  const all = collect(h);
  transport.last.sink.open({ ...OPEN, recovered: false, first_seq: 9, last_seq: 12 });
  transport.last.sink.event({ seq: 9, kind: 'done', finish_reason: 'stop', usage: null });
  const events = await all;
  assert.deepEqual(events[1], { kind: 'gap', from_seq: 5, to_seq: 8, reason: 'not_recovered', epoch: 'e1' });
  assert.equal(gaps.length, 1);
  assert.deepEqual(h.gaps, gaps);

  const h2 = client.subscribe('st_2', { after: 4, gapPolicy: 'error' });
  const errors = [];
  h2.on('error', (e) => errors.push(e));
  const it = collect(h2);
  transport.last.sink.open({ ...OPEN, recovered: false, first_seq: 9 });
  await assert.rejects(it, StreamGapError);
  assert.ok(errors[0] instanceof StreamGapError);
  assert.equal(h2.status, 'error');
  assert.ok(transport.last.closed);
});

test('fatal HTTP errors end the handle at once; retryable ones back off then give up', async () => {
  const { transport, clock, client } = setup();
  const h = client.subscribe('st_x');
  transport.last.sink.end(new HTTPStatusError(404, 'not_found', 'unknown stream'));
  assert.equal(h.status, 'error');
  assert.equal(h.error.code, 'not_found');
  assert.equal(transport.connections.length, 1);
  await assert.rejects(collect(h), HTTPStatusError);

  const h2 = client.subscribe('st_y');
  for (let i = 0; i < 3; i++) {
    transport.last.sink.end(new HTTPStatusError(503, 'overloaded', ''));
    clock.advance(1000);
  }
  transport.last.sink.end(new HTTPStatusError(503, 'overloaded', ''));
  assert.equal(h2.status, 'error');
  assert.ok(h2.error instanceof ReconnectExhaustedError);
  assert.equal(h2.error.attempts, 3);
  assert.equal(h2.state, 'error');
});

test('the terminal error event is yielded and surfaces as StreamFailedError', async () => {
  const { transport, client } = setup();
  const errs = [];
  const h = client.subscribe('st_1', { onError: (e) => errs.push(e) });
  const all = collect(h);
  transport.last.sink.open(OPEN);
  transport.last.sink.event({ seq: 1, kind: 'error', code: 'model_crashed', message: 'boom' });
  const events = await all;
  assert.equal(events[1].kind, 'error');
  assert.equal(errs[0].name, 'StreamFailedError');
  assert.equal(errs[0].code, 'model_crashed');
  assert.equal(h.status, 'error');
  assert.equal((await h.done).status, 'error');
});

test('cancel() is a true stop: waits for the id, asks the transport, ends on the server\'s cancelled', async () => {
  const { transport, client } = setup();
  const h = client.start({ model: 'm', prompt: 'p' });
  const stopping = h.cancel();
  transport.last.sink.started({ id: 'st_9' });
  await stopping;
  assert.deepEqual(transport.cancelled, ['st_9']);
  transport.last.sink.open(OPEN);
  transport.last.sink.event({ seq: 1, kind: 'cancelled', reason: 'stopped' });
  assert.equal(h.status, 'cancelled');
});

test('cancel() ends locally when the cancelled event cannot arrive', async () => {
  const { transport, clock, client } = setup({ cancelTimeoutMs: 500 });
  const h = client.subscribe('st_1');
  transport.last.sink.end(new TransportError('down')); // reconnecting: nothing will arrive
  await h.cancel();
  clock.advance(500);
  assert.equal(h.status, 'cancelled');
  assert.equal(h.result.local, true);
});

test('AbortSignal: abort = stop', async () => {
  const { transport, client } = setup();
  const ac = new AbortController();
  const h = client.subscribe('st_1', { signal: ac.signal });
  ac.abort();
  await Promise.resolve();
  await Promise.resolve();
  assert.deepEqual(transport.cancelled, ['st_1']);

  const ac2 = new AbortController();
  ac2.abort();
  const h2 = client.start({ model: 'm' }, { signal: ac2.signal });
  assert.equal(h2.status, 'cancelled', 'aborted before start: nothing is sent');
  assert.equal(transport.connections.length, 1);
  h.close();
});

test('close() leaves: iterators end, no reconnect, no cancel', async () => {
  const { transport, clock, client } = setup();
  const h = client.subscribe('st_1');
  const all = collect(h);
  transport.last.sink.open(OPEN);
  h.close();
  assert.deepEqual((await all).map((e) => e.kind), ['open']);
  assert.equal(h.status, 'closed');
  assert.ok(transport.last.closed);
  transport.last.sink.end(new TransportError('late'));
  clock.advance(10_000);
  assert.equal(transport.connections.length, 1);
  assert.deepEqual(transport.cancelled, []);
});

test('a throwing app callback does not break the stream', () => {
  const { transport, client } = setup();
  const original = console.error;
  const reported = [];
  console.error = (e) => reported.push(e);
  try {
    const h = client.subscribe('st_1', {
      onToken: () => {
        throw new Error('app bug');
      },
    });
    transport.last.sink.open(OPEN);
    transport.last.sink.event(tok(1, 'a'));
    transport.last.sink.event(tok(2, 'b'));
    assert.equal(h.text, 'ab');
    assert.equal(h.state, 'connected');
    assert.equal(reported.length, 2);
  } finally {
    console.error = original;
  }
});

test('checkpoint: id, last seq and text are saved; a reload resumes after them; cleared at the end', () => {
  const { transport, storage, client } = setup();
  const h = client.start({ model: 'm' });
  transport.last.sink.started({ id: 'st_1' });
  transport.last.sink.open(OPEN);
  transport.last.sink.event(tok(1, 'Hel'));
  transport.last.sink.event(tok(2, 'lo'));
  const saved = JSON.parse(storage.getItem('tokenwire:stream'));
  assert.equal(saved.stream, 'st_1');
  assert.equal(saved.lastSeq, 2);
  assert.equal(saved.text, 'Hello');
  // "reload": a new client on the same storage
  const transport2 = new FakeTransport();
  const client2 = new TokenwireClient({ transport: transport2, clock: new ManualClock(), checkpoint: { storage } });
  const h2 = client2.resume();
  assert.deepEqual(transport2.last.target, { stream: 'st_1', after: 2 });
  assert.equal(h2.text, 'Hello');
  transport2.last.sink.open(OPEN);
  transport2.last.sink.event(tok(3, '!'));
  transport2.last.sink.event({ seq: 4, kind: 'done', finish_reason: 'stop', usage: null });
  assert.equal(h2.text, 'Hello!');
  assert.equal(h2.stats.ttftMs, null, 'no TTFT for a resumed stream');
  assert.equal(storage.getItem('tokenwire:stream'), null);
  assert.equal(client2.resume(), null);
  h.close();
});

test('checkpoint: writes are throttled, and the saved seq always matches the saved text', () => {
  const { transport, clock, storage, client } = setup({ checkpoint: { storage: null } });
  const h = client.subscribe('st_1', { checkpoint: { storage, key: 'k', intervalMs: 250 } });
  transport.last.sink.open(OPEN);
  const before = storage.writes;
  for (let i = 1; i <= 100; i++) transport.last.sink.event(tok(i, `${i},`));
  assert.ok(storage.writes - before <= 2, `writes: ${storage.writes - before}`);
  clock.advance(250);
  const saved = JSON.parse(storage.getItem('k'));
  assert.equal(saved.lastSeq, 100);
  assert.equal(saved.text.split(',').length - 1, 100);
  h.close();
});

test('checkpoint: no sessionStorage (node) is no checkpointing, not a crash', () => {
  const transport = new FakeTransport();
  const client = new TokenwireClient({ transport, clock: new ManualClock() });
  assert.equal(typeof globalThis.sessionStorage, 'undefined');
  const h = client.subscribe('st_1');
  transport.last.sink.open(OPEN);
  transport.last.sink.event(tok(1, 'x'));
  assert.equal(client.resume(), null);
  assert.equal(TokenwireClient.readCheckpoint(), null);
  h.close();
});

test('tensors are reassembled on the handle; truncation at stream end is reported', async () => {
  const { transport, client } = setup();
  const tensors = [];
  const h = client.subscribe('st_1', { onTensor: (t) => tensors.push(t) });
  const all = collect(h);
  const s = transport.last.sink;
  const bytes = new Uint8Array(new Float32Array([1, 2, 3]).buffer);
  s.open(OPEN);
  s.event({ seq: 1, kind: 'tensor.header', tensor_id: 'a', shape: [3], dtype: 'float32', nbytes: 12, chunk_bytes: 8, chunks: 2, meta: {} });
  s.event({ seq: 2, kind: 'tensor.chunk', tensor_id: 'a', index: 0, offset: 0, data: encodeBase64(bytes.subarray(0, 8)) });
  assert.deepEqual(h.tensorProgress('a'), { chunks: 2, chunksReceived: 1, nbytes: 12, bytesReceived: 8, fraction: 8 / 12 });
  s.event({ seq: 3, kind: 'tensor.chunk', tensor_id: 'a', index: 1, offset: 8, data: encodeBase64(bytes.subarray(8)) });
  s.event({ seq: 4, kind: 'tensor.end', tensor_id: 'a', checksum: `crc32:${crc32Hex(bytes)}` });
  s.event({ seq: 5, kind: 'tensor.header', tensor_id: 'b', shape: [1], dtype: 'int8', nbytes: 1, chunk_bytes: 1, chunks: 1, meta: {} });
  s.event({ seq: 6, kind: 'done', finish_reason: 'stop', usage: null });
  const kinds = (await all).map((e) => e.kind);
  assert.deepEqual(kinds, ['open', 'tensor.header', 'tensor.chunk', 'tensor.chunk', 'tensor.end', 'tensor', 'tensor.header', 'tensor.error', 'done']);
  assert.deepEqual([...tensors[0].array], [1, 2, 3]);
});

test('StreamStore: immutable snapshots for useSyncExternalStore', () => {
  const { transport, client } = setup();
  const store = new StreamStore();
  const seen = [];
  store.subscribe(() => seen.push(store.getSnapshot()));
  const initial = store.getSnapshot();
  assert.equal(store.getSnapshot(), initial, 'stable when nothing changed');
  store.attach(client.subscribe('st_1'));
  transport.last.sink.open(OPEN);
  transport.last.sink.event({ seq: 1, kind: 'progress', stage: 'load', progress: 0.5 });
  transport.last.sink.event(tok(2, 'hi'));
  const a = store.getSnapshot();
  assert.equal(a.text, 'hi');
  assert.equal(a.progress.stage, 'load');
  assert.equal(a.status, 'running');
  assert.equal(a.state, 'connected');
  transport.last.sink.event({ seq: 3, kind: 'done', finish_reason: 'stop', usage: null });
  const b = store.getSnapshot();
  assert.notEqual(a, b);
  assert.equal(a.text, 'hi');
  assert.equal(b.status, 'done');
  assert.equal(b.result.kind, 'done');
  assert.ok(seen.length >= 4);
  assert.equal(store.getServerSnapshot().status, 'idle');
});

test('async iterator backpressure: a slow consumer pauses the reader', async () => {
  const { transport, client } = setup({ highWaterMark: 4 });
  const h = client.subscribe('st_1');
  const it = h[Symbol.asyncIterator]();
  const s = transport.last.sink;
  s.open(OPEN);
  for (let i = 1; i <= 5; i++) s.event(tok(i, 'x'));
  const pause = s.wait();
  assert.ok(pause instanceof Promise, 'over the high-water mark');
  let resumed = false;
  pause.then(() => (resumed = true));
  for (let i = 0; i < 4; i++) await it.next();
  await Promise.resolve();
  assert.ok(resumed);
  assert.equal(s.wait(), null);
  h.close();
});

test('resuming after the last event of a finished stream ends at once instead of reconnecting', async () => {
  const { transport, client } = setup();
  const h = client.subscribe('st_1', { after: 6 });
  transport.last.sink.open({ ...OPEN, last_seq: 6, status: 'done' });
  assert.equal(h.status, 'done');
  assert.deepEqual(h.result, { kind: 'done', seq: 6, local: true, finish_reason: 'unknown', usage: null });
  assert.ok(transport.last.closed);
  assert.equal(transport.connections.length, 1);
});
