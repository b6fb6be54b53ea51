import type { ClientOptions, HandleOptions, Snapshot, StartRequest, StreamHandle, SubscribeOptions, TokenwireClient } from './tokenwire.js';

export interface TokenStreamOptions extends ClientOptions, SubscribeOptions {
  client?: TokenwireClient;
  /** Start this generation with the first subscriber. */
  request?: StartRequest;
  /** Follow this stream with the first subscriber. */
  streamId?: string;
  /** Resume the checkpoint with the first subscriber (true: the default key). */
  resume?: boolean | string;
  /** Stop the stream when the last subscriber leaves, instead of leaving it. */
  cancelOnUnmount?: boolean;
}

/** A Svelte readable store (the store contract) with stream controls. */
export interface TokenStreamStore {
  subscribe(run: (value: Snapshot) => void, invalidate?: () => void): () => void;
  start(request: StartRequest, options?: HandleOptions): StreamHandle;
  /** Follow a stream by id (`subscribe` is the store contract's). */
  follow(streamId: string, options?: SubscribeOptions): StreamHandle;
  resume(key?: string, options?: HandleOptions): StreamHandle | null;
  cancel(): Promise<void>;
  close(): void;
  readonly handle: StreamHandle | null;
  /** The current snapshot, without subscribing. */
  readonly value: Snapshot;
}

export declare function tokenStream(options?: TokenStreamOptions): TokenStreamStore;
export declare function tensorStream(options?: TokenStreamOptions): TokenStreamStore;
