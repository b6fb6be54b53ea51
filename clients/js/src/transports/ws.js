/**
 * The WebSocket transport: `/v1/ws`, multiplexed. One socket per client
 * carries every stream; each connect() is one subscription on it (or one
 * `start`, which subscribes from seq 0 by itself).
 *
 * Liveness is per socket: the server sends a `heartbeat` only while nothing
 * else is sent, so any frame proves the socket alive for every stream on it.
 * When the socket drops, every subscription ends with a retryable error and
 * each resume machine reconnects on its own backoff; the first one opens a
 * new socket, the rest share it.
 *
 * Tokens: `?token=` when the socket opens, and `token` in each `subscribe` and
 * `cancel`. When the server says `token_expired` (the error frame it sends
 * before closing a socket it refused, or the answer to a `subscribe` on a
 * socket that outlived its token), the subscription refreshes the token through
 * `refreshToken` once and subscribes again, on a new socket if the old one
 * closed; a new token refused too ends it with the AuthenticationError.
 */

import { TransportError, ProtocolError, TokenwireError, codeError } from '../errors.js';
import { decodeChunkFrame } from '../wsframe.js';
import { parseJSON } from './frames.js';

const OPEN = 1;
const EXPIRED = 'token_expired';

export class WebSocketTransport {
  constructor(http, { WebSocket: WS, path = '/v1/ws' } = {}) {
    this.http = http;
    this.WebSocket = WS ?? globalThis.WebSocket;
    if (typeof this.WebSocket !== 'function') throw new TokenwireError('no WebSocket available; pass options.WebSocket');
    this.path = path;
    this.observesHeartbeats = true;
    this._ws = null;
    this._queue = []; // ops sent while the socket connects
    this._subs = new Map(); // stream id -> subscription
    this._starts = new Map(); // request id -> subscription awaiting `started`
    this._nextId = 0;
    this._refused = null; // the error frame of a socket the server refused
  }

  connect({ stream, after = 0, request = null, coalesceMs = null }, sink) {
    const sub = { stream, after, coalesceMs, sink, active: true, reqId: null, token: null, refreshed: false };
    if (stream) {
      this._replace(stream);
      this._subscribe(sub);
    } else {
      sub.reqId = `r${++this._nextId}`;
      this._starts.set(sub.reqId, sub);
      this._send({ op: 'start', id: sub.reqId, request });
    }
    return {
      close: () => {
        if (!sub.active) return;
        sub.active = false;
        if (sub.reqId) this._starts.delete(sub.reqId);
        if (sub.stream && this._subs.get(sub.stream) === sub) {
          this._subs.delete(sub.stream);
          if (this._ws && this._ws.readyState === OPEN) this._send({ op: 'unsubscribe', stream: sub.stream });
        }
      },
    };
  }

  _subscribe(sub) {
    this._subs.set(sub.stream, sub);
    sub.token = this.http.token;
    const op = { op: 'subscribe', stream: sub.stream, after: sub.after };
    if (sub.coalesceMs != null) op.coalesce_ms = sub.coalesceMs;
    if (sub.token) op.token = sub.token; // the socket may have opened with an older one
    this._send(op);
  }

  /** Stop a stream: the `cancel` op on an open socket, else HTTP DELETE. */
  async cancel(streamId) {
    if (this._ws && this._ws.readyState === OPEN) {
      const op = { op: 'cancel', stream: streamId };
      if (this.http.token) op.token = this.http.token;
      this._send(op);
      return null;
    }
    return this.http.cancelStream(streamId);
  }

  /** Close the socket; every subscription on it ends (not to be retried). */
  close() {
    const ws = this._ws;
    if (ws) {
      this._drop(ws, new TransportError('the client closed its WebSocket', { retryable: false }));
      ws.close(1000);
    }
  }

  // The protocol has one subscription per stream per socket.
  _replace(stream) {
    const old = this._subs.get(stream);
    if (!old) return;
    this._subs.delete(stream);
    old.active = false;
    old.sink.end(new TokenwireError(`a second subscription to ${stream} on this WebSocket replaced this one`));
  }

  _send(op) {
    const text = JSON.stringify(op);
    const ws = this._socket();
    if (ws.readyState === OPEN) ws.send(text);
    else this._queue.push(text);
  }

