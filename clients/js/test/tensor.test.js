import { test } from 'node:test';
import assert from 'node:assert/strict';
import { crc32, crc32Hex } from '../src/crc32.js';
import { TensorAssembler, DTYPES } from '../src/tensor.js';
import { decodeBase64, encodeBase64 } from '../src/base64.js';
import { decodeChunkFrame, encodeChunkFrame } from '../src/wsframe.js';
import { TensorChecksumError, TensorError, TensorTruncatedError, ProtocolError } from '../src/errors.js';

test('crc32: known vectors (same as zlib.crc32)', () => {
  assert.equal(crc32('123456789'), 0xcbf43926);
  assert.equal(crc32Hex('123456789'), 'cbf43926');
  assert.equal(crc32(''), 0);
  assert.equal(crc32('The quick brown fox jumps over the lazy dog'), 0x414fa339);
  const bytes = new Uint8Array(1024).map((_, i) => i & 0xff);
  assert.equal(crc32(bytes), 0xb70b4c26); // zlib.crc32(bytes(range(256))*4)
  // Running value, like zlib.crc32(data, value).
  assert.equal(crc32(bytes.subarray(300), crc32(bytes.subarray(0, 300))), 0xb70b4c26);
  assert.equal(crc32(new Float32Array([0.5, -1.25, 3.0, 1e-3, 65504.0, -0.0])), 0x9dd3712c);
});

test('base64: round trip at every length, and straight into a buffer', () => {
  for (let n = 0; n < 40; n++) {
    const bytes = new Uint8Array(n).map((_, i) => (i * 37 + 11) & 0xff);
    const text = encodeBase64(bytes);
    assert.equal(text, Buffer.from(bytes).toString('base64'));
    assert.deepEqual(decodeBase64(text), bytes);
  }
  assert.throws(() => decodeBase64('abc'), ProtocolError);
  assert.throws(() => decodeBase64('ab!d'), ProtocolError);
});

// Frames for one tensor, as the server would send them.
function frames(typed, { dtype, shape, chunkBytes = 8, id = 't1', binary = false, checksum } = {}) {
  const bytes = new Uint8Array(typed.buffer, typed.byteOffset, typed.byteLength);
  const chunks = Math.ceil(bytes.length / chunkBytes);
  const header = {
    seq: 1,
    kind: 'tensor.header',
    tensor_id: id,
    shape,
    dtype,
    strides: null,
    byteorder: 'little',
    nbytes: bytes.length,
    chunk_bytes: chunkBytes,
    chunks,
    meta: { layer: 3 },
  };
  const body = [];
  for (let i = 0; i < chunks; i++) {
    const part = bytes.subarray(i * chunkBytes, (i + 1) * chunkBytes);
    body.push({ seq: 2 + i, kind: 'tensor.chunk', tensor_id: id, index: i, offset: i * chunkBytes, data: binary ? part.slice() : encodeBase64(part) });
  }
  const end = { seq: 2 + chunks, kind: 'tensor.end', tensor_id: id, checksum: checksum ?? `crc32:${crc32Hex(bytes)}` };
  return { header, body, end };
}

function assemble(asm, { header, body, end }) {
  asm.push(header);
  for (const c of body) assert.equal(asm.push(c), null);
  return asm.push(end);
}

test('tensor: float32 from base64 chunks, with shape, meta and a verified checksum', () => {
  const values = new Float32Array([0.5, -1.25, 3.0, 1e-3, 65504.0, -0.0]);
  const t = assemble(new TensorAssembler({ shared: false }), frames(values, { dtype: 'float32', shape: [2, 3] }));
  assert.ok(t.array instanceof Float32Array);
  assert.deepEqual([...t.array], [...values]);
  assert.deepEqual(t.shape, [2, 3]);
  assert.deepEqual(t.meta, { layer: 3 });
  assert.equal(t.shared, false);
  assert.ok(t.buffer instanceof ArrayBuffer);
});

