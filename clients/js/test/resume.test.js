import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ResumeMachine, backoffDelay, State } from '../src/resume.js';
import { ReconnectExhaustedError, HTTPStatusError, HeartbeatTimeoutError, TransportError, ProtocolError } from '../src/errors.js';

const OPEN = { stream: 'st_1', epoch: 'e1', recovered: true, first_seq: 1, last_seq: 0, status: 'running' };
const tok = (seq, text = `t${seq}`, extra = {}) => ({ seq, kind: 'token', text, ...extra });

function machine(opts = {}) {
  const states = [];
  const m = new ResumeMachine({ random: () => 0.5, ...opts, onState: (s, prev) => states.push(`${prev}->${s}`) });
  return { m, states };
}

test('states: idle -> connecting -> connected -> reconnecting -> connecting -> connected -> closed', () => {
  const { m, states } = machine();
  assert.equal(m.state, State.IDLE);
  assert.deepEqual(m.connect(0), { after: 0 });
  m.opened(OPEN, 1);
  m.event(tok(1), 2);
  const action = m.disconnected(new TransportError('reset'));
  assert.ok(action.wait >= 0);
  assert.deepEqual(m.connect(10), { after: 1 });
  m.opened(OPEN, 11);
  m.event({ seq: 2, kind: 'done', finish_reason: 'stop', usage: null }, 12);
  assert.deepEqual(states, [
    'idle->connecting',
    'connecting->connected',
    'connected->reconnecting',
    'reconnecting->connecting',
    'connecting->connected',
    'connected->closed',
  ]);
  assert.equal(m.disconnected(null), null, 'a clean end after the terminal event is no reconnect');
  assert.equal(m.terminal.kind, 'done');
});

test('misuse is a clear error: connect while connected', () => {
  const { m } = machine();
  m.connect(0);
  m.opened(OPEN, 0);
  assert.throws(() => m.connect(1), /invalid transition connected -> connecting/);
});

test('every terminal kind ends the machine', () => {
  for (const kind of ['done', 'error', 'cancelled']) {
    const { m } = machine();
    m.connect(0);
    m.opened(OPEN, 0);
    assert.equal(m.event({ seq: 1, kind }, 0).length, 1);
    assert.equal(m.state, State.CLOSED);
    assert.deepEqual(m.event(tok(2), 0), [], 'nothing after the end');
  }
});

test('dedup: seq at or below the last seen is dropped', () => {
  const { m } = machine();
  m.connect(0);
  m.opened(OPEN, 0);
  assert.equal(m.event(tok(1), 0).length, 1);
  assert.equal(m.event(tok(2), 0).length, 1);
  assert.deepEqual(m.event(tok(2), 0), []);
  assert.deepEqual(m.event(tok(1), 0), []);
  assert.equal(m.duplicates, 2);
  assert.equal(m.lastSeq, 2);
});

test('dedup: a merged frame covers from_seq..seq', () => {
  const { m } = machine({ after: 2 });
  m.connect(0);
  m.opened(OPEN, 0);
  const merged = tok(6, 't3t4t5t6', { from_seq: 3 });
  assert.deepEqual(m.event(merged, 0), [merged]);
  assert.equal(m.lastSeq, 6);
  // Replays of anything inside the merged range are duplicates.
  for (const seq of [3, 4, 5, 6]) assert.deepEqual(m.event(tok(seq), 0), []);
  assert.deepEqual(m.event(tok(5, 'x', { from_seq: 4 }), 0), []);
  // A merged frame that reaches past lastSeq is new content.
  const next = tok(8, 't7t8', { from_seq: 7 });
  assert.deepEqual(m.event(next, 0), [next]);
  assert.equal(m.lastSeq, 8);
});

test('a coalesced progress frame with from_seq moves past its range without a gap', () => {
  const { m } = machine();
  m.connect(0);
  m.opened(OPEN, 0);
  const out = m.event({ seq: 4, kind: 'progress', stage: 'load', progress: 0.5, from_seq: 1 }, 0);
  assert.equal(out.length, 1);
  assert.equal(out[0].kind, 'progress');
});

test('gap: open.recovered === false is an explicit gap event, never silent', () => {
  const { m } = machine({ after: 3 });
  m.connect(0);
  const out = m.opened({ ...OPEN, recovered: false, first_seq: 10, last_seq: 20 }, 0);
  assert.deepEqual(out, [{ kind: 'gap', from_seq: 4, to_seq: 9, reason: 'not_recovered', epoch: 'e1' }]);
  // The first retained event follows without a second gap.
  assert.deepEqual(m.event(tok(10), 0), [tok(10)]);
});

test('gap: recovered false without a usable first_seq still reports the loss', () => {
  const { m } = machine({ after: 5 });
  m.connect(0);
  assert.deepEqual(m.opened({ ...OPEN, recovered: false, first_seq: 2 }, 0), [
    { kind: 'gap', from_seq: 6, to_seq: null, reason: 'not_recovered', epoch: 'e1' },
  ]);
});

