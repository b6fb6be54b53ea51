// Type declarations for tokenwire.js (the browser client). Wire shapes follow
// docs/protocol.md.

// ---------------------------------------------------------------- events

export type ConnectionState = 'idle' | 'connecting' | 'connected' | 'reconnecting' | 'error' | 'closed';
export type StreamStatus = 'pending' | 'running' | 'done' | 'error' | 'cancelled' | 'closed';
export type TransportName = 'sse' | 'ws' | 'ndjson' | 'eventsource';

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export interface TokenEvent {
  kind: 'token';
  seq: number;
  text: string;
  /** Set on a merged catch-up frame: it covers from_seq..seq. */
  from_seq?: number;
}

export interface StreamProgressEvent {
  kind: 'progress';
  seq: number;
  stage: string;
  /** 0..1 */
  progress?: number;
  message?: string;
  /** Set on a coalesced frame (only the latest progress of a run is kept). */
  from_seq?: number;
}

export interface MetricsEvent {
  kind: 'metrics';
  seq: number;
  ttft_ms?: number;
  tokens?: number;
  tokens_per_s?: number;
  itl_p50_ms?: number;
  itl_p95_ms?: number;
  [field: string]: unknown;
}

export interface DataEvent {
  kind: 'data';
  seq: number;
  data: unknown;
}

export type DType =
  | 'float32'
  | 'float64'
  | 'float16'
  | 'bfloat16'
  | 'int8'
  | 'int16'
  | 'int32'
  | 'int64'
  | 'uint8'
  | 'uint16'
  | 'uint32'
  | 'uint64'
  | 'bool'
  | 'complex64'
  | 'complex128';

export interface TensorHeaderEvent {
  kind: 'tensor.header';
  seq: number;
  tensor_id: string;
  shape: number[];
  dtype: DType;
  strides: number[] | null;
  byteorder?: 'little' | 'big';
  nbytes: number;
  chunk_bytes: number;
  chunks: number;
  meta: Record<string, unknown>;
}

export interface TensorChunkEvent {
  kind: 'tensor.chunk';
  seq: number;
  tensor_id: string;
  index: number;
  offset: number;
  /** base64 on text transports; raw bytes from a WebSocket binary frame. */
  data: string | Uint8Array;
}

export interface TensorEndEvent {
  kind: 'tensor.end';
  seq: number;
  tensor_id: string;
  /** `crc32:` and 8 lowercase hex digits of the raw little-endian bytes. */
  checksum: string | null;
}

export interface DoneEvent {
  kind: 'done';
  seq: number;
  finish_reason: string;
  usage: Usage | null;
  /** Made by the client: a resume found the stream already over (finish_reason 'unknown'). */
  local?: true;
}

export interface StreamErrorEvent {
  kind: 'error';
  seq: number;
  code: string;
  message: string;
  /** Made by the client: a resume found the stream already over (code 'unknown'). */
  local?: true;
}

export interface CancelledEvent {
  kind: 'cancelled';
  /** Absent on a local end (`local: true`): cancel() could not hear the server's. */
  seq?: number;
  reason: string;
  local?: boolean;
}

/** The control frame that starts every subscription. */
export interface OpenEvent {
  kind: 'open';
  stream: string;
  epoch: string;
  recovered: boolean;
  first_seq: number;
  last_seq: number;
  status: string;
  heartbeat_ms?: number;
}

/** Events from_seq..to_seq are lost (to_seq null: unknown). Never silent. */
export interface GapEvent {
  kind: 'gap';
  from_seq: number;
  to_seq: number | null;
  reason: 'not_recovered' | 'seq_jump';
  epoch: string | null;
}

/** A tensor finished and verified (after its tensor.end). */
export interface TensorReadyEvent {
  kind: 'tensor';
  seq: number;
  tensor_id: string;
  tensor: Tensor;
}

/** A tensor could not be assembled (truncated, corrupt, malformed). */
export interface TensorErrorEvent {
  kind: 'tensor.error';
  seq?: number;
  tensor_id: string;
  error: TensorError;
}

export type SequencedEvent =
  | TokenEvent
  | StreamProgressEvent
  | MetricsEvent
  | DataEvent
  | TensorHeaderEvent
  | TensorChunkEvent
  | TensorEndEvent
  | DoneEvent
  | StreamErrorEvent
  | CancelledEvent;

