/**
 * StreamHandle: one stream as the app sees it. It accumulates `text` and
 * `stats`, reassembles tensors, keeps the checkpoint, and hands every event to
 * listeners (`on`, option callbacks) and to async iterators.
 *
 * Events the app sees, in order: `open` (each subscription), `gap` (history
 * lost: never silent), the sequenced events, `tensor` / `tensor.error` after
 * a tensor's last frame, and exactly one terminal event (`done`, `error`,
 * `cancelled`), unless the client itself fails (then `on('error')` and the
 * iterators throw) or the app leaves with close().
 */

import { Connection } from './connection.js';
import { Checkpoint, DEFAULT_KEY } from './checkpoint.js';
import { TensorAssembler } from './tensor.js';
import { StreamGapError, HTTPStatusError, StreamFailedError, TensorError, TokenwireError } from './errors.js';
import { TERMINAL_KINDS } from './resume.js';
import { EventQueues } from './event-queue.js';

const report = typeof globalThis.reportError === 'function' ? (e) => globalThis.reportError(e) : (e) => console.error(e);

// Option callbacks -> (listener name, how the listener calls them).
const CALLBACKS = {
  onEvent: ['event', (cb) => (ev) => cb(ev)],
  onToken: ['token', (cb) => (ev) => cb(ev.text, ev)],
  onProgress: ['progress', (cb) => (ev) => cb(ev)],
  onOpen: ['open', (cb) => (ev) => cb(ev)],
  onGap: ['gap', (cb) => (ev) => cb(ev)],
  onTensor: ['tensor', (cb) => (ev) => cb(ev.tensor, ev)],
  onDone: ['done', (cb) => (ev) => cb(ev)],
  onError: ['error', (cb) => (err) => cb(err)],
  onState: ['state', (cb) => (s, prev) => cb(s, prev)],
  onEnd: ['end', (cb) => (result) => cb(result)],
};

export class StreamHandle {
  /**
   * Made by TokenwireClient.start / subscribe / resume; see tokenwire.d.ts
   * for the options.
   */
  constructor(client, o) {
    this.client = client;
    this.id = o.streamId ?? null;
    this.status = 'pending';
    this.text = o.text ?? '';
    this.lastSeq = o.after ?? 0;
    this.epoch = null;
    this.error = null;
    this.result = null;
    this.gaps = [];
    this.resumed = Boolean(o.resumed) || (o.after ?? 0) > 0;
    this._clock = client.clock;
    this._t0 = this._clock.now();
    this._firstTokenAt = null;
    this._firstTokens = 0;
    this.stats = { ttftMs: null, tokens: 0, tokensPerSec: null, elapsedMs: 0, server: null };
    this._gapPolicy = o.gapPolicy ?? client.options.gapPolicy ?? 'event';
    this._listeners = new Map();
    this._queues = new EventQueues({
      highWaterMark: o.highWaterMark ?? client.options.highWaterMark,
      maxQueue: o.maxQueue ?? client.options.maxQueue,
    });
    this._finished = false;
    this._cancelling = null;
    this._cancelTimer = null;
    this._idWaiters = [];
    this._assembler = (o.tensors ?? client.options.tensors) === false ? null : new TensorAssembler(o.tensorOptions ?? client.options.tensorOptions);
    for (const [name, [event, wrap]] of Object.entries(CALLBACKS)) if (typeof o[name] === 'function') this.on(event, wrap(o[name]));

    this._checkpoint = makeCheckpoint(o.checkpoint ?? client.options.checkpoint, client, () => ({
      stream: this.id,
      lastSeq: this.lastSeq,
      text: this.text,
      epoch: this.epoch,
    }));

    this._conn = new Connection({
      transport: client.transport,
      clock: this._clock,
      streamId: this.id,
      request: o.request ?? null,
      after: this.lastSeq,
      coalesceMs: o.coalesceMs ?? null,
      machine: client.machineOptions,
      onStarted: (info) => this._started(info),
      onEvent: (ev) => this._deliver(ev),
      onState: (s, prev) => this._emit('state', s, prev),
      onFail: (err) => this._fail(err),
      wait: () => this._queues.wait(),
    });

    this._signal = o.signal ?? null;
    this._onAbort = () => this.cancel('aborted');
    if (this._signal && this._signal.aborted && !this.id) {
      // Aborted before anything was sent: start nothing.
      this._endLocal({ kind: 'cancelled', reason: 'aborted', local: true });
      return;
    }
    if (this._signal) this._signal.addEventListener('abort', this._onAbort, { once: true });
    this._conn.start();
    if (this.id) this._checkpoint.touch();
    if (this._signal && this._signal.aborted) this.cancel('aborted');
  }

  /** Connection state: idle, connecting, connected, reconnecting, error, closed. */
  get state() {
    return this._conn.state;
  }