test('tensor: every dtype maps to its typed array', () => {
  const cases = [
    ['float64', new Float64Array([1.5, -2]), Float64Array],
    ['int8', new Int8Array([-1, 2, 127]), Int8Array],
    ['int16', new Int16Array([-300, 2]), Int16Array],
    ['int32', new Int32Array([-70000, 5]), Int32Array],
    ['int64', new BigInt64Array([-(2n ** 40n), 7n]), BigInt64Array],
    ['uint8', new Uint8Array([0, 255]), Uint8Array],
    ['uint16', new Uint16Array([65535, 1]), Uint16Array],
    ['uint32', new Uint32Array([2 ** 32 - 1]), Uint32Array],
    ['uint64', new BigUint64Array([2n ** 63n]), BigUint64Array],
    ['bool', new Uint8Array([1, 0, 1]), Uint8Array],
    ['bfloat16', new Uint16Array([0x3f80, 0xc000]), Uint16Array],
    ['float16', new Uint16Array([0x3c00, 0x4000]), typeof Float16Array === 'function' ? Float16Array : Uint16Array],
  ];
  for (const [dtype, values, Expected] of cases) {
    const t = assemble(new TensorAssembler(), frames(values, { dtype, shape: [values.length], chunkBytes: 3 }));
    assert.ok(t.array instanceof Expected, dtype);
    if (Expected === values.constructor) assert.deepEqual([...t.array], [...values], dtype);
    else assert.deepEqual([...new Uint16Array(t.buffer)], [...values], dtype);
  }
  // complex64: interleaved real/imag float32 lanes, shape counts complex elements.
  const c = assemble(new TensorAssembler(), frames(new Float32Array([1, 2, 3, 4]), { dtype: 'complex64', shape: [2] }));
  assert.ok(c.array instanceof Float32Array);
  assert.deepEqual([...c.array], [1, 2, 3, 4]);
  assert.equal(DTYPES.complex64.itemsize, 8);
});

test('tensor: raw bytes (WebSocket binary frames) and out-of-order chunks', () => {
  const values = new Int32Array([1, 2, 3, 4, 5, 6, 7]);
  const f = frames(values, { dtype: 'int32', shape: [7], chunkBytes: 8, binary: true });
  f.body.reverse();
  const t = assemble(new TensorAssembler(), f);
  assert.deepEqual([...t.array], [...values]);
});

test('tensor: duplicate chunks after a resume are ignored', () => {
  const values = new Float32Array([1, 2, 3, 4, 5]);
  const f = frames(values, { dtype: 'float32', shape: [5] });
  const asm = new TensorAssembler();
  asm.push(f.header);
  asm.push(f.body[0]);
  asm.push(f.body[1]);
  asm.push(f.header); // replayed header
  asm.push({ ...f.body[0], data: encodeBase64(new Uint8Array(8).fill(0xff)) }); // replayed chunk, ignored
  for (const c of f.body) asm.push(c);
  assert.deepEqual(asm.progress('t1').fraction, 1);
  const t = asm.push(f.end);
  assert.deepEqual([...t.array], [...values]);
  assert.equal(asm.push(f.end), null, 'a late duplicate of a finished tensor is ignored');
  asm.push(f.body[1]);
});

test('tensor: truncated (a missing chunk) is a clear error', () => {
  const f = frames(new Float32Array(10), { dtype: 'float32', shape: [10] });
  const asm = new TensorAssembler();
  asm.push(f.header);
  for (const c of f.body.filter((c) => c.index !== 2)) asm.push(c);
  assert.throws(
    () => asm.push(f.end),
    (err) => err instanceof TensorTruncatedError && err.received === 4 && err.expected === 5 && /truncated: 4 of 5 chunks/.test(err.message),
  );
  assert.deepEqual(asm.pending(), []);
});

test('tensor: the stream ending mid-tensor reports it truncated', () => {
  const f = frames(new Float32Array(4), { dtype: 'float32', shape: [4] });
  const asm = new TensorAssembler();
  asm.push(f.header);
  asm.push(f.body[0]);
  const errors = asm.finish();
  assert.equal(errors.length, 1);
  assert.ok(errors[0] instanceof TensorTruncatedError);
});

test('tensor: corrupted bytes fail the checksum', () => {
  const f = frames(new Float32Array([1, 2, 3, 4]), { dtype: 'float32', shape: [4] });
  const bad = decodeBase64(f.body[1].data);
  bad[0] ^= 0x01;
  f.body[1].data = encodeBase64(bad);
  assert.throws(() => assemble(new TensorAssembler(), f), (err) => err instanceof TensorChecksumError && /checksum mismatch: expected crc32:[0-9a-f]{8}, got crc32:[0-9a-f]{8}/.test(err.message));
});

