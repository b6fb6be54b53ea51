/**
 * SSE through the browser's EventSource, for where fetch cannot stream.
 *
 * EventSource reconnects by itself; this transport closes it on the first
 * error instead and lets the resume machine reconnect with `?after=`, so
 * backoff, deduplication and gaps work as on every other transport. What it
 * cannot see: request headers, `retry:`, comment heartbeats (so it reports
 * `observesHeartbeats = false`), the status of a failed response (it asks
 * GET /v1/streams/{id} to tell a gone stream from a network error), and event
 * names it has no listener for (see EVENT_NAMES; add more with `eventNames`).
 */

import { TransportError, TokenwireError } from '../errors.js';
import { endedFrame, routeSSE, windowQuery } from './frames.js';
import { TERMINAL_KINDS } from '../resume.js';
import { asTransportError } from './fetch-stream.js';

export const EVENT_NAMES = Object.freeze([
  'tw-open',
  'open', // the open frame's name before 0.1.0; accepted for one more release
  'heartbeat',
  'message',
  'token',
  'progress',
  'metrics',
  'data',
  'tensor.header',
  'tensor.chunk',
  'tensor.end',
  'done',
  'error',
  'cancelled',
]);

export class EventSourceTransport {
  constructor(http, { EventSource: ES, eventNames = [], withCredentials = false } = {}) {
    this.http = http;
    this.EventSource = ES ?? globalThis.EventSource;
    if (typeof this.EventSource !== 'function') throw new TokenwireError('no EventSource available');
    this.eventNames = [...EVENT_NAMES, ...eventNames];
    this.withCredentials = withCredentials;
    this.observesHeartbeats = false;
  }

  connect({ stream, after = 0, request = null, coalesceMs = null }, sink) {
    let closed = false;
    let es = null;
    const fail = (err) => {
      if (closed) return;
      closed = true;
      if (es) es.close();
      sink.end(asTransportError(err));
    };
    const ended = (frame) => {
      if (closed) return;
      closed = true;
      if (es) es.close();
      sink.open(frame);
      sink.end(null);
    };
    const start = async () => {
      let id = stream;
      if (!id) {
        const info = await this.http.createStream(request);
        id = info.id;
        if (closed) return;
        sink.started(info);
      }
      const query = { ...(after > 0 ? { after } : {}), ...windowQuery(coalesceMs), ...this.http.tokenQuery() };
      const url = this.http.url(`/v1/streams/${encodeURIComponent(id)}/events`, query);
      es = new this.EventSource(url, { withCredentials: this.withCredentials });
      const onMessage = (e) => {
        // The old `event: open` and `event: error` share their names with
        // EventSource's own connection events; only messages carry data.
        if (closed || typeof e.data !== 'string') return;
        sink.bytes();
        try {
          routeSSE({ type: 'event', event: e.type, data: e.data, id: e.lastEventId }, sink);
        } catch (err) {
          fail(err);
        }
      };
      for (const name of this.eventNames) es.addEventListener(name, onMessage);
      es.addEventListener('error', (e) => {
        if (closed || typeof e.data === 'string') return;
        this._diagnose(id, after).then((r) => (r instanceof Error ? fail(r) : ended(r)), fail);
      });
    };
    start().catch(fail);
    return {
      close() {
        closed = true;
        if (es) es.close();
      },
    };
  }

  /**
   * Why did EventSource fail? A 4xx from the status route is final; a stream
   * that ended at or before `after` was a 204 (EventSource stops by itself on
   * one): its ended frame is returned. Anything else is a network error.
   */
  async _diagnose(id, after) {
    if (this.http.canFetch) {
      try {
        const info = await this.http.status(id);
        if (TERMINAL_KINDS.includes(info.status) && info.last_seq <= after) return endedFrame(id, info);
      } catch (err) {
        if (err.status >= 400 && err.status < 500 && !err.retryable) return err;
      }
    }
    return new TransportError('EventSource connection failed');
  }

  cancel(streamId) {
    return this.http.cancelStream(streamId);
  }

  close() {}
}
