/**
 * Svelte stores, by the store contract alone (no svelte import):
 * `subscribe(run)` calls `run` at once with the current snapshot and on every
 * change, and returns the unsubscribe function.
 *
 *   const stream = tokenStream({ baseUrl: '' });
 *   stream.start({ model: 'scripted', prompt });
 *   {$stream.text} {$stream.status}
 *
 * Given `request`, `streamId` or `resume`, the stream opens with the first
 * subscriber and is left (or cancelled, with `cancelOnUnmount`) when the last
 * one unsubscribes, like a Svelte `readable` with a start function. Following
 * another stream by id is `follow(id)`: `subscribe` belongs to the contract.
 */

import { StreamStore, TokenwireClient } from './tokenwire.js';

export function tokenStream(options = {}) {
  const store = new StreamStore();
  let client = options.client ?? null;
  const ownClient = !client;
  let handle = null;
  let subscribers = 0;
  const getClient = () => (client ??= new TokenwireClient(options));

  function open(make) {
    if (handle && !handle.finished) handle.close();
    handle = make(getClient());
    if (handle) store.attach(handle);
    else store.reset();
    return handle;
  }

  const start = (request, o) => open((c) => c.start(request, { ...options, ...o }));
  const follow = (id, o) => open((c) => c.subscribe(id, { ...options, ...o }));
  const resume = (key, o) => open((c) => c.resume(key, { ...options, ...o }));

  function autostart() {
    if (options.streamId) follow(options.streamId, { after: options.after });
    else if (options.request) start(options.request);
    else if (options.resume) resume(options.resume === true ? undefined : options.resume);
  }

  function stop() {
    if (handle && !handle.finished) {
      if (options.cancelOnUnmount) handle.cancel();
      else handle.close();
    }
    if (ownClient && client) {
      client.close();
      client = null;
    }
  }

  return {
    subscribe(run) {
      run(store.getSnapshot());
      const off = store.subscribe(run);
      if (subscribers++ === 0) autostart();
      let subscribed = true;
      return () => {
        if (!subscribed) return;
        subscribed = false;
        off();
        if (--subscribers === 0) stop();
      };
    },
    start,
    follow,
    resume,
    cancel: () => (handle ? handle.cancel() : Promise.resolve()),
    close: () => {
      if (handle) handle.close();
    },
    get handle() {
      return handle;
    },
    get value() {
      return store.getSnapshot();
    },
  };
}

/** tokenStream for tensor streams (`tensors`, `tensorProgress`, `latestTensor` in the value). */
export function tensorStream(options = {}) {
  return tokenStream({ ...options, tensors: true });
}