test('tensor: malformed headers and chunks are TensorErrors', () => {
  const asm = new TensorAssembler({ maxBytes: 64 });
  const h = { kind: 'tensor.header', tensor_id: 'x', shape: [4], dtype: 'float32', nbytes: 16, chunk_bytes: 8, chunks: 2 };
  assert.throws(() => asm.push({ ...h, dtype: 'float8' }), /unsupported dtype/);
  assert.throws(() => asm.push({ ...h, nbytes: 12 }), /does not match shape/);
  assert.throws(() => asm.push({ ...h, chunks: 3 }), /does not give 3 chunks/);
  assert.throws(() => asm.push({ ...h, shape: [100], nbytes: 400, chunk_bytes: 400, chunks: 1 }), /exceeds the 64 byte limit/);
  assert.throws(() => asm.push({ kind: 'tensor.chunk', tensor_id: 'y', index: 0, data: '' }), /before its header/);
  asm.push(h);
  assert.throws(() => asm.push({ kind: 'tensor.chunk', tensor_id: 'x', index: 2, offset: 16, data: '' }), /outside 0..1/);
  assert.throws(() => asm.push({ kind: 'tensor.chunk', tensor_id: 'x', index: 1, offset: 4, data: '' }), /expected 8/);
  assert.throws(() => asm.push({ kind: 'tensor.chunk', tensor_id: 'x', index: 1, offset: 8, data: encodeBase64(new Uint8Array(12)) }), /overruns/);
  assert.throws(() => asm.push({ kind: 'tensor.end', tensor_id: 'x', checksum: 'md5:abc' }), TensorError);
});

test('tensor: SharedArrayBuffer when cross-origin isolated', () => {
  const had = Object.getOwnPropertyDescriptor(globalThis, 'crossOriginIsolated');
  Object.defineProperty(globalThis, 'crossOriginIsolated', { value: true, configurable: true });
  try {
    const values = new Float64Array([1, 2, 3]);
    const t = assemble(new TensorAssembler(), frames(values, { dtype: 'float64', shape: [3] }));
    assert.equal(t.shared, true);
    assert.ok(t.buffer instanceof SharedArrayBuffer);
    assert.ok(t.array.buffer instanceof SharedArrayBuffer);
    assert.deepEqual([...t.array], [1, 2, 3]);
  } finally {
    if (had) Object.defineProperty(globalThis, 'crossOriginIsolated', had);
    else delete globalThis.crossOriginIsolated;
  }
  const t = assemble(new TensorAssembler(), frames(new Float64Array([1]), { dtype: 'float64', shape: [1] }));
  assert.equal(t.shared, false, 'not isolated: a plain ArrayBuffer');
});

test('tensor: big-endian payloads are swapped after the checksum', () => {
  const le = new Float32Array([1.5, -2]);
  const be = new Uint8Array(le.buffer.slice(0));
  for (let i = 0; i < be.length; i += 4) be.subarray(i, i + 4).reverse();
  const f = frames(be, { dtype: 'float32', shape: [2] });
  f.header.byteorder = 'big';
  f.header.nbytes = 8;
  const t = assemble(new TensorAssembler(), f);
  assert.deepEqual([...t.array], [1.5, -2]);
});

test('tensor: an empty tensor', () => {
  const t = assemble(new TensorAssembler(), frames(new Float32Array(0), { dtype: 'float32', shape: [0, 3] }));
  assert.equal(t.array.length, 0);
});

test('WebSocket chunk frame: the byte table round-trips', () => {
  const data = Uint8Array.of(1, 2, 3, 250);
  const frame = encodeChunkFrame({ stream: 'st_abc', seq: 2 ** 40, tensor_id: 'layer.3/ü', index: 7, offset: 123456789, data });
  assert.equal(frame[0], 1);
  assert.equal(frame[1], 6);
  assert.equal((frame[2] << 8) | frame[3], new TextEncoder().encode('layer.3/ü').length);
  const { stream, event } = decodeChunkFrame(frame.buffer);
  assert.equal(stream, 'st_abc');
  assert.deepEqual({ ...event, data: [...event.data] }, {
    seq: 2 ** 40,
    kind: 'tensor.chunk',
    tensor_id: 'layer.3/ü',
    index: 7,
    offset: 123456789,
    data: [1, 2, 3, 250],
  });
  assert.throws(() => decodeChunkFrame(frame.subarray(0, 10)), /shorter than its header/);
  const v2 = frame.slice();
  v2[0] = 2;
  assert.throws(() => decodeChunkFrame(v2), /unknown binary frame version 2/);
});
