/**
 * tokenwire browser client: the public API, re-exported.
 *
 * Served as /static/tokenwire.js; every module here is a plain ES module with
 * relative imports and no dependencies, so a browser loads it as is:
 *
 *   import { TokenwireClient } from '/static/tokenwire.js';
 *   const client = new TokenwireClient({ transport: 'sse' });
 *   const stream = client.start({ model: 'scripted', prompt: 'hello' });
 *   for await (const ev of stream) if (ev.kind === 'token') out.append(ev.text);
 */

export { TokenwireClient } from './client.js';
export { StreamHandle } from './handle.js';
export { StreamStore, INITIAL_SNAPSHOT } from './store.js';
export { TokenStreamView } from './view.js';
export { SSEParser } from './sse.js';
export { NDJSONParser } from './ndjson.js';
export { ResumeMachine, State, TERMINAL_KINDS, DEFAULT_BACKOFF, backoffDelay } from './resume.js';
export { Connection } from './connection.js';
export { TensorAssembler, DTYPES, useSharedMemory } from './tensor.js';
export { crc32, crc32Hex } from './crc32.js';
export { decodeBase64, decodeBase64Into, encodeBase64 } from './base64.js';
export { decodeChunkFrame, encodeChunkFrame, CHUNK_FRAME_VERSION } from './wsframe.js';
export { Checkpoint, readCheckpoint, DEFAULT_KEY } from './checkpoint.js';
export { Http } from './http.js';
export {
  createTransport,
  TRANSPORTS,
  SSETransport,
  NDJSONTransport,
  EventSourceTransport,
  WebSocketTransport,
} from './transports/index.js';
export { systemClock, ManualClock } from './clock.js';
export {
  TokenwireError,
  ClientError,
  TransportError,
  HeartbeatTimeoutError,
  HTTPStatusError,
  AuthenticationError,
  StreamNotFoundError,
  RequestRejectedError,
  RateLimitedError,
  ServerUnavailableError,
  statusError,
  codeError,
  ProtocolError,
  StreamGapError,
  ReconnectExhaustedError,
  StreamFailedError,
  TensorError,
  TensorTruncatedError,
  TensorChecksumError,
  // deprecated names (before 0.1.0)
  HTTPError,
  ServerError,
  NetworkError,
  ConnectionError,
  HeartbeatTimeout,
  StreamError,
  GapError,
} from './errors.js';
