/**
 * Incremental Server-Sent Events parser: pure code, no I/O.
 *
 * Follows WHATWG HTML §9.2.6 "Interpreting an event stream", so any split of
 * the input (bytes or text) gives the same records:
 * - lines end with CRLF, LF or CR; a CR at the end of one chunk followed by an
 *   LF at the start of the next is one line break;
 * - one leading U+FEFF BOM is dropped;
 * - `:` starts a comment; `field: value` drops one space after the colon; a
 *   line with no colon is a field name with an empty value;
 * - `data` lines join with LF; an event with an empty data buffer is not
 *   dispatched; `id` containing NUL is ignored; `retry` must be ASCII digits;
 * - at end of input an incomplete event is discarded.
 */

import { ProtocolError } from './errors.js';

const LINE_BREAK = /[\r\n]/g;
const DIGITS = /^[0-9]+$/;

export class SSEParser {
  /**
   * @param {{maxLineLength?: number}} [options] a line longer than this (in
   *   UTF-16 code units) is a protocol error, so a broken server cannot make
   *   the client buffer without bound.
   */
  constructor({ maxLineLength = 16 * 1024 * 1024 } = {}) {
    this.maxLineLength = maxLineLength;
    /** The last event ID string (spec: persists across events until set again). */
    this.lastEventId = '';
    this._decoder = null;
    this._buf = '';
    this._scan = 0; // where the search for the next line break resumes in _buf
    this._crPending = false; // the previous chunk ended with CR
    this._started = false; // BOM check done
    this._data = '';
    this._event = '';
    this._id = '';
  }

  /**
   * Feed a chunk (string or bytes). Returns the records it completes, in order:
   * `{type: 'event', event, data, id}`, `{type: 'retry', retry}`, `{type: 'comment', text}`.
   */
  feed(chunk) {
    let text = typeof chunk === 'string' ? chunk : this._decode(chunk);
    const out = [];
    if (text.length === 0) return out;
    if (!this._started) {
      this._started = true;
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    }
    if (this._crPending) {
      this._crPending = false;
      if (text.charCodeAt(0) === 10) text = text.slice(1);
    }
    const buf = this._buf + text;
    let lineStart = 0;
    LINE_BREAK.lastIndex = this._scan;
    for (let m = LINE_BREAK.exec(buf); m !== null; m = LINE_BREAK.exec(buf)) {
      const at = m.index;
      let next = at + 1;
      if (buf.charCodeAt(at) === 13) {
        if (at + 1 === buf.length) this._crPending = true;
        else if (buf.charCodeAt(at + 1) === 10) next = at + 2;
      }
      this._line(buf.slice(lineStart, at), out);
      lineStart = next;
      LINE_BREAK.lastIndex = next;
    }
    this._buf = lineStart === 0 ? buf : buf.slice(lineStart);
    this._scan = this._buf.length;
    if (this._buf.length > this.maxLineLength) {
      throw new ProtocolError(`SSE line longer than ${this.maxLineLength} characters`);
    }
    return out;
  }

  /** End of input: a pending, incomplete event is discarded (spec). */
  end() {
    this._decoder = null;
    this._buf = '';
    this._scan = 0;
    this._crPending = false;
    this._started = false;
    this._data = '';
    this._event = '';
    return [];
  }

  _decode(bytes) {
    // ignoreBOM keeps U+FEFF so feed() drops it the same way for text and bytes.
    if (this._decoder === null) this._decoder = new TextDecoder('utf-8', { ignoreBOM: true });
    return this._decoder.decode(bytes, { stream: true });
  }

  _line(line, out) {
    if (line.length === 0) {
      this._dispatch(out);
      return;
    }
    if (line.charCodeAt(0) === 58 /* : */) {
      const text = line.charCodeAt(1) === 32 ? line.slice(2) : line.slice(1);
      out.push({ type: 'comment', text });
      return;
    }
    const colon = line.indexOf(':');
    let field = line;
    let value = '';
    if (colon !== -1) {
      field = line.slice(0, colon);
      value = line.charCodeAt(colon + 1) === 32 ? line.slice(colon + 2) : line.slice(colon + 1);
    }
    switch (field) {
      case 'event':
        this._event = value;
        break;
      case 'data':
        this._data += value + '\n';
        break;
      case 'id':
        if (!value.includes('\0')) this._id = value;
        break;
      case 'retry':
        if (DIGITS.test(value)) out.push({ type: 'retry', retry: parseInt(value, 10) });
        break;
      default:
        break; // unknown fields are ignored
    }
  }

  _dispatch(out) {
    this.lastEventId = this._id;
    if (this._data === '') {
      this._event = '';
      return;
    }
    out.push({
      type: 'event',
      event: this._event || 'message',
      data: this._data.slice(0, -1),
      id: this._id,
    });
    this._data = '';
    this._event = '';
  }
}
