/**
 * Vue 3 composables: a StreamStore mirrored into refs. `text`, `status` and
 * `state` are plain refs; the rest are shallowRefs (replaced, never mutated,
 * so Vue does not deep-proxy a tensor's typed array). Inside a component or
 * an effect scope the stream is left when the scope is disposed.
 *
 *   const { text, status, start, cancel } = useTokenStream({ baseUrl: '' });
 *
 * `streamId` may be a ref or a getter: the composable follows whichever
 * stream it names.
 */

import { getCurrentScope, isRef, onScopeDispose, ref, shallowRef, watch } from 'vue';
import { StreamStore, TokenwireClient } from './tokenwire.js';

export function useTokenStream(options = {}) {
  const store = new StreamStore();
  const first = store.getSnapshot();
  const snapshot = shallowRef(first);
  const text = ref(first.text);
  const status = ref(first.status);
  const state = ref(first.state);
  const streamId = ref(first.streamId);
  const error = shallowRef(first.error);
  const stats = shallowRef(first.stats);
  const progress = shallowRef(first.progress);
  const data = shallowRef(first.data);
  const gaps = shallowRef(first.gaps);
  const result = shallowRef(first.result);
  const tensors = shallowRef(first.tensors);
  const tensorProgress = shallowRef(first.tensorProgress);
  const latestTensor = shallowRef(first.latestTensor);

  store.subscribe((s) => {
    snapshot.value = s;
    text.value = s.text;
    status.value = s.status;
    state.value = s.state;
    streamId.value = s.streamId;
    error.value = s.error;
    stats.value = s.stats;
    progress.value = s.progress;
    data.value = s.data;
    gaps.value = s.gaps;
    result.value = s.result;
    tensors.value = s.tensors;
    tensorProgress.value = s.tensorProgress;
    latestTensor.value = s.latestTensor;
  });

  let client = options.client ?? null;
  const ownClient = !client;
  let handle = null;
  const getClient = () => (client ??= new TokenwireClient(options));

  function open(make) {
    if (handle && !handle.finished) handle.close();
    handle = make(getClient());
    if (handle) store.attach(handle);
    else store.reset();
    return handle;
  }

  const start = (request, o) => open((c) => c.start(request, { ...options, ...o }));
  const subscribe = (id, o) => open((c) => c.subscribe(id, { ...options, ...o }));
  const resume = (key, o) => open((c) => c.resume(key, { ...options, ...o }));
  const cancel = () => (handle ? handle.cancel() : Promise.resolve());
  const close = () => {
    if (handle) handle.close();
  };

  const id = options.streamId;
  if (isRef(id) || typeof id === 'function') {
    watch(
      id,
      (value) => {
        if (value) subscribe(value);
        else close();
      },
      { immediate: true },
    );
  } else if (id) {
    subscribe(id);
  } else if (options.request) {
    start(options.request);
  } else if (options.resume) {
    resume(options.resume === true ? undefined : options.resume);
  }

  if (getCurrentScope()) {
    onScopeDispose(() => {
      if (handle && !handle.finished) {
        if (options.cancelOnUnmount) handle.cancel();
        else handle.close();
      }
      if (ownClient && client) client.close();
    });
  }

  return {
    snapshot,
    text,
    status,
    state,
    streamId,
    error,
    stats,
    progress,
    data,
    gaps,
    result,
    tensors,
    tensorProgress,
    latestTensor,
    start,
    subscribe,
    resume,
    cancel,
    close,
    getHandle: () => handle,
  };
}

/** useTokenStream for tensor streams (`tensors`, `tensorProgress`, `latestTensor`). */
export function useTensorStream(options = {}) {
  return useTokenStream({ ...options, tensors: true });
}
