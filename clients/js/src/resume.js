/**
 * The reconnect/resume state machine: pure code, no I/O, no timers.
 *
 * The driver (connection.js) feeds it what happened, with the time, and does
 * what it answers:
 *
 *   connect(now)           -> {after}            open a subscription after seq
 *   opened(frame, now)     -> [gap?]             the `open` control frame
 *   received(now)                                any bytes (heartbeat liveness)
 *   event(ev, now)         -> [gap?, ev?]        a sequenced event (deduplicated)
 *   retry(ms)                                    SSE `retry:` field
 *   disconnected(err, now) -> {wait} | {fail} | null
 *   expired(now)           -> true when nothing was heard for 2 heartbeats
 *
 * States: idle -> connecting -> connected -> (reconnecting -> connecting)* ->
 * closed (terminal event, or close()) | error (gave up, or a fatal error).
 */

import { ReconnectExhaustedError, ProtocolError } from './errors.js';

export const State = Object.freeze({
  IDLE: 'idle',
  CONNECTING: 'connecting',
  CONNECTED: 'connected',
  RECONNECTING: 'reconnecting',
  ERROR: 'error',
  CLOSED: 'closed',
});

export const TERMINAL_KINDS = Object.freeze(['done', 'error', 'cancelled']);

const ALLOWED = {
  idle: ['connecting', 'closed', 'error'],
  connecting: ['connected', 'reconnecting', 'closed', 'error'],
  connected: ['reconnecting', 'closed', 'error'],
  reconnecting: ['connecting', 'closed', 'error'],
  closed: [],
  error: [],
};

export const DEFAULT_BACKOFF = Object.freeze({ baseMs: 500, capMs: 30_000, maxAttempts: 10 });

/**
 * "Full jitter" backoff (AWS Architecture Blog, "Exponential Backoff And
 * Jitter"): uniform in [0, min(cap, base * 2^(attempt-1))]. Spreading
 * reconnects over the whole window avoids a thundering herd after a restart.
 */
export function backoffDelay(attempt, { baseMs = DEFAULT_BACKOFF.baseMs, capMs = DEFAULT_BACKOFF.capMs } = {}, random = Math.random) {
  const window = Math.min(capMs, baseMs * 2 ** Math.max(0, attempt - 1));
  return Math.floor(random() * window);
}

export class ResumeMachine {
  /**
   * @param {object} [options]
   * @param {number} [options.after] resume after this seq (0 = from the start)
   * @param {{baseMs?: number, capMs?: number, maxAttempts?: number}} [options.backoff]
   * @param {number} [options.heartbeatMs] the server's heartbeat interval
   * @param {() => number} [options.random] in [0, 1); injectable for tests
   * @param {(state: string, prev: string) => void} [options.onState]
   */
  constructor({ after = 0, backoff = {}, heartbeatMs = 15_000, random = Math.random, onState } = {}) {
    this.backoff = { ...DEFAULT_BACKOFF, ...backoff };
    this.heartbeatMs = heartbeatMs;
    this.random = random;
    this.onState = onState;
    this.state = State.IDLE;
    this.lastSeq = after;
    this.attempt = 0; // failed attempts since the last successful open
    this.epoch = null;
    this.retryMs = null; // the server's SSE `retry:` hint
    this.terminal = null;
    this.duplicates = 0;
    this.lastActivity = 0;
    this._expected = after + 1; // the next seq not yet seen nor reported lost
  }

  get done() {
    return this.state === State.CLOSED || this.state === State.ERROR;
  }

  connect(now) {
    this._to(State.CONNECTING);
    this.lastActivity = now;
    return { after: this.lastSeq };
  }

  /** The `open` control frame. A `recovered: false` frame becomes a `gap` event. */
  opened(frame, now) {
    if (this.done) return [];
    this.lastActivity = now;
    if (this.state === State.CONNECTING) this._to(State.CONNECTED);
    this.attempt = 0;
    this.epoch = frame.epoch ?? this.epoch;
    if (typeof frame.heartbeat_ms === 'number' && frame.heartbeat_ms > 0) this.heartbeatMs = frame.heartbeat_ms;
    if (frame.recovered !== false) return [];
    // The events after lastSeq are not all retained; the oldest one kept is first_seq.
    const first = typeof frame.first_seq === 'number' && frame.first_seq > this._expected ? frame.first_seq : null;
    const gap = {
      kind: 'gap',
      from_seq: this._expected,
      to_seq: first === null ? null : first - 1,
      reason: 'not_recovered',
      epoch: frame.epoch ?? null,
    };
    if (first !== null) this._expected = first;
    return [gap];
  }

  received(now) {
    this.lastActivity = now;
  }

  retry(ms) {
    if (Number.isFinite(ms) && ms >= 0) this.retryMs = ms;
  }

  /**
   * A sequenced event. Duplicates (seq at or below the last seen) are dropped;
   * a merged frame covers from_seq..seq and moves lastSeq to seq. A jump past
   * the next expected seq that the server did not announce is reported as a gap.
   */
  event(ev, now) {
    if (this.done) return [];
    this.lastActivity = now;
    if (this.state === State.CONNECTING) this._to(State.CONNECTED);
    const seq = ev.seq;
    if (!Number.isSafeInteger(seq) || seq < 1) {
      throw new ProtocolError(`event without a valid seq: ${JSON.stringify(ev.kind)} seq=${seq}`);
    }
    if (seq <= this.lastSeq) {
      this.duplicates += 1;
      return [];
    }
    const out = [];
    const first = typeof ev.from_seq === 'number' && ev.from_seq <= seq ? ev.from_seq : seq;
    if (first > this._expected) {
      out.push({ kind: 'gap', from_seq: this._expected, to_seq: first - 1, reason: 'seq_jump', epoch: this.epoch });
    }
    this.lastSeq = seq;
    this._expected = seq + 1;
    out.push(ev);
    if (TERMINAL_KINDS.includes(ev.kind)) {
      this.terminal = ev;
      this._to(State.CLOSED);
    }
    return out;
  }

  /**
   * The connection ended (err null = clean end of stream). Returns what to do:
   * `{wait: ms}` then connect() again, `{fail: error}`, or null when already done.
   */
  disconnected(err) {
    if (this.done || this.state === State.IDLE) return null;
    if (err && err.retryable === false) {
      this._to(State.ERROR);
      return { fail: err };
    }
    this.attempt += 1;
    if (this.attempt > this.backoff.maxAttempts) {
      this._to(State.ERROR);
      return { fail: new ReconnectExhaustedError(this.attempt - 1, this.lastSeq, err || undefined) };
    }
    this._to(State.RECONNECTING);
    const baseMs = this.retryMs ?? this.backoff.baseMs;
    return { wait: backoffDelay(this.attempt, { baseMs, capMs: this.backoff.capMs }, this.random) };
  }

  /** When the heartbeat deadline passes, or null when no connection is expected to talk. */
  deadline() {
    if (this.state !== State.CONNECTING && this.state !== State.CONNECTED) return null;
    return this.lastActivity + 2 * this.heartbeatMs;
  }

  expired(now) {
    const d = this.deadline();
    return d !== null && now >= d;
  }

  /** Leave (or fail from outside): no more connects. */
  close() {
    if (!this.done) this._to(State.CLOSED);
  }

  fail() {
    if (!this.done) this._to(State.ERROR);
  }

  _to(next) {
    const prev = this.state;
    if (prev === next) return;
    if (!ALLOWED[prev].includes(next)) {
      throw new Error(`invalid transition ${prev} -> ${next}`);
    }
    this.state = next;
    if (this.onState) this.onState(next, prev);
  }
}