  _socket() {
    if (this._ws) return this._ws;
    const ws = new this.WebSocket(this.http.wsUrl(this.path));
    ws.binaryType = 'arraybuffer';
    this._ws = ws;
    this._refused = null;
    const openedWith = this.http.token;
    ws.addEventListener('open', () => {
      if (this._ws !== ws) return;
      const queued = this._queue;
      this._queue = [];
      for (const text of queued) ws.send(text);
    });
    ws.addEventListener('message', (e) => {
      if (this._ws !== ws) return;
      try {
        this._message(e.data);
      } catch (err) {
        // A frame this client cannot read: the socket state is unknown, start over.
        this._drop(ws, err instanceof TokenwireError ? err : new ProtocolError(String(err), { cause: err }));
        ws.close(1002);
      }
    });
    ws.addEventListener('close', (e) => {
      if (this._ws !== ws) return;
      const refused = this._refused;
      if (refused && refused.code === EXPIRED) this._dropExpired(ws, refused, openedWith);
      else this._drop(ws, refused ?? new TransportError(`WebSocket closed (${e.code}${e.reason ? ` ${e.reason}` : ''})`));
    });
    ws.addEventListener('error', () => {
      if (this._ws === ws) this._drop(ws, new TransportError('WebSocket error'));
    });
    return ws;
  }

  /** The socket is gone: end every subscription on it. */
  _drop(ws, err) {
    if (this._ws !== ws) return;
    this._ws = null;
    this._queue = [];
    const subs = [...this._subs.values()];
    const starts = [...this._starts.values()];
    this._subs.clear();
    this._starts.clear();
    for (const sub of subs) {
      sub.active = false;
      sub.sink.end(err);
    }
    // A start in flight may or may not have created the stream: never retry it blindly.
    const startErr = err && new TransportError(err.message, { cause: err, retryable: false });
    for (const sub of starts) {
      sub.active = false;
      sub.sink.end(startErr);
    }
  }

  /** The server refused the socket's expired token: refresh, then subscribe again. */
  _dropExpired(ws, err, used) {
    const subs = [...this._subs.values()];
    this._subs.clear();
    this._drop(ws, err); // starts in flight, and nothing else: the subscriptions are ours
    this._refresh(subs, used, err);
  }

  /**
   * Refresh a token the server found expired, then subscribe `subs` again; once
   * per subscription until the server admits it (its `open`), so that a new token
   * refused too ends it.
   */
  async _refresh(subs, used, err) {
    const again = subs.filter((sub) => sub.active && !sub.refreshed);
    for (const sub of subs) {
      if (sub.active && sub.refreshed) {
        sub.active = false;
        sub.sink.end(err);
      }
    }
    if (again.length === 0) return;
    let ok = false;
    let failure = err;
    try {
      ok = await this.http.refresh(used);
    } catch (e) {
      failure = e;
    }
    for (const sub of again) {
      if (!sub.active) continue;
      if (!ok) {
        sub.active = false;
        sub.sink.end(failure);
        continue;
      }
      sub.refreshed = true;
      if (!this._subs.has(sub.stream)) this._subscribe(sub);
    }
  }

  _alive() {
    for (const sub of this._subs.values()) sub.sink.bytes();
  }

  _message(data) {
    this._alive();
    if (typeof data !== 'string') {
      const { stream, event } = decodeChunkFrame(data instanceof ArrayBuffer ? data : new Uint8Array(data));
      const sub = this._subs.get(stream);
      if (sub) sub.sink.event(event);
      return;
    }
    const msg = parseJSON(data);
    switch (msg.type) {
      case 'started': {
        const sub = this._starts.get(msg.id);
        if (!sub) return;
        this._starts.delete(msg.id);
        sub.reqId = null;
        sub.stream = msg.stream;
        this._replace(msg.stream);
        this._subs.set(msg.stream, sub);
        sub.sink.started({ ...msg, id: msg.stream });
        return;
      }
      case 'open': {
        const sub = this._subs.get(msg.stream);
        const { type, ...frame } = msg;
        if (sub) {
          sub.refreshed = false; // admitted: a later expiry may be refreshed again
          sub.sink.open(frame);
        }
        return;
      }
      case 'event': {
        const sub = this._subs.get(msg.stream);
        if (!sub) return;
        const { type, stream, ...event } = msg;
        sub.sink.event(event);
        return;
      }
      case 'heartbeat':
        for (const sub of this._subs.values()) sub.sink.heartbeat(msg);
        return;
      case 'error':
        this._error(msg);
        return;
      default:
        return; // `unsubscribed` and frame types this client does not know
    }
  }

  _error(msg) {
    const err = codeError(msg.code, msg.message, { requestId: msg.id, stream: msg.stream });
    let sub = null;
    if (msg.id != null && this._starts.has(msg.id)) {
      sub = this._starts.get(msg.id);
      this._starts.delete(msg.id);
    } else if (msg.stream != null && this._subs.has(msg.stream)) {
      sub = this._subs.get(msg.stream);
      this._subs.delete(msg.stream);
      if (msg.code === EXPIRED && this.http.refreshToken) {
        this._refresh([sub], sub.token, err);
        return;
      }
    } else if (msg.stream == null && msg.id == null) {
      this._refused = err; // the socket's own error: the server closes it next
      return;
    }
    if (!sub) return; // e.g. bad_request for an op nobody waits on
    sub.active = false;
    sub.sink.end(err);
  }
}
