/**
 * Tensor reassembly from `tensor.header` / `tensor.chunk` / `tensor.end`.
 *
 * Chunks are written straight into one preallocated buffer (a
 * SharedArrayBuffer when the page is cross-origin isolated, so a worker can
 * read it without a copy), duplicates (a resume replaying a chunk) are
 * ignored, and `tensor.end` verifies that every chunk arrived and that the
 * CRC-32 of the raw little-endian bytes matches before the typed array is
 * handed out.
 */

import { decodeBase64Into, base64Length } from './base64.js';
import { crc32 } from './crc32.js';
import { TensorError, TensorTruncatedError, TensorChecksumError } from './errors.js';

const F16 = typeof globalThis.Float16Array === 'function' ? globalThis.Float16Array : Uint16Array;

/**
 * dtype name -> typed array constructor and bytes per element. `scalar` is
 * the byte width of one lane (complex types are interleaved real, imaginary).
 * float16 is a Float16Array where the platform has one, else raw Uint16Array
 * bits; bfloat16 is always raw Uint16Array bits.
 */
export const DTYPES = Object.freeze({
  float32: { array: Float32Array, itemsize: 4, scalar: 4 },
  float64: { array: Float64Array, itemsize: 8, scalar: 8 },
  float16: { array: F16, itemsize: 2, scalar: 2 },
  bfloat16: { array: Uint16Array, itemsize: 2, scalar: 2 },
  int8: { array: Int8Array, itemsize: 1, scalar: 1 },
  int16: { array: Int16Array, itemsize: 2, scalar: 2 },
  int32: { array: Int32Array, itemsize: 4, scalar: 4 },
  int64: { array: BigInt64Array, itemsize: 8, scalar: 8 },
  uint8: { array: Uint8Array, itemsize: 1, scalar: 1 },
  uint16: { array: Uint16Array, itemsize: 2, scalar: 2 },
  uint32: { array: Uint32Array, itemsize: 4, scalar: 4 },
  uint64: { array: BigUint64Array, itemsize: 8, scalar: 8 },
  bool: { array: Uint8Array, itemsize: 1, scalar: 1 },
  complex64: { array: Float32Array, itemsize: 8, scalar: 4 },
  complex128: { array: Float64Array, itemsize: 16, scalar: 8 },
});

/** Should buffers be SharedArrayBuffers? ('auto': only when cross-origin isolated.) */
export function useSharedMemory(shared = 'auto') {
  if (typeof SharedArrayBuffer !== 'function') return false;
  if (shared === 'auto') return globalThis.crossOriginIsolated === true;
  return Boolean(shared);
}

function isCount(n) {
  return Number.isSafeInteger(n) && n >= 0;
}

// Completed ids remembered so that late duplicates of a finished tensor are ignored.
const REMEMBER_DONE = 256;

export class TensorAssembler {
  /**
   * @param {object} [options]
   * @param {boolean | 'auto'} [options.shared] SharedArrayBuffer policy
   * @param {number} [options.maxBytes] largest tensor accepted (bytes)
   * @param {number} [options.maxPending] tensors in flight at once
   */
  constructor({ shared = 'auto', maxBytes = 1024 ** 3, maxPending = 64 } = {}) {
    this.shared = shared;
    this.maxBytes = maxBytes;
    this.maxPending = maxPending;
    this._pending = new Map();
    this._done = new Set();
  }

  /**
   * Feed any event; tensor events are consumed. Returns the finished tensor on
   * `tensor.end`, else null. Throws a TensorError for a truncated or corrupt
   * tensor (and forgets it).
   */
  push(ev) {
    switch (ev.kind) {
      case 'tensor.header':
        this.header(ev);
        return null;
      case 'tensor.chunk':
        this.chunk(ev);
        return null;
      case 'tensor.end':
        return this.end(ev);
      default:
        return null;
    }
  }

  header(h) {
    const id = h.tensor_id;
    if (this._done.has(id)) return;
    const spec = DTYPES[h.dtype];
    if (!spec) throw new TensorError(id, `unsupported dtype ${JSON.stringify(h.dtype)}`);
    const shape = h.shape;
    if (!Array.isArray(shape) || !shape.every(isCount)) throw new TensorError(id, `invalid shape ${JSON.stringify(shape)}`);
    const nbytes = h.nbytes;
    const elements = shape.reduce((a, b) => a * b, 1);
    if (!isCount(nbytes) || nbytes !== elements * spec.itemsize) {
      throw new TensorError(id, `nbytes ${nbytes} does not match shape ${JSON.stringify(shape)} of ${h.dtype}`);
    }
    if (nbytes > this.maxBytes) throw new TensorError(id, `${nbytes} bytes exceeds the ${this.maxBytes} byte limit`);
    const chunks = h.chunks;
    const chunkBytes = h.chunk_bytes;
    if (!isCount(chunks) || (nbytes > 0 && chunks === 0)) throw new TensorError(id, `invalid chunk count ${chunks}`);
    if (chunkBytes != null && (!isCount(chunkBytes) || (chunks > 0 && Math.ceil(nbytes / chunkBytes) !== chunks))) {
      throw new TensorError(id, `chunk_bytes ${chunkBytes} does not give ${chunks} chunks of ${nbytes} bytes`);
    }
    const byteorder = h.byteorder ?? 'little';
    if (byteorder !== 'little' && byteorder !== 'big' && spec.scalar > 1) {
      throw new TensorError(id, `unsupported byteorder ${JSON.stringify(byteorder)}`);
    }
    const old = this._pending.get(id);
    if (old) {
      if (old.nbytes === nbytes && old.dtype === h.dtype && old.chunks === chunks) return; // replayed header
      throw new TensorError(id, 'a second, different header for a tensor in flight');
    }
    if (this._pending.size >= this.maxPending) throw new TensorError(id, `more than ${this.maxPending} tensors in flight`);
    const buffer = useSharedMemory(this.shared) ? new SharedArrayBuffer(nbytes) : new ArrayBuffer(nbytes);
    this._pending.set(id, {
      id,
      spec,
      dtype: h.dtype,
      shape: shape.slice(),
      strides: h.strides ?? null,
      meta: h.meta ?? {},
      byteorder,
      nbytes,
      chunks,
      chunkBytes: chunkBytes ?? null,
      buffer,
      bytes: new Uint8Array(buffer),
      seen: new Uint8Array(chunks),
      chunksReceived: 0,
      bytesReceived: 0,
    });
  }