export type TerminalEvent = DoneEvent | StreamErrorEvent | CancelledEvent;

/** Everything a StreamHandle yields. */
export type StreamEvent = SequencedEvent | OpenEvent | GapEvent | TensorReadyEvent | TensorErrorEvent;
export type EventKind = StreamEvent['kind'];

// ---------------------------------------------------------------- tensors

export type TensorArray =
  | Float32Array
  | Float64Array
  | Int8Array
  | Int16Array
  | Int32Array
  | BigInt64Array
  | Uint8Array
  | Uint16Array
  | Uint32Array
  | BigUint64Array;

export interface Tensor<A = TensorArray> {
  tensorId: string;
  dtype: DType;
  /** In elements (complex types count complex elements; `array` interleaves real, imaginary). */
  shape: number[];
  strides: number[] | null;
  meta: Record<string, unknown>;
  nbytes: number;
  /** True when `buffer` is a SharedArrayBuffer (the page is cross-origin isolated). */
  shared: boolean;
  buffer: ArrayBuffer | SharedArrayBuffer;
  /** float16: Float16Array where the platform has it, else raw Uint16Array bits; bfloat16: raw Uint16Array; bool: Uint8Array. */
  array: A;
}

export interface TensorProgress {
  chunks: number;
  chunksReceived: number;
  nbytes: number;
  bytesReceived: number;
  fraction: number;
}

export interface TensorAssemblerOptions {
  /** 'auto' (default): a SharedArrayBuffer only when globalThis.crossOriginIsolated. */
  shared?: boolean | 'auto';
  /** Largest tensor accepted, in bytes (default 1 GiB). */
  maxBytes?: number;
  /** Tensors in flight at once (default 64). */
  maxPending?: number;
}

export declare const DTYPES: Readonly<Record<DType, { array: { new (buffer: ArrayBufferLike, byteOffset?: number, length?: number): TensorArray }; itemsize: number; scalar: number }>>;
export declare function useSharedMemory(shared?: boolean | 'auto'): boolean;

export declare class TensorAssembler {
  constructor(options?: TensorAssemblerOptions);
  /** Feed any event: returns the tensor on its tensor.end, else null. Throws TensorError. */
  push(event: { kind: string; [field: string]: unknown }): Tensor | null;
  header(event: Omit<TensorHeaderEvent, 'kind' | 'seq'>): void;
  chunk(event: Pick<TensorChunkEvent, 'tensor_id' | 'index' | 'data'> & { offset?: number }): void;
  end(event: Pick<TensorEndEvent, 'tensor_id' | 'checksum'>): Tensor | null;
  progress(tensorId: string): TensorProgress | null;
  pending(): string[];
  /** The stream ended: every tensor in flight is truncated (returned, and forgotten). */
  finish(): TensorTruncatedError[];
}

export declare function crc32(data: Uint8Array | ArrayBuffer | ArrayBufferView | string, crc?: number): number;
export declare function crc32Hex(data: Uint8Array | ArrayBuffer | ArrayBufferView | string): string;
export declare function decodeBase64(text: string): Uint8Array;
export declare function decodeBase64Into(text: string, target: Uint8Array, offset?: number): number;
export declare function encodeBase64(bytes: Uint8Array): string;

export declare const CHUNK_FRAME_VERSION: 1;
export declare function decodeChunkFrame(frame: ArrayBuffer | Uint8Array): { stream: string; event: TensorChunkEvent & { data: Uint8Array } };
export declare function encodeChunkFrame(frame: { stream: string; seq: number; tensor_id: string; index: number; offset: number; data: Uint8Array }): Uint8Array;

// ---------------------------------------------------------------- parsers

export type SSERecord =
  | { type: 'event'; event: string; data: string; id: string }
  | { type: 'retry'; retry: number }
  | { type: 'comment'; text: string };

/** Incremental WHATWG SSE parser: any split of the input gives the same records. */
export declare class SSEParser {
  constructor(options?: { maxLineLength?: number });
  readonly lastEventId: string;
  maxLineLength: number;
  feed(chunk: string | Uint8Array): SSERecord[];
  /** End of input: a pending incomplete event is discarded. */
  end(): [];
}

export declare class NDJSONParser {
  constructor(options?: { maxLineLength?: number });
  maxLineLength: number;
  feed(chunk: string | Uint8Array): unknown[];
  /** End of input: discards an unterminated line, returns its length. */
  end(): number;
}

