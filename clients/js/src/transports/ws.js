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
 */

import { TransportError, ProtocolError, TokenwireError, codeError } from '../errors.js';
import { decodeChunkFrame } from '../wsframe.js';
import { parseJSON } from './frames.js';

const OPEN = 1;

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
  }

  connect({ stream, after = 0, request = null }, sink) {
    const sub = { stream, sink, active: true, reqId: null };
    if (stream) {
      this._replace(stream);
      this._subs.set(stream, sub);
      this._send({ op: 'subscribe', stream, after });
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

  /** Stop a stream: the `cancel` op on an open socket, else HTTP DELETE. */
  async cancel(streamId) {
    if (this._ws && this._ws.readyState === OPEN) {
      this._send({ op: 'cancel', stream: streamId });
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
      if (this._ws === ws) this._drop(ws, new TransportError(`WebSocket closed (${e.code}${e.reason ? ` ${e.reason}` : ''})`));
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
        if (sub) sub.sink.open(frame);
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
    }
    if (!sub) return; // e.g. bad_request for an op nobody waits on
    sub.active = false;
    sub.sink.end(err);
  }
}
