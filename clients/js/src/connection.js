/**
 * The driver of one resumable subscription: runs the ResumeMachine against a
 * transport and a clock. It connects, forwards what arrives through the
 * machine (which deduplicates and finds gaps), keeps the heartbeat deadline,
 * and waits out the backoff before reconnecting.
 */

import { ResumeMachine } from './resume.js';
import { HeartbeatTimeoutError, TokenwireError } from './errors.js';

export class Connection {
  /**
   * @param {object} o
   * @param {object} o.transport see transports/index.js
   * @param {object} o.clock see clock.js
   * @param {string} [o.streamId] subscribe to this stream...
   * @param {object} [o.request] ...or start one with this POST /v1/streams body
   * @param {number} [o.after] resume after this seq
   * @param {number|null} [o.coalesceMs] the server's flush window for the subscription
   * @param {object} [o.machine] ResumeMachine options (backoff, heartbeatMs, random)
   * @param {(info: object) => void} o.onStarted the stream was created
   * @param {(ev: object) => void} o.onEvent open, gap and sequenced events, in order
   * @param {(state: string, prev: string) => void} o.onState
   * @param {(err: Error) => void} o.onFail no more reconnects
   * @param {() => Promise<void> | null} [o.wait] backpressure from the consumer
   */
  constructor(o) {
    this.transport = o.transport;
    this.clock = o.clock;
    this.streamId = o.streamId ?? null;
    this.request = o.request ?? null;
    this.coalesceMs = o.coalesceMs ?? null;
    this._on = o;
    this.machine = new ResumeMachine({ ...o.machine, after: o.after ?? 0, onState: o.onState });
    this._gen = 0;
    this._conn = null;
    this._retryTimer = null;
    this._beatTimer = null;
  }

  get state() {
    return this.machine.state;
  }

  get lastSeq() {
    return this.machine.lastSeq;
  }

  start() {
    if (!this.streamId && !this.request) throw new TokenwireError('a connection needs a stream id or a start request');
    this._connect();
  }

  /** Leave: close the subscription, no reconnects. */
  close() {
    this.machine.close();
    this._teardown();
  }

  /** Fail from outside (e.g. a gap the app does not accept). */
  fail() {
    this.machine.fail();
    this._teardown();
  }

  _connect() {
    this._retryTimer = null;
    const gen = ++this._gen;
    const { after } = this.machine.connect(this.clock.now());
    const target = this.streamId ? { stream: this.streamId, after } : { request: this.request, after: 0 };
    if (this.coalesceMs != null) target.coalesceMs = this.coalesceMs;
    this._conn = this.transport.connect(target, this._sink(gen));
    this._armHeartbeat();
  }

  _sink(gen) {
    const live = () => gen === this._gen && !this.machine.done;
    const now = () => this.clock.now();
    return {
      started: (info) => {
        if (!live()) return;
        this.streamId = info.id;
        this._on.onStarted(info);
      },
      bytes: () => {
        if (live()) this.machine.received(now());
      },
      heartbeat: () => {
        if (live()) this.machine.received(now());
      },
      retry: (ms) => {
        if (live()) this.machine.retry(ms);
      },
      open: (frame) => {
        if (!live()) return;
        const out = this.machine.opened(frame, now());
        this._on.onEvent({ ...frame, kind: 'open' });
        this._emit(out, gen);
      },
      event: (ev) => {
        if (!live()) return;
        const out = this.machine.event(ev, now());
        this._emit(out, gen);
        if (this.machine.done) this._teardown();
      },
      end: (err) => {
        if (gen !== this._gen) return;
        this._lost(err);
      },
      wait: () => (this._on.wait ? this._on.wait() : null),
    };
  }

  _emit(out, gen) {
    for (const ev of out) {
      if (gen !== this._gen) return; // the consumer closed or failed us mid-batch
      this._on.onEvent(ev);
    }
  }

  // The connection of the current generation is over: back off, or give up.
  _lost(err) {
    this._gen++;
    const conn = this._conn;
    this._conn = null;
    if (conn) conn.close();
    this._clearBeat();
    const action = this.machine.disconnected(err);
    if (!action) return;
    if (action.fail) {
      this._teardown();
      this._on.onFail(action.fail);
    } else {
      this._retryTimer = this.clock.setTimeout(() => this._connect(), action.wait);
    }
  }

  _armHeartbeat() {
    this._clearBeat();
    if (this.transport.observesHeartbeats === false) return;
    const deadline = this.machine.deadline();
    if (deadline === null) return;
    this._beatTimer = this.clock.setTimeout(() => this._checkHeartbeat(), Math.max(0, deadline - this.clock.now()));
  }

  _checkHeartbeat() {
    this._beatTimer = null;
    const now = this.clock.now();
    // A consumer that holds the reader back is not a silent server.
    if (this._on.wait && this._on.wait()) this.machine.received(now);
    if (this.machine.expired(now)) {
      this._lost(new HeartbeatTimeoutError(now - this.machine.lastActivity));
      return;
    }
    this._armHeartbeat();
  }

  _clearBeat() {
    if (this._beatTimer !== null) this.clock.clearTimeout(this._beatTimer);
    this._beatTimer = null;
  }

  _teardown() {
    this._gen++;
    this._clearBeat();
    if (this._retryTimer !== null) this.clock.clearTimeout(this._retryTimer);
    this._retryTimer = null;
    const conn = this._conn;
    this._conn = null;
    if (conn) conn.close();
  }
}
