/**
 * StreamStore: a StreamHandle as an external store of immutable snapshots,
 * the one thing every UI adapter needs. `subscribe(listener) -> unsubscribe`
 * and `getSnapshot()` fit React's useSyncExternalStore as they are (the
 * snapshot object changes only when something changed); Vue and Svelte
 * adapters wrap the same store.
 */

const INITIAL_STATS = Object.freeze({ ttftMs: null, tokens: 0, tokensPerSec: null, elapsedMs: 0, server: null });

export const INITIAL_SNAPSHOT = Object.freeze({
  streamId: null,
  status: 'idle',
  state: 'idle',
  text: '',
  lastSeq: 0,
  stats: INITIAL_STATS,
  error: null,
  result: null,
  progress: null,
  data: undefined,
  gaps: Object.freeze([]),
  tensors: Object.freeze({}),
  tensorProgress: Object.freeze({}),
  tensorErrors: Object.freeze({}),
  latestTensor: null,
});

export class StreamStore {
  constructor() {
    this._snapshot = INITIAL_SNAPSHOT;
    this._listeners = new Set();
    this._handle = null;
    this._offs = [];
    // Bound once: React compares `subscribe` by identity.
    this.subscribe = this.subscribe.bind(this);
    this.getSnapshot = this.getSnapshot.bind(this);
    this.getServerSnapshot = this.getServerSnapshot.bind(this);
  }

  subscribe(listener) {
    this._listeners.add(listener);
    return () => this._listeners.delete(listener);
  }

  getSnapshot() {
    return this._snapshot;
  }

  /** What a server render shows: nothing streams during SSR. */
  getServerSnapshot() {
    return INITIAL_SNAPSHOT;
  }

  get handle() {
    return this._handle;
  }

  /** Follow a handle (replacing the previous one, which is not closed here). */
  attach(handle) {
    this.detach();
    this._handle = handle;
    this._set({ ...INITIAL_SNAPSHOT, ...this._fromHandle(handle), error: handle.error, result: handle.result });
    this._offs = [
      handle.on('event', (ev) => this._event(handle, ev)),
      handle.on('state', (state) => this._patch({ state })),
      handle.on('error', (error) => this._patch({ ...this._fromHandle(handle), error })),
      handle.on('end', () => this._patch(this._fromHandle(handle))),
    ];
    return handle;
  }

  detach() {
    for (const off of this._offs) off();
    this._offs = [];
    this._handle = null;
  }

  /** Detach and go back to the initial snapshot. */
  reset() {
    this.detach();
    this._set(INITIAL_SNAPSHOT);
  }

  _fromHandle(h) {
    return { streamId: h.id, status: h.status, state: h.state, text: h.text, lastSeq: h.lastSeq, stats: h.stats };
  }

  _event(h, ev) {
    const s = this._snapshot;
    const patch = this._fromHandle(h);
    const id = ev.tensor_id;
    switch (ev.kind) {
      case 'progress':
        patch.progress = ev;
        break;
      case 'data':
        patch.data = ev.data;
        break;
      case 'gap':
        patch.gaps = [...s.gaps, ev];
        break;
      case 'tensor.header':
      case 'tensor.chunk':
        patch.tensorProgress = { ...s.tensorProgress, [id]: h.tensorProgress(id) };
        break;
      case 'tensor': {
        const { [id]: _, ...rest } = s.tensorProgress;
        patch.tensorProgress = rest;
        patch.tensors = { ...s.tensors, [id]: ev.tensor };
        patch.latestTensor = ev.tensor;
        break;
      }
      case 'tensor.error': {
        const { [id]: _, ...rest } = s.tensorProgress;
        patch.tensorProgress = rest;
        patch.tensorErrors = { ...s.tensorErrors, [id]: ev.error };
        break;
      }
      case 'done':
      case 'error':
      case 'cancelled':
        patch.result = ev;
        break;
      default:
        break;
    }
    this._patch(patch);
  }

  _patch(patch) {
    this._set({ ...this._snapshot, ...patch });
  }

  _set(snapshot) {
    this._snapshot = snapshot;
    for (const listener of [...this._listeners]) listener(snapshot);
  }
}