// ---------------------------------------------------------------- resume state machine

export declare const State: Readonly<{
  IDLE: 'idle';
  CONNECTING: 'connecting';
  CONNECTED: 'connected';
  RECONNECTING: 'reconnecting';
  ERROR: 'error';
  CLOSED: 'closed';
}>;
export declare const TERMINAL_KINDS: readonly ['done', 'error', 'cancelled'];

export interface BackoffOptions {
  /** First window in ms (default 500); the server's SSE `retry:` replaces it. */
  baseMs?: number;
  /** Largest window in ms (default 30000). */
  capMs?: number;
  /** Failed attempts in a row before giving up (default 10). */
  maxAttempts?: number;
}

export declare const DEFAULT_BACKOFF: Readonly<Required<BackoffOptions>>;
/** Full jitter: uniform in [0, min(cap, base * 2^(attempt-1))). */
export declare function backoffDelay(attempt: number, options?: { baseMs?: number; capMs?: number }, random?: () => number): number;

export interface ResumeMachineOptions {
  after?: number;
  backoff?: BackoffOptions;
  heartbeatMs?: number;
  random?: () => number;
  onState?: (state: ConnectionState, prev: ConnectionState) => void;
}

/** Pure reconnect/resume logic: no I/O, no timers (connection.js drives it). */
export declare class ResumeMachine {
  constructor(options?: ResumeMachineOptions);
  readonly state: ConnectionState;
  readonly lastSeq: number;
  readonly attempt: number;
  readonly epoch: string | null;
  readonly retryMs: number | null;
  readonly terminal: TerminalEvent | null;
  readonly duplicates: number;
  readonly lastActivity: number;
  readonly done: boolean;
  heartbeatMs: number;
  connect(now: number): { after: number };
  opened(frame: Omit<OpenEvent, 'kind'>, now: number): GapEvent[];
  received(now: number): void;
  retry(ms: number): void;
  event(event: SequencedEvent, now: number): Array<SequencedEvent | GapEvent>;
  disconnected(err: Error | null): { wait: number } | { fail: Error } | null;
  deadline(): number | null;
  expired(now: number): boolean;
  close(): void;
  fail(): void;
}

// ---------------------------------------------------------------- time, storage, transports

export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(id: unknown): void;
}

export declare const systemClock: Clock;

/** A clock for tests: time moves only with advance(ms), which runs the timers that fall due. */
export declare class ManualClock implements Clock {
  constructor(start?: number);
  readonly pending: number;
  now(): number;
  setTimeout(fn: () => void, ms: number): number;
  clearTimeout(id: unknown): void;
  advance(ms: number): void;
}

export interface StorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

export interface CheckpointOptions {
  /** Default 'tokenwire:stream'; use one key per concurrent stream. */
  key?: string;
  /** Default sessionStorage where available (absent in node: no checkpointing). */
  storage?: StorageLike | null;
  /** Save the text too (default true), so a reload resumes after the saved seq. */
  text?: boolean;
  /** At most one write per interval (default 250 ms). */
  intervalMs?: number;
}

export interface SavedCheckpoint {
  stream: string;
  lastSeq: number;
  epoch: string | null;
  text?: string;
  savedAt: number;
}

export declare const DEFAULT_KEY: 'tokenwire:stream';
export declare function readCheckpoint(key?: string, storage?: StorageLike | null): SavedCheckpoint | null;

export declare class Checkpoint {
  constructor(options: CheckpointOptions & { clock: Clock; snapshot: () => { stream: string | null; lastSeq: number; text: string; epoch: string | null } });
  readonly enabled: boolean;
  load(): SavedCheckpoint | null;
  touch(): void;
  flush(): void;
  clear(): void;
  stop(): void;
}

export interface HttpOptions {
  /** '' (default) = same origin. */
  baseUrl?: string;
  fetch?: typeof fetch;
  /** Extra request headers, or a function (may be async) returning them, e.g. for a fresh token. */
  headers?: Record<string, string> | (() => Record<string, string> | Promise<Record<string, string>>);
  credentials?: RequestCredentials;
  /**
   * A stream's read_token (or control_token, which also stops it): sent as
   * `Authorization: Bearer`, or `?token=` where headers cannot go (EventSource, WebSocket).
   */
  token?: string;
  /** Called for a new token when the server answers 401 `token_expired`; the request is sent again. */
  refreshToken?: () => string | Promise<string>;
}