  chunk(c) {
    const id = c.tensor_id;
    if (this._done.has(id)) return;
    const t = this._pending.get(id);
    if (!t) throw new TensorError(id, `chunk ${c.index} before its header`);
    const index = c.index;
    if (!isCount(index) || index >= t.chunks) throw new TensorError(id, `chunk index ${index} outside 0..${t.chunks - 1}`);
    if (t.seen[index]) return; // a duplicate after resume
    const offset = c.offset ?? (t.chunkBytes === null ? null : index * t.chunkBytes);
    if (!isCount(offset)) throw new TensorError(id, `chunk ${index} has no valid offset`);
    if (t.chunkBytes !== null && offset !== index * t.chunkBytes) {
      throw new TensorError(id, `chunk ${index} at offset ${offset}, expected ${index * t.chunkBytes}`);
    }
    const data = c.data;
    let size;
    if (typeof data === 'string') {
      size = base64Length(data);
      if (offset + size > t.nbytes) throw new TensorError(id, `chunk ${index} overruns the tensor (${offset}+${size} > ${t.nbytes})`);
      decodeBase64Into(data, t.bytes, offset);
    } else if (data instanceof Uint8Array || data instanceof ArrayBuffer) {
      const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
      size = bytes.length;
      if (offset + size > t.nbytes) throw new TensorError(id, `chunk ${index} overruns the tensor (${offset}+${size} > ${t.nbytes})`);
      t.bytes.set(bytes, offset);
    } else {
      throw new TensorError(id, `chunk ${index} has no data`);
    }
    t.seen[index] = 1;
    t.chunksReceived += 1;
    t.bytesReceived += size;
  }

  end(e) {
    const id = e.tensor_id;
    if (this._done.has(id)) return null;
    const t = this._pending.get(id);
    if (!t) throw new TensorError(id, 'tensor.end before its header');
    this._pending.delete(id);
    if (t.chunksReceived !== t.chunks || t.bytesReceived !== t.nbytes) {
      throw new TensorTruncatedError(id, t.chunksReceived, t.chunks);
    }
    verifyChecksum(id, e.checksum, t.bytes);
    if (t.byteorder === 'big') swapBytes(t.bytes, t.spec.scalar);
    this._remember(id);
    const Array_ = t.spec.array;
    return {
      tensorId: id,
      dtype: t.dtype,
      shape: t.shape,
      strides: t.strides,
      meta: t.meta,
      nbytes: t.nbytes,
      shared: typeof SharedArrayBuffer === 'function' && t.buffer instanceof SharedArrayBuffer,
      buffer: t.buffer,
      array: new Array_(t.buffer, 0, t.nbytes / t.spec.scalar),
    };
  }

  /** How far a tensor in flight has got, or null if unknown. */
  progress(id) {
    const t = this._pending.get(id);
    if (!t) return null;
    return {
      chunks: t.chunks,
      chunksReceived: t.chunksReceived,
      nbytes: t.nbytes,
      bytesReceived: t.bytesReceived,
      fraction: t.nbytes === 0 ? 1 : t.bytesReceived / t.nbytes,
    };
  }

  /** Ids of tensors whose `tensor.end` has not arrived. */
  pending() {
    return [...this._pending.keys()];
  }

  /**
   * The stream ended: every tensor still in flight is truncated. Returns one
   * TensorTruncatedError per tensor and forgets them.
   */
  finish() {
    const errors = [];
    for (const t of this._pending.values()) errors.push(new TensorTruncatedError(t.id, t.chunksReceived, t.chunks));
    this._pending.clear();
    return errors;
  }

  _remember(id) {
    this._done.add(id);
    if (this._done.size > REMEMBER_DONE) this._done.delete(this._done.values().next().value);
  }
}

function verifyChecksum(id, checksum, bytes) {
  if (checksum == null) return;
  const m = /^crc32:([0-9a-fA-F]{8})$/.exec(checksum);
  if (!m) throw new TensorError(id, `unsupported checksum ${JSON.stringify(checksum)}`);
  const actual = crc32(bytes).toString(16).padStart(8, '0');
  if (actual !== m[1].toLowerCase()) throw new TensorChecksumError(id, `crc32:${m[1].toLowerCase()}`, `crc32:${actual}`);
}

function swapBytes(bytes, width) {
  if (width === 1) return;
  for (let i = 0; i + width <= bytes.length; i += width) {
    for (let a = i, b = i + width - 1; a < b; a++, b--) {
      const x = bytes[a];
      bytes[a] = bytes[b];
      bytes[b] = x;
    }
  }
}
