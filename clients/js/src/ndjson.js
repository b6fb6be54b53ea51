/**
 * Incremental NDJSON parser: pure code, no I/O.
 *
 * One JSON value per LF-terminated line (a trailing CR is tolerated); blank
 * lines are skipped. A line is complete only once its LF arrives, so a
 * connection cut mid-line yields nothing for that line: resuming re-sends it.
 */

import { ProtocolError } from './errors.js';

export class NDJSONParser {
  /** @param {{maxLineLength?: number}} [options] bound on one buffered line. */
  constructor({ maxLineLength = 16 * 1024 * 1024 } = {}) {
    this.maxLineLength = maxLineLength;
    this._decoder = null;
    this._buf = '';
  }

  /** Feed a chunk (string or bytes); returns the parsed values of the lines it completes. */
  feed(chunk) {
    const text = typeof chunk === 'string' ? chunk : this._decode(chunk);
    const out = [];
    if (text.length === 0) return out;
    // Only the new text can hold a line break: the buffer had none.
    let nl = text.indexOf('\n');
    if (nl === -1) {
      this._buf += text;
    } else {
      let buf = this._buf + text;
      let start = 0;
      nl += this._buf.length;
      while (nl !== -1) {
        this._line(buf, start, nl, out);
        start = nl + 1;
        nl = buf.indexOf('\n', start);
      }
      this._buf = buf.slice(start);
      buf = '';
    }
    if (this._buf.length > this.maxLineLength) {
      throw new ProtocolError(`NDJSON line longer than ${this.maxLineLength} characters`);
    }
    return out;
  }

  /** End of input: an unterminated last line is discarded. Returns its length (0 if none). */
  end() {
    const dropped = this._buf.trim().length;
    this._buf = '';
    this._decoder = null;
    return dropped;
  }

  _decode(bytes) {
    if (this._decoder === null) this._decoder = new TextDecoder('utf-8');
    return this._decoder.decode(bytes, { stream: true });
  }

  _line(buf, start, end, out) {
    if (end > start && buf.charCodeAt(end - 1) === 13) end -= 1;
    const line = buf.slice(start, end);
    if (line.trim() === '') return;
    try {
      out.push(JSON.parse(line));
    } catch (err) {
      const shown = line.length > 80 ? `${line.slice(0, 80)}…` : line;
      throw new ProtocolError(`invalid NDJSON line: ${shown}`, { cause: err });
    }
  }
}
