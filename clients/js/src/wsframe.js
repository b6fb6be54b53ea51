/**
 * WebSocket binary tensor chunk frames (docs/protocol.md, "Binary tensor
 * chunk frames"). Big-endian header, then the raw chunk bytes:
 *
 *   0  u8   version (1)        12  u32  chunk index
 *   1  u8   S, stream id len   16  u64  byte offset in the tensor
 *   2  u16  T, tensor id len   24  S    stream id (ASCII)
 *   4  u64  seq                24+S T   tensor id (UTF-8), then the bytes
 */

import { ProtocolError } from './errors.js';

export const CHUNK_FRAME_VERSION = 1;
const HEADER = 24;
const utf8 = new TextDecoder('utf-8', { fatal: true });

function u64(view, at) {
  const v = view.getBigUint64(at, false);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new ProtocolError('u64 field beyond 2^53 in chunk frame');
  return Number(v);
}

/**
 * Decode one binary frame into `{stream, event}`, where `event` is the
 * `tensor.chunk` event with `data` a Uint8Array view of the payload (no copy).
 * @param {ArrayBuffer | Uint8Array} frame
 */
export function decodeChunkFrame(frame) {
  const bytes = frame instanceof Uint8Array ? frame : new Uint8Array(frame);
  if (bytes.length < HEADER) throw new ProtocolError(`binary frame of ${bytes.length} bytes is shorter than its header`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = view.getUint8(0);
  if (version !== CHUNK_FRAME_VERSION) throw new ProtocolError(`unknown binary frame version ${version}`);
  const s = view.getUint8(1);
  const t = view.getUint16(2, false);
  if (HEADER + s + t > bytes.length) throw new ProtocolError('binary frame ids overrun the frame');
  const seq = u64(view, 4);
  const index = view.getUint32(12, false);
  const offset = u64(view, 16);
  let stream = '';
  for (let i = 0; i < s; i++) stream += String.fromCharCode(bytes[HEADER + i]);
  let tensorId;
  try {
    tensorId = utf8.decode(bytes.subarray(HEADER + s, HEADER + s + t));
  } catch (err) {
    throw new ProtocolError('tensor id in binary frame is not UTF-8', { cause: err });
  }
  const data = bytes.subarray(HEADER + s + t);
  return { stream, event: { seq, kind: 'tensor.chunk', tensor_id: tensorId, index, offset, data } };
}

/** Encode a frame (the server's job; here for tests and tools). */
export function encodeChunkFrame({ stream, seq, tensor_id: tensorId, index, offset, data }) {
  const sid = new TextEncoder().encode(stream);
  const tid = new TextEncoder().encode(tensorId);
  const out = new Uint8Array(HEADER + sid.length + tid.length + data.length);
  const view = new DataView(out.buffer);
  view.setUint8(0, CHUNK_FRAME_VERSION);
  view.setUint8(1, sid.length);
  view.setUint16(2, tid.length, false);
  view.setBigUint64(4, BigInt(seq), false);
  view.setUint32(12, index, false);
  view.setBigUint64(16, BigInt(offset), false);
  out.set(sid, HEADER);
  out.set(tid, HEADER + sid.length);
  out.set(data, HEADER + sid.length + tid.length);
  return out;
}
