import type {
  ClientOptions,
  HandleOptions,
  Snapshot,
  StartRequest,
  StreamHandle,
  SubscribeOptions,
  Tensor,
  TokenwireClient,
} from './tokenwire.js';

export interface UseTokenStreamOptions extends ClientOptions, SubscribeOptions {
  /** Use this client (else the hook makes one from these options). */
  client?: TokenwireClient;
  /** Start this generation on mount (changing it starts another). */
  request?: StartRequest;
  /** Follow this stream on mount. */
  streamId?: string;
  /** Resume the checkpoint on mount (true: the default key). */
  resume?: boolean | string;
  /** false: open nothing automatically. */
  enabled?: boolean;
  /** Stop the stream on unmount instead of leaving it. */
  cancelOnUnmount?: boolean;
}

export interface TokenStreamState extends Snapshot {
  handle: StreamHandle | null;
  start(request: StartRequest, options?: HandleOptions): StreamHandle;
  subscribe(streamId: string, options?: SubscribeOptions): StreamHandle;
  resume(key?: string, options?: HandleOptions): StreamHandle | null;
  /** A true stop (HTTP DELETE / WS cancel). */
  cancel(): Promise<void>;
  /** Leave the stream. */
  close(): void;
  /** Leave and go back to the initial state. */
  reset(): void;
}

export declare function useTokenStream(options?: UseTokenStreamOptions): TokenStreamState;

export interface TensorStreamState extends TokenStreamState {
  /** The latest finished tensor. */
  tensor: Tensor | null;
}

export declare function useTensorStream(options?: UseTokenStreamOptions): TensorStreamState;