export declare class Http {
  constructor(options?: HttpOptions);
  readonly baseUrl: string;
  readonly canFetch: boolean;
  /** The current stream token (replaced by a refresh). */
  token: string | null;
  /** Get a new token after `rejected` expired; false without refreshToken. */
  refresh(rejected: string | null): Promise<boolean>;
  tokenQuery(): { token: string } | null;
  url(path: string, query?: Record<string, unknown> | null): string;
  wsUrl(path: string): string;
  fetch(url: string, init?: { method?: string; headers?: Record<string, string>; body?: BodyInit; signal?: AbortSignal }): Promise<Response>;
  json(method: string, path: string, body?: unknown, options?: { signal?: AbortSignal }): Promise<any>;
  createStream(request: StartRequest, options?: { signal?: AbortSignal }): Promise<StreamInfo>;
  cancelStream(id: string): Promise<unknown>;
  status(id: string): Promise<StreamStatusInfo>;
}

/** What a transport reports to (implemented by the connection driver). */
export interface TransportSink {
  started(info: StreamInfo): void;
  bytes(): void;
  open(frame: Omit<OpenEvent, 'kind'>): void;
  heartbeat(frame: unknown): void;
  event(event: SequencedEvent): void;
  retry(ms: number): void;
  end(err: Error | null): void;
  wait(): Promise<void> | null;
}

/** One interface for SSE, WebSocket, NDJSON (and your own). */
export interface Transport {
  connect(target: { stream?: string; after?: number; request?: StartRequest | null; coalesceMs?: number | null }, sink: TransportSink): { close(): void };
  cancel(streamId: string): Promise<unknown>;
  close(): void;
  observesHeartbeats?: boolean;
}

export declare class SSETransport implements Transport {
  constructor(http: Http, options?: { maxLineLength?: number });
  connect(target: { stream?: string; after?: number; request?: StartRequest | null; coalesceMs?: number | null }, sink: TransportSink): { close(): void };
  cancel(streamId: string): Promise<unknown>;
  close(): void;
  observesHeartbeats: boolean;
}
export declare class NDJSONTransport implements Transport {
  constructor(http: Http, options?: { maxLineLength?: number });
  connect(target: { stream?: string; after?: number; request?: StartRequest | null; coalesceMs?: number | null }, sink: TransportSink): { close(): void };
  cancel(streamId: string): Promise<unknown>;
  close(): void;
  observesHeartbeats: boolean;
}
export declare class EventSourceTransport implements Transport {
  constructor(http: Http, options?: { EventSource?: typeof EventSource; eventNames?: string[]; withCredentials?: boolean });
  connect(target: { stream?: string; after?: number; request?: StartRequest | null; coalesceMs?: number | null }, sink: TransportSink): { close(): void };
  cancel(streamId: string): Promise<unknown>;
  close(): void;
  observesHeartbeats: false;
}
export declare class WebSocketTransport implements Transport {
  constructor(http: Http, options?: { WebSocket?: unknown; path?: string });
  connect(target: { stream?: string; after?: number; request?: StartRequest | null; coalesceMs?: number | null }, sink: TransportSink): { close(): void };
  cancel(streamId: string): Promise<unknown>;
  close(): void;
  observesHeartbeats: boolean;
}

export declare const TRANSPORTS: Readonly<Record<TransportName, (http: Http, options: ClientOptions) => Transport>>;
export declare function createTransport(kind: TransportName | Transport, http: Http, options?: ClientOptions): Transport;

// ---------------------------------------------------------------- client

/** The POST /v1/streams body. */
export interface StartRequest {
  model?: string;
  prompt?: string;
  messages?: Array<{ role: string; content: string }>;
  max_tokens?: number;
  temperature?: number;
  top_p?: number;
  stop?: string | string[];
  seed?: number;
  /** scripted model only */
  delay_ms?: number;
  [field: string]: unknown;
}

export interface StreamInfo {
  id: string;
  status?: string;
  model?: string;
  events_url?: string;
  ndjson_url?: string;
  status_url?: string;
  [field: string]: unknown;
}

export interface StreamStatusInfo {
  status: string;
  model?: string;
  last_seq: number;
  subscribers?: number;
  [field: string]: unknown;
}

