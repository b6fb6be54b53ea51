/**
 * Errors raised by the tokenwire client. One root, structured fields, and a
 * message built from them:
 *
 *   TokenwireError
 *   ├── HTTPError            a non-2xx answer: status, code (server's error.code)
 *   ├── ServerError          a WebSocket `error` frame: code, requestId, stream
 *   ├── NetworkError         the connection failed or broke
 *   ├── ProtocolError        a frame that breaks docs/protocol.md
 *   ├── ConnectionError      gave up reconnecting: attempts, lastSeq, cause
 *   ├── HeartbeatTimeout     nothing heard for two heartbeat intervals
 *   ├── StreamError          the stream's terminal `error` event: code, seq
 *   ├── GapError             history was lost (`open.recovered === false`)
 *   └── TensorError          tensorId
 *       ├── TensorTruncatedError   missing chunks at tensor.end / stream end
 *       └── TensorChecksumError    crc32 mismatch
 *
 * `retryable` tells the reconnect machine whether trying again can help.
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

// Statuses after which the same request can succeed later (the stream was
// not created, or the server is briefly unable to serve it).
const RETRYABLE_STATUS = new Set([408, 425, 429, 500, 502, 503, 504]);

export class HTTPError extends TokenwireError {
  constructor(status, code, message, { method = 'GET', url = '' } = {}) {
    super(`${method} ${url} -> ${status} ${code}${message ? `: ${message}` : ''}`);
    this.status = status;
    this.code = code;
    this.detail = message;
  }

  get retryable() {
    return RETRYABLE_STATUS.has(this.status);
  }
}

// WebSocket error codes after which the same subscription can succeed later.
const RETRYABLE_CODES = new Set(['too_many_streams', 'too_many_subscribers', 'overloaded', 'internal']);

export class ServerError extends TokenwireError {
  constructor(code, message, { requestId, stream } = {}) {
    super(`server error ${code}${message ? `: ${message}` : ''}`);
    this.code = code;
    this.detail = message;
    this.requestId = requestId;
    this.stream = stream;
  }

  get retryable() {
    return RETRYABLE_CODES.has(this.code);
  }
}

export class ProtocolError extends TokenwireError {}

/** A network failure (connection refused, reset, aborted by the peer). */
export class NetworkError extends TokenwireError {
  constructor(message, { cause, retryable = true } = {}) {
    super(message, { cause });
    this._retryable = retryable;
  }

  get retryable() {
    return this._retryable;
  }
}

export class ConnectionError extends TokenwireError {
  constructor(attempts, lastSeq, cause) {
    const why = cause && cause.message ? `: ${cause.message}` : '';
    super(`gave up after ${attempts} reconnect attempts at seq ${lastSeq}${why}`, { cause });
    this.attempts = attempts;
    this.lastSeq = lastSeq;
  }
}

export class HeartbeatTimeout extends TokenwireError {
  constructor(silentMs) {
    super(`no bytes for ${silentMs} ms (two heartbeat intervals)`);
    this.silentMs = silentMs;
  }

  get retryable() {
    return true;
  }
}

export class StreamError extends TokenwireError {
  constructor(event) {
    super(`stream failed: ${event.code}${event.message ? `: ${event.message}` : ''}`);
    this.code = event.code;
    this.detail = event.message;
    this.seq = event.seq;
    this.event = event;
  }
}

export class GapError extends TokenwireError {
  constructor(fromSeq, toSeq, reason) {
    const range = toSeq == null ? `${fromSeq}..?` : `${fromSeq}..${toSeq}`;
    super(`events ${range} are lost (${reason})`);
    this.fromSeq = fromSeq;
    this.toSeq = toSeq;
    this.reason = reason;
  }
}

export class TensorError extends TokenwireError {
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
