/**
 * The SSE and NDJSON transports: one resumable GET read through fetch's
 * ReadableStream, parsed incrementally. POST /v1/streams first when the
 * connection starts the stream.
 */

import { SSEParser } from '../sse.js';
import { NDJSONParser } from '../ndjson.js';
import { errorFromResponse } from '../http.js';
import { TransportError, TokenwireError } from '../errors.js';
import { endedFrame, routeFrame, routeSSE, windowQuery } from './frames.js';

class FetchStreamTransport {
  constructor(http, { maxLineLength, resumeHeader = true } = {}) {
    this.http = http;
    this.maxLineLength = maxLineLength;
    // Last-Event-ID is not a CORS-safelisted header: cross-origin, the server
    // must allow it in a preflight. `?after=` alone carries the same offset.
    this.resumeHeader = resumeHeader;
    this.observesHeartbeats = true;
  }

  /** @returns {{close(): void}} */
  connect({ stream, after = 0, request = null, coalesceMs = null }, sink) {
    const ctrl = new AbortController();
    let closed = false;
    this._run(stream, after, request, coalesceMs, sink, ctrl.signal).catch((err) => {
      if (!closed) sink.end(asTransportError(err));
    });
    return {
      close() {
        closed = true;
        ctrl.abort();
      },
    };
  }

  cancel(streamId) {
    return this.http.cancelStream(streamId);
  }

  close() {}

  async _run(stream, after, request, coalesceMs, sink, signal) {
    let id = stream;
    if (!id) {
      const info = await this.http.createStream(request, { signal });
      id = info.id;
      sink.started(info);
    }
    const query = { ...(after > 0 ? { after } : {}), ...windowQuery(coalesceMs) };
    const url = this.http.url(`/v1/streams/${encodeURIComponent(id)}/${this.path}`, Object.keys(query).length ? query : null);
    const headers = { Accept: this.accept };
    if (after > 0 && this.resumeHeader && this.path === 'events') headers['Last-Event-ID'] = String(after);
    const res = await this.http.fetch(url, { headers, signal });
    if (res.status === 204) {
      // Resumed at or past the terminal event (docs/protocol.md): nothing more comes.
      sink.open(endedFrame(id, await this.http.status(id)));
      sink.end(null);
      return;
    }
    if (!res.ok) throw await errorFromResponse(res, 'GET', url);
    if (!res.body || typeof res.body.getReader !== 'function') {
      throw new TokenwireError('this fetch() cannot stream response bodies');
    }
    const reader = res.body.getReader();
    const parser = this.parser();
    try {
      for (;;) {
        const pause = sink.wait();
        if (pause) await pause;
        const { value, done } = await reader.read();
        if (done) break;
        sink.bytes();
        this.route(parser.feed(value), sink);
      }
    } finally {
      reader.cancel().catch(() => {});
    }
    parser.end();
    sink.end(null);
  }
}

export class SSETransport extends FetchStreamTransport {
  get path() {
    return 'events';
  }

  get accept() {
    return 'text/event-stream';
  }

  parser() {
    return new SSEParser({ maxLineLength: this.maxLineLength });
  }

  route(records, sink) {
    for (const rec of records) routeSSE(rec, sink);
  }
}

export class NDJSONTransport extends FetchStreamTransport {
  get path() {
    return 'ndjson';
  }

  get accept() {
    return 'application/x-ndjson';
  }

  parser() {
    return new NDJSONParser({ maxLineLength: this.maxLineLength });
  }

  route(objects, sink) {
    for (const obj of objects) routeFrame(obj.kind, obj, sink);
  }
}

/** Anything thrown while reading becomes a TokenwireError with the right `retryable`. */
export function asTransportError(err) {
  if (err instanceof TokenwireError) return err;
  // A reset or aborted body read (undici: TypeError "terminated").
  return new TransportError(`stream read failed: ${err && err.message ? err.message : err}`, { cause: err });
}