export interface Stats {
  /** From start() to the first token, in ms (null for subscribe/resume). */
  ttftMs: number | null;
  /** Tokens received (a merged frame counts from_seq..seq). */
  tokens: number;
  /** Tokens per second after the first token. */
  tokensPerSec: number | null;
  elapsedMs: number;
  /** The latest `metrics` event's fields, as the server measured them. */
  server: Record<string, unknown> | null;
}

export interface StreamResult {
  status: StreamStatus;
  text: string;
  event: StreamEvent | null;
  error: TokenwireError | null;
  lastSeq: number;
  stats: Stats;
}

export interface StreamCallbacks {
  onEvent?: (event: StreamEvent) => void;
  onToken?: (text: string, event: TokenEvent) => void;
  onProgress?: (event: StreamProgressEvent) => void;
  onOpen?: (event: OpenEvent) => void;
  onGap?: (event: GapEvent) => void;
  onTensor?: (tensor: Tensor, event: TensorReadyEvent) => void;
  onDone?: (event: DoneEvent) => void;
  /** A StreamFailedError (the terminal error event) or a client failure (HTTPStatusError, ReconnectExhaustedError, StreamGapError…). */
  onError?: (error: TokenwireError) => void;
  onState?: (state: ConnectionState, prev: ConnectionState) => void;
  onEnd?: (result: StreamResult) => void;
}

export interface HandleOptions extends StreamCallbacks {
  /** abort() = cancel() (a true stop). */
  signal?: AbortSignal;
  checkpoint?: boolean | string | CheckpointOptions;
  /** Reassemble tensors into `tensor` events (default true). */
  tensors?: boolean;
  tensorOptions?: TensorAssemblerOptions;
  /** 'event' (default): lost history is a `gap` event; 'error': it fails the handle with StreamGapError. */
  gapPolicy?: 'event' | 'error';
  /** Events queued in an async iterator before fetch transports stop reading (default 256). */
  highWaterMark?: number;
  /** Events queued before an iterator that cannot keep up fails (default 100000). */
  maxQueue?: number;
}

export interface SubscribeOptions extends HandleOptions {
  /** Resume after this seq (default 0: from the start). */
  after?: number;
  /**
   * Ask the server for at most one write of events per this many ms, 0..1000
   * (`?coalesce_ms=` on SSE and NDJSON, `coalesce_ms` in the WebSocket
   * `subscribe`); absent: the server's default (docs/protocol.md, "Coalescing").
   */
  coalesceMs?: number;
}

export interface ClientOptions extends HttpOptions {
  /** Default 'sse' (fetch streaming, EventSource where fetch cannot stream). */
  transport?: TransportName | Transport;
  WebSocket?: unknown;
  EventSource?: unknown;
  /** More SSE event names for the EventSource fallback to listen to. */
  eventNames?: string[];
  withCredentials?: boolean;
  maxLineLength?: number;
  /**
   * Send Last-Event-ID on SSE resumes as well as `?after=` (default true).
   * Cross-origin it is not CORS-safelisted: the server must allow it, or set false.
   */
  resumeHeader?: boolean;
  backoff?: BackoffOptions;
  /** The server's heartbeat interval (default 15000); silence for twice this reconnects. */
  heartbeatMs?: number;
  random?: () => number;
  clock?: Clock;
  /** Default true (sessionStorage under 'tokenwire:stream' where available). */
  checkpoint?: boolean | string | CheckpointOptions;
  /** How long cancel() waits for the server's `cancelled` before ending locally (default 5000). */
  cancelTimeoutMs?: number;
  tensors?: boolean;
  tensorOptions?: TensorAssemblerOptions;
  gapPolicy?: 'event' | 'error';
  highWaterMark?: number;
  maxQueue?: number;
}

