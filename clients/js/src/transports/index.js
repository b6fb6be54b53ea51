/**
 * Transports by name. Every transport has one interface:
 *
 *   connect({stream, after, request}, sink) -> {close()}
 *       one subscription: `request` set (no stream yet) starts the stream
 *       first; the sink (see frames.js) hears everything that arrives.
 *   cancel(streamId) -> Promise   stop the stream (not just leave)
 *   close()                        release shared resources (a socket)
 *   observesHeartbeats             false when heartbeats are invisible to it
 */

import { SSETransport, NDJSONTransport } from './fetch-stream.js';
import { EventSourceTransport } from './eventsource.js';
import { WebSocketTransport } from './ws.js';
import { TokenwireError } from '../errors.js';

/** Can this environment read a fetch response body as a stream? */
export function canStreamFetch(http) {
  return (
    http.canFetch &&
    typeof globalThis.ReadableStream === 'function' &&
    (typeof globalThis.Response !== 'function' || 'body' in globalThis.Response.prototype)
  );
}

export const TRANSPORTS = Object.freeze({
  // SSE over fetch streaming, falling back to EventSource where fetch cannot stream.
  sse: (http, options) =>
    canStreamFetch(http) || options.fetch ? new SSETransport(http, options) : new EventSourceTransport(http, options),
  eventsource: (http, options) => new EventSourceTransport(http, options),
  ws: (http, options) => new WebSocketTransport(http, options),
  ndjson: (http, options) => new NDJSONTransport(http, options),
});

/** A transport from its name, or a ready-made transport object passed through. */
export function createTransport(kind, http, options = {}) {
  if (kind && typeof kind === 'object' && typeof kind.connect === 'function') return kind;
  const make = TRANSPORTS[kind];
  if (!make) throw new TokenwireError(`unknown transport ${JSON.stringify(kind)}; one of ${Object.keys(TRANSPORTS).join(', ')}`);
  return make(http, options);
}

export { SSETransport, NDJSONTransport, EventSourceTransport, WebSocketTransport };