  get finished() {
    return this._finished;
  }

  /** Resolves with the stream id once known (at once for subscribe); rejects if the start failed. */
  get ready() {
    if (this.id) return Promise.resolve(this.id);
    if (this._finished) return Promise.reject(this.error ?? new TokenwireError('the stream ended before it started'));
    return new Promise((resolve, reject) => this._idWaiters.push({ resolve, reject }));
  }

  /** Resolves when the handle ends, for any reason (never rejects): `{status, text, event, error, lastSeq, stats}`. */
  get done() {
    if (this._finished) return Promise.resolve(this._result());
    return new Promise((resolve) => this.on('end', resolve));
  }

  /**
   * Listen: an event kind ('token', 'progress', 'metrics', 'data', 'tensor.header',
   * 'tensor.chunk', 'tensor.end', 'done', 'cancelled', 'open', 'gap', 'tensor',
   * 'tensor.error'), 'event' (all of them), 'error' (an Error: the stream's
   * terminal error event as StreamFailedError, or a client failure), 'state', 'end'.
   * Returns the function that removes the listener.
   */
  on(name, cb) {
    let set = this._listeners.get(name);
    if (!set) this._listeners.set(name, (set = new Set()));
    set.add(cb);
    return () => this.off(name, cb);
  }

  off(name, cb) {
    const set = this._listeners.get(name);
    if (set) set.delete(cb);
  }

  /**
   * Stop the stream for real (HTTP DELETE or WS `cancel`). The server's
   * `cancelled` event ends the handle; if it cannot arrive (stream gone,
   * connection down) the handle ends with a local `cancelled` after
   * cancelTimeoutMs.
   */
  cancel(reason = 'stopped') {
    if (this._finished) return Promise.resolve();
    if (this._cancelling) return this._cancelling;
    this._cancelling = (async () => {
      let id = this.id;
      if (!id) {
        try {
          id = await this.ready;
        } catch {
          return; // the start failed: nothing to stop
        }
      }
      if (this._finished) return;
      const localEnd = () => this._endLocal({ kind: 'cancelled', reason, local: true });
      this._cancelTimer = this._clock.setTimeout(localEnd, this.client.options.cancelTimeoutMs ?? 5000);
      try {
        await this.client.transport.cancel(id);
      } catch (err) {
        if (err instanceof HTTPStatusError && err.status === 404) localEnd();
        else report(err);
      }
    })();
    return this._cancelling;
  }

  /** Leave: stop listening. The stream keeps running for the server's grace period. */
  close() {
    if (this._finished) return;
    this._conn.close();
    this._checkpoint.flush();
    this._finish('closed');
  }

  [Symbol.asyncIterator]() {
    return this._queues.iterator();
  }

  // -- from the connection -------------------------------------------------

  _started(info) {
    this.id = info.id;
    this._emitIdWaiters(null);
    this._checkpoint.touch();
  }

  _deliver(ev) {
    if (this._finished) return;
    const kind = ev.kind;
    const now = this._clock.now();
    if (kind === 'open') {
      this.epoch = ev.epoch ?? this.epoch;
      if (this.status === 'pending') this.status = 'running';
      if (TERMINAL_KINDS.includes(ev.status) && ev.last_seq <= this.lastSeq && ev.recovered !== false) {
        // Resumed after the stream's last event: nothing more will come, and
        // the terminal event itself is behind us. End instead of reconnecting.
        this._dispatch(ev);
        this._endLocal(terminalFromOpen(ev));
        return;
      }
    } else if (kind === 'gap') {
      this.gaps.push(ev);
      if (this._gapPolicy === 'error') {
        this._dispatch(ev);
        this._conn.fail();
        this._fail(new StreamGapError(ev.from_seq, ev.to_seq, ev.reason));
        return;
      }
    } else if (kind === 'token') {
      this.text += ev.text ?? '';
      this._countTokens(ev, now);
    } else if (kind === 'metrics') {
      const { seq, kind: _k, ...server } = ev;
      this.stats = { ...this.stats, server };
    }
    if (typeof ev.seq === 'number' && kind !== 'gap') this.lastSeq = ev.seq;
    if (this.status === 'pending' && ev.seq) this.status = 'running';

    if (TERMINAL_KINDS.includes(kind)) {
      this._truncateTensors(ev.seq);
      this.result = ev;
      this._tick(now);
      this._dispatch(ev);
      if (kind === 'error') {
        this.error = new StreamFailedError(ev);
        this._emit('error', this.error);
      }
      // A checkpoint of a finished stream is of no use to a reload.
      this._checkpoint.clear();
      this._finish(kind);
      return;
    }
    // Assemble first, so listeners of a chunk see the progress it made.
    const assembled = this._assembler && kind.startsWith('tensor.') ? this._assemble(ev) : null;
    this._dispatch(ev);
    if (assembled) this._dispatch(assembled);
    if (ev.seq) this._checkpoint.touch();
  }

