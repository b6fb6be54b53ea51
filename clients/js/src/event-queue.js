/**
 * The async iterators of a StreamHandle: one bounded queue per iterator, and
 * backpressure for the transports that can pause (fetch streaming): past
 * `highWaterMark` queued events, wait() hands out a promise that resolves
 * once every queue is back under half of it. A transport that cannot pause
 * (WebSocket, EventSource) may still outrun a consumer: past `maxQueue` that
 * iterator fails loudly rather than growing without bound.
 */

import { TokenwireError } from './errors.js';

export class EventQueues {
  constructor({ highWaterMark = 256, maxQueue = 100_000 } = {}) {
    this.highWaterMark = highWaterMark;
    this.maxQueue = maxQueue;
    this._queues = new Set();
    this._drain = null;
    this._closed = false;
    this._error = null;
  }

  /** A new async iterator, seeing events pushed from now on. */
  iterator() {
    const q = { items: [], head: 0, wake: null, error: this._error, done: this._closed };
    if (!this._closed) this._queues.add(q);
    const settle = () => {
      this._queues.delete(q);
      q.done = true;
      this._relieve();
    };
    return {
      next: () => {
        if (q.head < q.items.length) {
          const value = q.items[q.head++];
          if (q.head > 1024 && q.head * 2 > q.items.length) {
            q.items = q.items.slice(q.head);
            q.head = 0;
          }
          this._relieve();
          return Promise.resolve({ value, done: false });
        }
        if (q.error) {
          const err = q.error;
          q.error = null;
          settle();
          return Promise.reject(err);
        }
        if (q.done) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve, reject) => (q.wake = { resolve, reject }));
      },
      return: () => {
        settle();
        const w = q.wake;
        q.wake = null;
        if (w) w.resolve({ value: undefined, done: true });
        return Promise.resolve({ value: undefined, done: true });
      },
      [Symbol.asyncIterator]() {
        return this;
      },
    };
  }

  push(value) {
    for (const q of this._queues) {
      if (q.wake) {
        const w = q.wake;
        q.wake = null;
        w.resolve({ value, done: false });
      } else if (q.items.length - q.head >= this.maxQueue) {
        q.error = new TokenwireError(`async iterator fell ${this.maxQueue} events behind`);
        this._queues.delete(q);
      } else {
        q.items.push(value);
      }
    }
  }

  /** No more events: iterators finish what is queued, then end (or throw `error`). */
  close(error = null) {
    this._closed = true;
    this._error = error;
    for (const q of this._queues) {
      q.done = true;
      if (error) q.error = error;
      const w = q.wake;
      q.wake = null;
      if (!w) continue;
      // A waiting iterator has nothing queued.
      if (error) {
        q.error = null;
        w.reject(error);
      } else w.resolve({ value: undefined, done: true });
    }
    this._queues.clear();
    if (this._drain) this._drain.resolve();
    this._drain = null;
  }

  /** null, or a promise to await before reading more. */
  wait() {
    if (this._backlog() <= this.highWaterMark) return null;
    if (!this._drain) {
      let resolve;
      const promise = new Promise((r) => (resolve = r));
      this._drain = { promise, resolve };
    }
    return this._drain.promise;
  }

  _relieve() {
    if (this._drain && this._backlog() <= this.highWaterMark / 2) {
      const d = this._drain;
      this._drain = null;
      d.resolve();
    }
  }

  _backlog() {
    let max = 0;
    for (const q of this._queues) max = Math.max(max, q.items.length - q.head);
    return max;
  }
}
