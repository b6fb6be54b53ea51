/**
 * Errors raised by the tokenwire client: the names and the tree of the Python
 * client (tokenwire/client/errors.py), structured fields, and a message built
 * from them:
 *
 *   TokenwireError
 *   └── ClientError
 *       ├── TransportError            the link failed or broke (retryable unless told)
 *       │   └── HeartbeatTimeoutError nothing heard for two heartbeat intervals
 *       ├── HTTPStatusError           the server said no: status, code, detail
 *       │   ├── AuthenticationError   401 / 403
 *       │   ├── StreamNotFoundError   404: unknown stream, or expired after retention
 *       │   ├── RequestRejectedError  any other 4xx
 *       │   ├── RateLimitedError      429 (retryable)
 *       │   └── ServerUnavailableError  5xx (retryable)
 *       ├── ProtocolError             a frame that breaks docs/protocol.md
 *       ├── StreamGapError            history was lost (`open.recovered === false`)
 *       ├── ReconnectExhaustedError   gave up reconnecting: attempts, lastSeq, cause
 *       ├── StreamFailedError         the stream's terminal `error` event: code, seq
 *       └── TensorError               tensorId
 *           ├── TensorTruncatedError  missing chunks at tensor.end / stream end
 *           └── TensorChecksumError   crc32 mismatch
 *
 * An HTTP error answer and a WebSocket `error` frame become the same classes:
 * a frame's code is mapped to the HTTP status the server gives it
 * (`not_found` -> 404 StreamNotFoundError). `retryable` tells the reconnect
 * machine whether trying again can help.
 */

export class TokenwireError extends Error {
  constructor(message, { cause } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = new.target.name;
  }

  get retryable() {
    return false;
  }
}

export class ClientError extends TokenwireError {}

// Statuses after which the same request can succeed later (the stream was
// not created, or the server is briefly unable to serve it).
const RETRYABLE_STATUS = new Set([408, 425, 429, 500, 502, 503, 504]);

export class HTTPStatusError extends ClientError {
  constructor(status, code, message, { method = 'GET', url = '', requestId, stream } = {}) {
    const where = url ? `${method} ${url} -> ` : '';
    super(`${where}${status} ${code}${message ? `: ${message}` : ''}`);
    this.status = status;
    this.code = code;
    this.detail = message;
    this.requestId = requestId;
    this.stream = stream;
  }

  get retryable() {
    return RETRYABLE_STATUS.has(this.status);
  }
}

export class AuthenticationError extends HTTPStatusError {}
export class StreamNotFoundError extends HTTPStatusError {}
export class RequestRejectedError extends HTTPStatusError {}
export class RateLimitedError extends HTTPStatusError {}
export class ServerUnavailableError extends HTTPStatusError {}

const BY_STATUS = new Map([
  [401, AuthenticationError],
  [403, AuthenticationError],
  [404, StreamNotFoundError],
  [429, RateLimitedError],
]);

// WebSocket error frames carry a code, not a status: the status the server
// answers that code with over HTTP (as tokenwire/client/errors.py maps them).
const CODE_STATUS = new Map([
  ['not_found', 404],
  ['unauthorized', 401],
  ['invalid_token', 401],
  ['token_expired', 401],
  ['forbidden', 403],
  ['too_many_streams', 429],
  ['too_many_subscribers', 429],
  ['too_many_subscriptions', 429],
  ['limit_exceeded', 429],
  ['rate_limited', 429],
  ['overloaded', 503],
  ['internal', 500],
  ['internal_error', 500],
]);

/** The error for an HTTP error answer: its class is chosen by the status. */
export function statusError(status, code, message, options) {
  const Cls = BY_STATUS.get(status) ?? (status >= 500 ? ServerUnavailableError : RequestRejectedError);
  return new Cls(status, code, message, options);
}

/** The error for a WebSocket `error` frame, through the HTTP status of its code. */
export function codeError(code, message, options) {
  return statusError(CODE_STATUS.get(code) ?? 400, code, message, options);
}

export class ProtocolError extends ClientError {}

/** A network failure (connection refused, reset, aborted by the peer). */
export class TransportError extends ClientError {
  constructor(message, { cause, retryable = true } = {}) {
    super(message, { cause });
    this._retryable = retryable;
  }

  get retryable() {
    return this._retryable;
  }
}

export class ReconnectExhaustedError extends ClientError {
  constructor(attempts, lastSeq, cause) {
    const why = cause && cause.message ? `: ${cause.message}` : '';
    super(`gave up after ${attempts} reconnect attempts at seq ${lastSeq}${why}`, { cause });
    this.attempts = attempts;
    this.lastSeq = lastSeq;
  }
}

export class HeartbeatTimeoutError extends TransportError {
  constructor(silentMs) {
    super(`no bytes for ${silentMs} ms (two heartbeat intervals)`);
    this.silentMs = silentMs;
  }
}

export class StreamFailedError extends ClientError {
  constructor(event) {
    super(`stream failed: ${event.code}${event.message ? `: ${event.message}` : ''}`);
    this.code = event.code;
    this.detail = event.message;
    this.seq = event.seq;
    this.event = event;
  }
}

export class StreamGapError extends ClientError {
  constructor(fromSeq, toSeq, reason) {
    const range = toSeq == null ? `${fromSeq}..?` : `${fromSeq}..${toSeq}`;
    super(`events ${range} are lost (${reason})`);
    this.fromSeq = fromSeq;
    this.toSeq = toSeq;
    this.reason = reason;
  }
}

export class TensorError extends ClientError {
  constructor(tensorId, message) {
    super(`tensor ${JSON.stringify(tensorId)}: ${message}`);
    this.tensorId = tensorId;
  }
}

export class TensorTruncatedError extends TensorError {
  constructor(tensorId, received, expected) {
    super(tensorId, `truncated: ${received} of ${expected} chunks received`);
    this.received = received;
    this.expected = expected;
  }
}

export class TensorChecksumError extends TensorError {
  constructor(tensorId, expected, actual) {
    super(tensorId, `checksum mismatch: expected ${expected}, got ${actual}`);
    this.expected = expected;
    this.actual = actual;
  }
}

// The names before 0.1.0, deprecated. ServerError (a WebSocket error frame)
// is now the HTTPStatusError its code maps to.
export const HTTPError = HTTPStatusError;
export const ServerError = HTTPStatusError;
export const NetworkError = TransportError;
export const ConnectionError = ReconnectExhaustedError;
export const HeartbeatTimeout = HeartbeatTimeoutError;
export const StreamError = StreamFailedError;
export const GapError = StreamGapError;