  _fail(err) {
    if (this._finished) return;
    this.error = err;
    this._emit('error', err);
    this._emitIdWaiters(err);
    if (err instanceof HTTPStatusError && err.status === 404) this._checkpoint.clear();
    else this._checkpoint.flush();
    this._finish('error', err);
  }

  // -- internals ------------------------------------------------------------

  // The `tensor` or `tensor.error` event a tensor frame leads to, if any.
  _assemble(ev) {
    try {
      const tensor = this._assembler.push(ev);
      return tensor ? { kind: 'tensor', seq: ev.seq, tensor_id: ev.tensor_id, tensor } : null;
    } catch (err) {
      if (!(err instanceof TensorError)) throw err;
      return { kind: 'tensor.error', seq: ev.seq, tensor_id: ev.tensor_id, error: err };
    }
  }

  _truncateTensors(seq) {
    if (!this._assembler) return;
    for (const err of this._assembler.finish()) {
      this._dispatch({ kind: 'tensor.error', seq, tensor_id: err.tensorId, error: err });
    }
  }

  /** Tensor reassembly progress for a tensor in flight (null when unknown). */
  tensorProgress(tensorId) {
    return this._assembler ? this._assembler.progress(tensorId) : null;
  }

  _countTokens(ev, now) {
    // A merged catch-up frame stands for from_seq..seq tokens.
    const n = typeof ev.from_seq === 'number' && ev.from_seq <= ev.seq ? ev.seq - ev.from_seq + 1 : 1;
    const s = { ...this.stats, tokens: this.stats.tokens + n };
    if (this._firstTokenAt === null) {
      this._firstTokenAt = now;
      this._firstTokens = n;
      // Time to first token only means something for a stream this handle started.
      if (!this.resumed) s.ttftMs = now - this._t0;
    } else if (now > this._firstTokenAt) {
      s.tokensPerSec = ((s.tokens - this._firstTokens) * 1000) / (now - this._firstTokenAt);
    }
    s.elapsedMs = now - this._t0;
    this.stats = s;
  }

  _tick(now) {
    this.stats = { ...this.stats, elapsedMs: now - this._t0 };
  }

  _dispatch(ev) {
    // 'error' listeners get Error objects (StreamFailedError carries the event), see on().
    if (ev.kind !== 'error') this._emit(ev.kind, ev);
    this._emit('event', ev);
    this._queues.push(ev);
  }

  _emit(name, ...args) {
    const set = this._listeners.get(name);
    if (!set) return;
    for (const cb of [...set]) {
      try {
        cb(...args);
      } catch (err) {
        // An app callback that throws must not look like a broken connection.
        report(err);
      }
    }
  }

  _emitIdWaiters(err) {
    const waiters = this._idWaiters;
    this._idWaiters = [];
    for (const w of waiters) {
      if (err) w.reject(err);
      else w.resolve(this.id);
    }
  }

  _endLocal(ev) {
    if (this._finished) return;
    this._conn.close();
    this._truncateTensors(undefined);
    this.result = ev;
    this._dispatch(ev);
    if (ev.kind === 'error') {
      this.error = new StreamFailedError(ev);
      this._emit('error', this.error);
    }
    this._checkpoint.clear();
    this._finish(ev.kind);
  }

  _finish(status, err = null) {
    if (this._finished) return;
    this._finished = true;
    this.status = status;
    this._conn.close();
    this._checkpoint.stop();
    if (this._cancelTimer !== null) this._clock.clearTimeout(this._cancelTimer);
    if (this._signal) this._signal.removeEventListener('abort', this._onAbort);
    if (!this.id) this._emitIdWaiters(err ?? new TokenwireError(`the stream ended (${status}) before it started`));
    this._queues.close(err);
    this.client._forget(this);
    this._emit('end', this._result());
  }

  _result() {
    return { status: this.status, text: this.text, event: this.result, error: this.error, lastSeq: this.lastSeq, stats: this.stats };
  }
}

// The terminal event a resume did not get because it was already behind lastSeq.
function terminalFromOpen(open) {
  const base = { kind: open.status, seq: open.last_seq, local: true };
  if (open.status === 'done') return { ...base, finish_reason: 'unknown', usage: null };
  if (open.status === 'error') return { ...base, code: 'unknown', message: 'the stream had already ended with an error' };
  return { ...base, reason: 'unknown' };
}

function makeCheckpoint(option, client, snapshot) {
  if (option === false || option == null) return new Checkpoint({ storage: null, clock: client.clock, snapshot });
  const o = typeof option === 'string' ? { key: option } : option === true ? {} : option;
  return new Checkpoint({ key: DEFAULT_KEY, ...o, clock: client.clock, snapshot });
}