export interface HandleEventMap {
  token: (event: TokenEvent) => void;
  progress: (event: StreamProgressEvent) => void;
  metrics: (event: MetricsEvent) => void;
  data: (event: DataEvent) => void;
  'tensor.header': (event: TensorHeaderEvent) => void;
  'tensor.chunk': (event: TensorChunkEvent) => void;
  'tensor.end': (event: TensorEndEvent) => void;
  tensor: (event: TensorReadyEvent) => void;
  'tensor.error': (event: TensorErrorEvent) => void;
  done: (event: DoneEvent) => void;
  cancelled: (event: CancelledEvent) => void;
  open: (event: OpenEvent) => void;
  gap: (event: GapEvent) => void;
  /** Every event, including the terminal `error` event. */
  event: (event: StreamEvent) => void;
  /** Error objects: StreamFailedError for the terminal error event, or the client failure. */
  error: (error: TokenwireError) => void;
  state: (state: ConnectionState, prev: ConnectionState) => void;
  end: (result: StreamResult) => void;
}

/**
 * One stream. Iterate it (`for await (const ev of handle)`: events from the
 * moment the iterator is made; it ends after the terminal event or close(),
 * and throws when the client fails), or listen with on().
 */
export declare class StreamHandle implements AsyncIterable<StreamEvent> {
  readonly client: TokenwireClient;
  /** null until a start() is answered. */
  readonly id: string | null;
  readonly status: StreamStatus;
  readonly state: ConnectionState;
  readonly text: string;
  readonly lastSeq: number;
  readonly epoch: string | null;
  readonly error: TokenwireError | null;
  /** The terminal event, once there is one. */
  readonly result: TerminalEvent | null;
  readonly gaps: GapEvent[];
  readonly stats: Stats;
  readonly resumed: boolean;
  readonly finished: boolean;
  /** The stream id once known; rejects if the start failed. */
  readonly ready: Promise<string>;
  /** Resolves when the handle ends, for any reason; never rejects. */
  readonly done: Promise<StreamResult>;
  on<K extends keyof HandleEventMap>(name: K, listener: HandleEventMap[K]): () => void;
  off<K extends keyof HandleEventMap>(name: K, listener: HandleEventMap[K]): void;
  /** Stop the stream for real: HTTP DELETE or the WebSocket `cancel` op. */
  cancel(reason?: string): Promise<void>;
  /** Leave: stop listening; the stream runs on for the server's grace period. */
  close(): void;
  tensorProgress(tensorId: string): TensorProgress | null;
  [Symbol.asyncIterator](): AsyncIterableIterator<StreamEvent>;
}

export declare class TokenwireClient {
  constructor(options?: ClientOptions);
  readonly options: ClientOptions;
  readonly clock: Clock;
  readonly http: Http;
  readonly transport: Transport;
  /** Start a generation (POST /v1/streams or the WebSocket `start` op) and follow it. */
  start(request: StartRequest, options?: HandleOptions): StreamHandle;
  /** Follow an existing stream, optionally after a seq. */
  subscribe(streamId: string, options?: SubscribeOptions): StreamHandle;
  /** Resume the checkpointed stream (after a reload); null when nothing is saved. */
  resume(key?: string, options?: HandleOptions): StreamHandle | null;
  static resume(key?: string, options?: ClientOptions & HandleOptions): StreamHandle | null;
  static readCheckpoint(key?: string, storage?: StorageLike | null): SavedCheckpoint | null;
  status(streamId: string): Promise<StreamStatusInfo>;
  cancel(streamId: string): Promise<unknown>;
  /** Leave every stream this client follows and release the transport. */
  close(): void;
}

// ---------------------------------------------------------------- UI state

export interface Snapshot {
  streamId: string | null;
  status: StreamStatus | 'idle';
  state: ConnectionState;
  text: string;
  lastSeq: number;
  stats: Stats;
  error: TokenwireError | null;
  result: TerminalEvent | null;
  /** The latest progress event. */
  progress: StreamProgressEvent | null;
  /** The latest `data` event's payload. */
  data: unknown;
  gaps: readonly GapEvent[];
  tensors: Readonly<Record<string, Tensor>>;
  tensorProgress: Readonly<Record<string, TensorProgress | null>>;
  tensorErrors: Readonly<Record<string, TensorError>>;
  latestTensor: Tensor | null;
}

export declare const INITIAL_SNAPSHOT: Readonly<Snapshot>;

/** A StreamHandle as an external store of immutable snapshots (fits useSyncExternalStore). */
export declare class StreamStore {
  constructor();
  readonly handle: StreamHandle | null;
  subscribe(listener: (snapshot: Snapshot) => void): () => void;
  getSnapshot(): Snapshot;
  getServerSnapshot(): Snapshot;
  attach(handle: StreamHandle): StreamHandle;
  detach(): void;
  reset(): void;
}

