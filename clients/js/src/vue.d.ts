import type { MaybeRefOrGetter, Ref, ShallowRef } from 'vue';
import type {
  ClientOptions,
  ConnectionState,
  GapEvent,
  HandleOptions,
  Snapshot,
  StartRequest,
  Stats,
  StreamHandle,
  StreamProgressEvent,
  SubscribeOptions,
  Tensor,
  TensorProgress,
  TerminalEvent,
  TokenwireClient,
  TokenwireError,
} from './tokenwire.js';

export interface UseTokenStreamOptions extends ClientOptions, Omit<SubscribeOptions, never> {
  client?: TokenwireClient;
  /** Start this generation at once. */
  request?: StartRequest;
  /** Follow this stream; a ref or getter switches streams when it changes. */
  streamId?: MaybeRefOrGetter<string | null | undefined>;
  /** Resume the checkpoint at once (true: the default key). */
  resume?: boolean | string;
  /** Stop the stream when the scope is disposed instead of leaving it. */
  cancelOnUnmount?: boolean;
}

export interface TokenStreamRefs {
  snapshot: ShallowRef<Snapshot>;
  text: Ref<string>;
  status: Ref<Snapshot['status']>;
  state: Ref<ConnectionState>;
  streamId: Ref<string | null>;
  error: ShallowRef<TokenwireError | null>;
  stats: ShallowRef<Stats>;
  progress: ShallowRef<StreamProgressEvent | null>;
  data: ShallowRef<unknown>;
  gaps: ShallowRef<readonly GapEvent[]>;
  result: ShallowRef<TerminalEvent | null>;
  tensors: ShallowRef<Readonly<Record<string, Tensor>>>;
  tensorProgress: ShallowRef<Readonly<Record<string, TensorProgress | null>>>;
  latestTensor: ShallowRef<Tensor | null>;
  start(request: StartRequest, options?: HandleOptions): StreamHandle;
  subscribe(streamId: string, options?: SubscribeOptions): StreamHandle;
  resume(key?: string, options?: HandleOptions): StreamHandle | null;
  cancel(): Promise<void>;
  close(): void;
  getHandle(): StreamHandle | null;
}

export declare function useTokenStream(options?: UseTokenStreamOptions): TokenStreamRefs;
export declare function useTensorStream(options?: UseTokenStreamOptions): TokenStreamRefs;
