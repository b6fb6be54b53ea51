/**
 * React 19 hooks over a StreamStore, read with useSyncExternalStore (the
 * snapshot object changes only when the stream did, and server rendering
 * shows the initial snapshot: nothing streams during SSR).
 *
 *   const { text, status, start, cancel } = useTokenStream({ baseUrl: '' });
 *   <button onClick={() => start({ model: 'scripted', prompt })}>Ask</button>
 *
 * Given `request`, `streamId` or `resume` the hook opens the stream itself
 * and leaves it (close, or cancel with `cancelOnUnmount`) on unmount. React
 * StrictMode's mount-unmount-mount keeps the one stream: the leave is
 * deferred a tick and called off when the same stream is asked for again.
 */

import { useCallback, useEffect, useRef, useSyncExternalStore } from 'react';
import { StreamStore, TokenwireClient } from './tokenwire.js';

const CALLBACK_NAMES = ['onEvent', 'onToken', 'onProgress', 'onOpen', 'onGap', 'onTensor', 'onDone', 'onError', 'onState', 'onEnd'];

function keyOf(o) {
  if (o.enabled === false) return null;
  if (o.streamId) return `subscribe:${o.streamId}:${o.after ?? 0}`;
  if (o.request) return `start:${JSON.stringify(o.request)}`;
  if (o.resume) return `resume:${o.resume === true ? '' : o.resume}`;
  return null;
}

export function useTokenStream(options = {}) {
  const ref = useRef(null);
  if (ref.current === null) {
    ref.current = { store: new StreamStore(), client: null, handle: null, key: null, closeTimer: null, options };
  }
  const r = ref.current;
  const snapshot = useSyncExternalStore(r.store.subscribe, r.store.getSnapshot, r.store.getServerSnapshot);

  // Callbacks always reach the latest render's functions.
  useEffect(() => {
    r.options = options;
  });

  const open = useCallback((make) => {
    if (r.closeTimer !== null) {
      clearTimeout(r.closeTimer);
      r.closeTimer = null;
    }
    if (r.handle && !r.handle.finished) r.handle.close();
    const o = r.options;
    const client = o.client ?? (r.client ??= new TokenwireClient(o));
    const callbacks = {};
    for (const name of CALLBACK_NAMES) callbacks[name] = (...args) => r.options[name]?.(...args);
    const h = make(client, { ...o, ...callbacks });
    r.handle = h;
    if (h) r.store.attach(h);
    else r.store.reset();
    return h;
  }, []);

  const key = keyOf(options);
  useEffect(() => {
    if (key === null) return undefined;
    if (r.closeTimer !== null && r.key === key) {
      // StrictMode ran the effect again for the same stream: keep it.
      clearTimeout(r.closeTimer);
      r.closeTimer = null;
    } else {
      r.key = key;
      const o = r.options;
      open((c, ho) => {
        if (o.streamId) return c.subscribe(o.streamId, ho);
        if (o.request) return c.start(o.request, ho);
        return c.resume(o.resume === true ? undefined : o.resume, ho);
      });
    }
    return () => {
      r.closeTimer = setTimeout(() => {
        r.closeTimer = null;
        r.key = null;
        const h = r.handle;
        if (h && !h.finished) {
          if (r.options.cancelOnUnmount) h.cancel();
          else h.close();
        }
        if (r.client) {
          r.client.close();
          r.client = null;
        }
      }, 0);
    };
  }, [key, open]);

  const start = useCallback((request, o) => open((c, ho) => c.start(request, { ...ho, ...o })), [open]);
  const subscribe = useCallback((streamId, o) => open((c, ho) => c.subscribe(streamId, { ...ho, ...o })), [open]);
  const resume = useCallback((k, o) => open((c, ho) => c.resume(k, { ...ho, ...o })), [open]);
  const cancel = useCallback(() => (r.handle ? r.handle.cancel() : Promise.resolve()), []);
  const close = useCallback(() => {
    if (r.handle) r.handle.close();
  }, []);
  const reset = useCallback(() => {
    if (r.handle) r.handle.close();
    r.handle = null;
    r.store.reset();
  }, []);

  return { ...snapshot, handle: r.handle, start, subscribe, resume, cancel, close, reset };
}

/** useTokenStream for tensor streams: the same state, plus `tensor`, the latest finished tensor. */
export function useTensorStream(options = {}) {
  const s = useTokenStream({ ...options, tensors: true });
  return { ...s, tensor: s.latestTensor };
}