/** Renders a stream's text into a DOM element; status on data-status / data-state / data-gap. */
export declare class TokenStreamView {
  constructor(element: Element, options?: ClientOptions & { client?: TokenwireClient; onRender?: (view: TokenStreamView) => void });
  readonly element: Element;
  readonly client: TokenwireClient;
  readonly handle: StreamHandle | null;
  start(request: StartRequest, options?: HandleOptions): StreamHandle;
  subscribe(streamId: string, options?: SubscribeOptions): StreamHandle;
  resume(key?: string, options?: HandleOptions): StreamHandle | null;
  attach(handle: StreamHandle): StreamHandle;
  cancel(): Promise<void>;
  detach(close?: boolean): void;
  destroy(): void;
}

/** The driver of one resumable subscription (ResumeMachine + transport + clock). */
export declare class Connection {
  constructor(options: {
    transport: Transport;
    clock: Clock;
    streamId?: string | null;
    request?: StartRequest | null;
    after?: number;
    machine?: Omit<ResumeMachineOptions, 'after' | 'onState'>;
    onStarted: (info: StreamInfo) => void;
    onEvent: (event: StreamEvent) => void;
    onState?: (state: ConnectionState, prev: ConnectionState) => void;
    onFail: (error: Error) => void;
    wait?: () => Promise<void> | null;
  });
  readonly machine: ResumeMachine;
  readonly state: ConnectionState;
  readonly lastSeq: number;
  readonly streamId: string | null;
  start(): void;
  close(): void;
  fail(): void;
}

// ---------------------------------------------------------------- errors

export declare class TokenwireError extends Error {
  /** Whether trying again can help (drives reconnects). */
  readonly retryable: boolean;
}
export declare class ClientError extends TokenwireError {}
export declare class HTTPStatusError extends ClientError {
  readonly status: number;
  /** The server's error.code, e.g. 'not_found', 'too_many_subscribers'. */
  readonly code: string;
  readonly detail: string;
  /** Set for a WebSocket error frame: the op's id and the stream it names. */
  readonly requestId?: string | number;
  readonly stream?: string;
}
export declare class AuthenticationError extends HTTPStatusError {}
export declare class StreamNotFoundError extends HTTPStatusError {}
export declare class RequestRejectedError extends HTTPStatusError {}
export declare class RateLimitedError extends HTTPStatusError {}
export declare class ServerUnavailableError extends HTTPStatusError {}
export interface StatusErrorOptions {
  method?: string;
  url?: string;
  requestId?: string | number;
  stream?: string;
}
export declare function statusError(status: number, code: string, message: string, options?: StatusErrorOptions): HTTPStatusError;
export declare function codeError(code: string, message: string, options?: StatusErrorOptions): HTTPStatusError;
export declare class TransportError extends ClientError {}
export declare class ProtocolError extends ClientError {}
export declare class ReconnectExhaustedError extends ClientError {
  readonly attempts: number;
  readonly lastSeq: number;
}
export declare class HeartbeatTimeoutError extends TransportError {
  readonly silentMs: number;
}
export declare class StreamFailedError extends ClientError {
  readonly code: string;
  readonly detail: string;
  readonly seq: number;
  readonly event: StreamErrorEvent;
}
export declare class StreamGapError extends ClientError {
  readonly fromSeq: number;
  readonly toSeq: number | null;
  readonly reason: string;
}
export declare class TensorError extends ClientError {
  readonly tensorId: string;
}
export declare class TensorTruncatedError extends TensorError {
  readonly received: number;
  readonly expected: number;
}
export declare class TensorChecksumError extends TensorError {
  readonly expected: string;
  readonly actual: string;
}

/** @deprecated the names before 0.1.0 */
export declare const HTTPError: typeof HTTPStatusError;
/** @deprecated a WebSocket error frame is now the HTTPStatusError its code maps to */
export declare const ServerError: typeof HTTPStatusError;
/** @deprecated */
export declare const NetworkError: typeof TransportError;
/** @deprecated */
export declare const ConnectionError: typeof ReconnectExhaustedError;
/** @deprecated */
export declare const HeartbeatTimeout: typeof HeartbeatTimeoutError;
/** @deprecated */
export declare const StreamError: typeof StreamFailedError;
/** @deprecated */
export declare const GapError: typeof StreamGapError;
