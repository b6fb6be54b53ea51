/**
 * Routing decoded frames to a transport sink, shared by the text transports.
 *
 * A sink is what a transport reports to (connection.js implements it):
 *   started(info)  the stream was created by this connection (POST or WS start)
 *   bytes()        anything arrived (heartbeat liveness)
 *   open(frame)    the `open` control frame
 *   heartbeat(f)   a `heartbeat` control frame
 *   event(ev)      a sequenced event
 *   retry(ms)      SSE `retry:` field
 *   end(err)       the connection is over; err null for a clean end
 *   wait()         null, or a promise to await before reading more (backpressure)
 */

import { ProtocolError, codeError } from '../errors.js';

export function parseJSON(text) {
  try {
    return JSON.parse(text);
  } catch (err) {
    const shown = text.length > 80 ? `${text.slice(0, 80)}…` : text;
    throw new ProtocolError(`invalid JSON frame: ${shown}`, { cause: err });
  }
}

/**
 * Send one decoded frame to the sink. Control frames have no seq; an `error`
 * without a seq is the server refusing the subscription, anything else
 * unknown without a seq is ignored (room for new control frames).
 */
export function routeFrame(kind, obj, sink) {
  if (kind === 'open') {
    sink.open(obj);
    return;
  }
  if (kind === 'heartbeat') {
    sink.heartbeat(obj);
    return;
  }
  if (obj.seq === undefined || obj.seq === null) {
    if (kind === 'error') throw codeError(obj.code, obj.message, { stream: obj.stream });
    return;
  }
  if (obj.kind === undefined) obj.kind = kind;
  sink.event(obj);
}

/** One SSE parser record (see sse.js) to the sink. */
export function routeSSE(rec, sink) {
  if (rec.type === 'retry') {
    sink.retry(rec.retry);
    return;
  }
  if (rec.type !== 'event') return; // comments: liveness only, already counted as bytes
  const obj = parseJSON(rec.data);
  if (obj === null || typeof obj !== 'object') throw new ProtocolError(`SSE data is not an object: ${rec.data.slice(0, 80)}`);
  // `tw-open` is the SSE open frame (not `open`, which is EventSource's own event);
  // `open` is its name before 0.1.0, accepted for one more release.
  const event = rec.event === 'tw-open' ? 'open' : rec.event;
  if ((obj.seq === undefined || obj.seq === null) && /^[0-9]+$/.test(rec.id) && event !== 'open') obj.seq = Number(rec.id);
  routeFrame(obj.kind ?? event, obj, sink);
}

/**
 * The open frame a transport reports when the server answered 204 (resumed at
 * or past the terminal event): built from GET /v1/streams/{id}, so the handle
 * ends with the stream's status instead of reconnecting.
 */
export function endedFrame(id, info) {
  return { stream: id, epoch: null, recovered: true, first_seq: null, last_seq: info.last_seq, status: info.status };
}


/** `?coalesce_ms=` when a flush window was asked for (docs/protocol.md, "Coalescing"). */
export function windowQuery(coalesceMs) {
  return coalesceMs == null ? {} : { coalesce_ms: coalesceMs };
}
