/**
 * TokenStreamView: the vanilla-DOM adapter. Renders a stream's text into an
 * element as tokens arrive (appending to one Text node, so each token costs
 * O(token), not O(text)), and mirrors the stream on data attributes for CSS:
 * `data-status` (pending, running, done, error, cancelled, closed),
 * `data-state` (the connection state) and `data-gap` once history was lost.
 */

import { TokenwireClient } from './client.js';

export class TokenStreamView {
  /**
   * @param {Element} element where the text goes (its content is replaced)
   * @param {object} [options] a `client`, or TokenwireClient options; `onRender(view)` after each change
   */
  constructor(element, options = {}) {
    if (!element || typeof element.appendChild !== 'function') throw new TypeError('TokenStreamView needs a DOM element');
    this.element = element;
    this.client = options.client ?? new TokenwireClient(options);
    this._ownClient = !options.client;
    this._onRender = options.onRender;
    this.handle = null;
    this._offs = [];
    this._node = null;
  }

  start(request, options) {
    return this.attach(this.client.start(request, options));
  }

  subscribe(streamId, options) {
    return this.attach(this.client.subscribe(streamId, options));
  }

  /** Resume the checkpointed stream, if any (returns null when none). */
  resume(key, options) {
    const h = this.client.resume(key, options);
    return h ? this.attach(h) : null;
  }

  /** Render this handle (the previous one is closed). */
  attach(handle) {
    this.detach(true);
    this.handle = handle;
    const el = this.element;
    const doc = el.ownerDocument || globalThis.document;
    this._node = doc.createTextNode(handle.text);
    el.replaceChildren(this._node);
    delete el.dataset.gap;
    this._mirror();
    this._offs = [
      handle.on('token', (ev) => {
        this._node.appendData(ev.text ?? '');
        this._mirror();
      }),
      handle.on('gap', () => {
        el.dataset.gap = 'true';
        this._mirror();
      }),
      handle.on('state', () => this._mirror()),
      handle.on('end', () => this._mirror()),
    ];
    return handle;
  }

  cancel() {
    return this.handle ? this.handle.cancel() : Promise.resolve();
  }

  /** Stop following (and leave the stream). */
  detach(close = true) {
    for (const off of this._offs) off();
    this._offs = [];
    if (this.handle && close) this.handle.close();
    this.handle = null;
  }

  /** Detach and release the client if this view made it. */
  destroy() {
    this.detach(true);
    if (this._ownClient) this.client.close();
  }

  _mirror() {
    const h = this.handle;
    if (!h) return;
    this.element.dataset.status = h.status;
    this.element.dataset.state = h.state;
    if (this._onRender) this._onRender(this);
  }
}