test('gap: an unannounced jump in seq is reported too', () => {
  const { m } = machine();
  m.connect(0);
  m.opened(OPEN, 0);
  m.event(tok(1), 0);
  const out = m.event(tok(5), 0);
  assert.equal(out.length, 2);
  assert.deepEqual(out[0], { kind: 'gap', from_seq: 2, to_seq: 4, reason: 'seq_jump', epoch: 'e1' });
  assert.equal(out[1].seq, 5);
});

test('an event without a valid seq is a protocol error', () => {
  const { m } = machine();
  m.connect(0);
  m.opened(OPEN, 0);
  assert.throws(() => m.event({ kind: 'token', text: 'x' }, 0), ProtocolError);
  assert.throws(() => m.event({ seq: 1.5, kind: 'token' }, 0), ProtocolError);
});

test('backoff: full jitter stays within [0, min(cap, base * 2^(n-1))]', () => {
  const opts = { baseMs: 100, capMs: 1000 };
  for (let attempt = 1; attempt <= 8; attempt++) {
    const window = Math.min(1000, 100 * 2 ** (attempt - 1));
    assert.equal(backoffDelay(attempt, opts, () => 0), 0);
    assert.equal(backoffDelay(attempt, opts, () => 0.999999), Math.floor(0.999999 * window));
    assert.ok(backoffDelay(attempt, opts, () => 0.999999) < window);
  }
});

test('backoff: jitter spreads delays over the whole window', () => {
  let seed = 42;
  const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31); // deterministic LCG
  const delays = Array.from({ length: 2000 }, () => backoffDelay(4, { baseMs: 100, capMs: 10_000 }, random));
  const window = 800;
  assert.ok(Math.min(...delays) >= 0 && Math.max(...delays) < window);
  const buckets = new Array(8).fill(0);
  for (const d of delays) buckets[Math.floor(d / 100)]++;
  for (const b of buckets) assert.ok(b > 150 && b < 350, `bucket counts ${buckets}`);
});

test('backoff: delays grow per attempt, reset on a successful open, and give up after maxAttempts', () => {
  const { m } = machine({ backoff: { baseMs: 100, capMs: 250, maxAttempts: 3 }, random: () => 0.999 });
  m.connect(0);
  const waits = [];
  for (let i = 0; i < 3; i++) {
    waits.push(m.disconnected(new TransportError('x')).wait);
    m.connect(0);
  }
  assert.deepEqual(waits, [99, 199, 249]);
  const fail = m.disconnected(new TransportError('down'));
  assert.ok(fail.fail instanceof ReconnectExhaustedError);
  assert.equal(fail.fail.attempts, 3);
  assert.match(fail.fail.message, /gave up after 3 reconnect attempts at seq 0: down/);
  assert.equal(m.state, State.ERROR);

  const { m: m2 } = machine({ backoff: { baseMs: 100, capMs: 10_000, maxAttempts: 3 }, random: () => 0.999 });
  m2.connect(0);
  m2.disconnected(null);
  m2.connect(0);
  m2.disconnected(null);
  m2.connect(0);
  m2.opened(OPEN, 0);
  assert.equal(m2.attempt, 0);
  assert.equal(m2.disconnected(null).wait, 99, 'back to the first window after an open');
});

test('backoff honours the SSE retry: field as its base', () => {
  const { m } = machine({ backoff: { baseMs: 100, capMs: 60_000 }, random: () => 0.999 });
  m.connect(0);
  m.retry(2000);
  assert.equal(m.disconnected(null).wait, 1998);
  m.connect(0);
  assert.equal(m.disconnected(null).wait, 3996);
});

test('a non-retryable error fails at once', () => {
  const { m } = machine();
  m.connect(0);
  const err = new HTTPStatusError(404, 'not_found', 'unknown stream');
  assert.deepEqual(m.disconnected(err), { fail: err });
  assert.equal(m.state, State.ERROR);
  const { m: m2 } = machine();
  m2.connect(0);
  assert.ok(m2.disconnected(new HTTPStatusError(503, 'overloaded', '')).wait >= 0, '503 is retried');
});

test('heartbeat: nothing heard for two intervals expires the connection (fake clock)', () => {
  const { m } = machine({ heartbeatMs: 1000 });
  m.connect(0);
  assert.equal(m.deadline(), 2000, 'connecting counts too');
  m.opened(OPEN, 500);
  assert.equal(m.expired(2400), false);
  m.received(2400);
  assert.equal(m.expired(4399), false);
  assert.equal(m.expired(4400), true);
  const action = m.disconnected(new HeartbeatTimeoutError(2000));
  assert.ok('wait' in action);
  assert.equal(m.deadline(), null, 'no deadline while waiting to reconnect');
});

test('heartbeat: the open frame may announce the interval', () => {
  const { m } = machine({ heartbeatMs: 15_000 });
  m.connect(0);
  m.opened({ ...OPEN, heartbeat_ms: 100 }, 0);
  assert.equal(m.deadline(), 200);
});

test('close() from any live state; nothing happens after', () => {
  const { m } = machine();
  m.connect(0);
  m.close();
  assert.equal(m.state, State.CLOSED);
  assert.equal(m.disconnected(new TransportError('x')), null);
  assert.deepEqual(m.opened(OPEN, 0), []);
});
