/**
 * TokenwireClient: the front door. Holds the transport, the HTTP settings,
 * the clock and the reconnect policy; makes StreamHandles.
 */

import { Http } from './http.js';
import { createTransport } from './transports/index.js';
import { StreamHandle } from './handle.js';
import { systemClock } from './clock.js';
import { DEFAULT_KEY, readCheckpoint, defaultStorage } from './checkpoint.js';
import { TokenwireError } from './errors.js';


/** The longest flush window a server takes (docs/protocol.md, "Coalescing"). */
const MAX_COALESCE_MS = 1000;

export class TokenwireClient {
  /** @param {import('./tokenwire.d.ts').ClientOptions} [options] */
  constructor(options = {}) {
    this.options = { transport: 'sse', checkpoint: true, ...options };
    this.clock = options.clock ?? systemClock;
    this.http = new Http(options);
    this.transport = createTransport(this.options.transport, this.http, options);
    this.machineOptions = {
      backoff: options.backoff,
      heartbeatMs: options.heartbeatMs ?? 15_000,
      random: options.random ?? Math.random,
    };
    this._handles = new Set();
  }

  /** Start a generation (POST /v1/streams, or the WebSocket `start` op) and follow it. */
  start(request, options = {}) {
    if (!request || typeof request !== 'object') throw new TokenwireError('start() takes the POST /v1/streams body, e.g. {model, prompt}');
    return this._open({ ...options, request, streamId: null, after: 0 });
  }

  /** Follow an existing stream, from the start or after seq `options.after`. */
  subscribe(streamId, options = {}) {
    if (typeof streamId !== 'string' || !streamId) throw new TokenwireError('subscribe() takes a stream id');
    const w = options.coalesceMs;
    if (w != null && !(Number.isInteger(w) && w >= 0 && w <= MAX_COALESCE_MS)) {
      throw new TokenwireError(`coalesceMs must be an integer 0..${MAX_COALESCE_MS}`);
    }
    return this._open({ ...options, streamId, after: options.after ?? 0 });
  }

  /**
   * Resume the stream saved under a checkpoint key (after a page reload).
   * With the text saved, it resumes after the saved seq; without, it replays
   * from the start so the text is whole. Returns null when nothing is saved.
   */
  resume(key, options = {}) {
    const cfg = checkpointConfig(options.checkpoint ?? this.options.checkpoint);
    const k = key ?? cfg.key ?? DEFAULT_KEY;
    const cp = readCheckpoint(k, cfg.storage === undefined ? defaultStorage() : cfg.storage);
    if (!cp) return null;
    const hasText = typeof cp.text === 'string';
    return this._open({
      ...options,
      streamId: cp.stream,
      after: hasText ? cp.lastSeq : 0,
      text: hasText ? cp.text : '',
      resumed: true,
      checkpoint: { ...cfg, key: k },
    });
  }

  /** A new client from `options`, resuming the checkpoint under `key` (null when none). */
  static resume(key, options = {}) {
    return new TokenwireClient(options).resume(key, options);
  }

  /** The checkpoint saved under `key`, or null. */
  static readCheckpoint(key = DEFAULT_KEY, storage = defaultStorage()) {
    return readCheckpoint(key, storage);
  }

  /** GET /v1/streams/{id}. */
  status(streamId) {
    return this.http.status(streamId);
  }

  /** Stop a stream by id (HTTP DELETE, or the WebSocket `cancel` op). */
  cancel(streamId) {
    return this.transport.cancel(streamId);
  }

  /** Leave every stream this client follows and release the transport. */
  close() {
    for (const h of [...this._handles]) h.close();
    this.transport.close();
  }

  _open(o) {
    const h = new StreamHandle(this, o);
    if (!h.finished) this._handles.add(h);
    return h;
  }

  _forget(h) {
    this._handles.delete(h);
  }
}

function checkpointConfig(option) {
  if (option === false || option == null || option === true) return {};
  if (typeof option === 'string') return { key: option };
  return option;
}
