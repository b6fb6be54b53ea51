/**
 * Checkpoints in sessionStorage: the stream id, the last seq delivered and
 * (by default) the text so far, so that a page reload resumes the same stream
 * after that seq and shows the same text. sessionStorage is per tab, which is
 * what "reload resumes" means; it is absent in node and may throw in
 * sandboxed frames, so every access is guarded and a missing storage is
 * simply no checkpointing.
 *
 * Writes are throttled (intervalMs) because a long stream grows the text; the
 * saved seq and text always come from the same moment, so a resume neither
 * loses nor repeats a token.
 */

export const DEFAULT_KEY = 'tokenwire:stream';

/** globalThis.sessionStorage, or null where it is missing or forbidden. */
export function defaultStorage() {
  try {
    const s = globalThis.sessionStorage;
    return s && typeof s.getItem === 'function' ? s : null;
  } catch {
    return null;
  }
}

/** Read a checkpoint without a client: `{stream, lastSeq, text?, epoch?, savedAt}` or null. */
export function readCheckpoint(key = DEFAULT_KEY, storage = defaultStorage()) {
  if (!storage) return null;
  try {
    const raw = storage.getItem(key);
    if (!raw) return null;
    const cp = JSON.parse(raw);
    if (!cp || typeof cp.stream !== 'string' || !Number.isSafeInteger(cp.lastSeq)) return null;
    return cp;
  } catch {
    return null;
  }
}

export class Checkpoint {
  /**
   * @param {object} o
   * @param {string} [o.key]
   * @param {Storage | null} [o.storage] default: sessionStorage when available
   * @param {boolean} [o.text] also save the text (default true)
   * @param {number} [o.intervalMs] at most one write per interval (default 250)
   * @param {object} o.clock
   * @param {() => object} o.snapshot what to save, read at write time
   */
  constructor({ key = DEFAULT_KEY, storage, text = true, intervalMs = 250, clock, snapshot }) {
    this.key = key;
    this.storage = storage === undefined ? defaultStorage() : storage;
    this.text = text;
    this.intervalMs = intervalMs;
    this.clock = clock;
    this.snapshot = snapshot;
    this._last = -Infinity;
    this._timer = null;
  }

  get enabled() {
    return this.storage !== null;
  }

  load() {
    return readCheckpoint(this.key, this.storage);
  }

  /** Note that the state changed; writes now or at the end of the interval. */
  touch() {
    if (!this.enabled || this._timer !== null) return;
    const wait = this._last + this.intervalMs - this.clock.now();
    if (wait <= 0) this.flush();
    else this._timer = this.clock.setTimeout(() => this.flush(), wait);
  }

  flush() {
    this._cancelTimer();
    if (!this.enabled) return;
    this._last = this.clock.now();
    const s = this.snapshot();
    if (!s || !s.stream) return;
    const cp = { stream: s.stream, lastSeq: s.lastSeq, epoch: s.epoch ?? null, savedAt: Date.now() };
    if (this.text) cp.text = s.text;
    try {
      this.storage.setItem(this.key, JSON.stringify(cp));
    } catch {
      // quota exceeded or storage revoked: checkpointing is best effort
    }
  }

  /** Remove the checkpoint, if it is this stream's (several streams may share a key). */
  clear() {
    this._cancelTimer();
    if (!this.enabled) return;
    const saved = this.load();
    const s = this.snapshot();
    if (saved && s && s.stream && saved.stream !== s.stream) return;
    try {
      this.storage.removeItem(this.key);
    } catch {
      // best effort
    }
  }

  /** Stop writing (the stream is over or left) without touching what is saved. */
  stop() {
    this._cancelTimer();
  }

  _cancelTimer() {
    if (this._timer !== null) this.clock.clearTimeout(this._timer);
    this._timer = null;
  }
}
