/**
 * Time, injectable: everything that waits (backoff, heartbeat deadline,
 * checkpoint throttling, cancel timeout) goes through a clock so tests can
 * drive it by hand.
 */

const perf = globalThis.performance;

export const systemClock = Object.freeze({
  now: perf && typeof perf.now === 'function' ? () => perf.now() : () => Date.now(),
  setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
  clearTimeout: (id) => globalThis.clearTimeout(id),
});

/** A clock that only moves when told to: `advance(ms)` runs the timers that fall due, in order. */
export class ManualClock {
  constructor(start = 0) {
    this._now = start;
    this._timers = new Map();
    this._nextId = 1;
  }

  now() {
    return this._now;
  }

  setTimeout(fn, ms) {
    const id = this._nextId++;
    this._timers.set(id, { at: this._now + Math.max(0, ms || 0), fn, id });
    return id;
  }

  clearTimeout(id) {
    this._timers.delete(id);
  }

  /** Number of timers waiting. */
  get pending() {
    return this._timers.size;
  }

  advance(ms) {
    const until = this._now + ms;
    for (;;) {
      let next = null;
      for (const t of this._timers.values()) if (t.at <= until && (next === null || t.at < next.at || (t.at === next.at && t.id < next.id))) next = t;
      if (next === null) break;
      this._timers.delete(next.id);
      this._now = next.at;
      next.fn();
    }
    this._now = until;
  }
}
