/**
 * Base64 (RFC 4648 §4, standard alphabet, padded) straight into a target
 * buffer, so a tensor chunk lands in its preallocated place without an
 * intermediate binary string.
 */

import { ProtocolError } from './errors.js';

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
const DECODE = new Int16Array(128).fill(-1);
for (let i = 0; i < ALPHABET.length; i++) DECODE[ALPHABET.charCodeAt(i)] = i;

/** Number of bytes `text` decodes to. */
export function base64Length(text) {
  let n = text.length;
  if (n % 4 !== 0) throw new ProtocolError(`base64 length ${n} is not a multiple of 4`);
  let pad = 0;
  if (n > 0 && text.charCodeAt(n - 1) === 61) pad++;
  if (n > 1 && text.charCodeAt(n - 2) === 61) pad++;
  return (n / 4) * 3 - pad;
}

/**
 * Decode `text` into `target` at `offset`; returns the number of bytes written.
 * @param {string} text
 * @param {Uint8Array} target
 * @param {number} [offset]
 */
export function decodeBase64Into(text, target, offset = 0) {
  const size = base64Length(text);
  if (offset + size > target.length) throw new ProtocolError('base64 payload overruns its target');
  let o = offset;
  const end = offset + size;
  for (let i = 0; i < text.length; i += 4) {
    const a = sextet(text, i);
    const b = sextet(text, i + 1);
    const c = text.charCodeAt(i + 2) === 61 ? 0 : sextet(text, i + 2);
    const d = text.charCodeAt(i + 3) === 61 ? 0 : sextet(text, i + 3);
    const v = (a << 18) | (b << 12) | (c << 6) | d;
    target[o++] = v >>> 16;
    if (o < end) target[o++] = (v >>> 8) & 0xff;
    if (o < end) target[o++] = v & 0xff;
  }
  return size;
}

/** Decode to a new Uint8Array. */
export function decodeBase64(text) {
  const out = new Uint8Array(base64Length(text));
  decodeBase64Into(text, out, 0);
  return out;
}

/** Encode bytes (the client only decodes tensors; tests and tools encode). */
export function encodeBase64(bytes) {
  let out = '';
  let i = 0;
  for (; i + 2 < bytes.length; i += 3) {
    const v = (bytes[i] << 16) | (bytes[i + 1] << 8) | bytes[i + 2];
    out += ALPHABET[v >>> 18] + ALPHABET[(v >>> 12) & 63] + ALPHABET[(v >>> 6) & 63] + ALPHABET[v & 63];
  }
  if (i < bytes.length) {
    const v = (bytes[i] << 16) | ((i + 1 < bytes.length ? bytes[i + 1] : 0) << 8);
    out += ALPHABET[v >>> 18] + ALPHABET[(v >>> 12) & 63];
    out += i + 1 < bytes.length ? ALPHABET[(v >>> 6) & 63] + '=' : '==';
  }
  return out;
}

function sextet(text, i) {
  const code = text.charCodeAt(i);
  const v = code < 128 ? DECODE[code] : -1;
  if (v < 0) throw new ProtocolError(`invalid base64 character at ${i}`);
  return v;
}
