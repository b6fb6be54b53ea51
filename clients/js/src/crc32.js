/**
 * CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320), the same function as
 * Python's zlib.crc32: crc32("123456789") === 0xcbf43926.
 */

const TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/**
 * CRC-32 of bytes, optionally continuing from a previous value (like
 * zlib.crc32(data, value)). Strings are encoded as UTF-8.
 * @param {Uint8Array | ArrayBuffer | ArrayBufferView | string} data
 * @param {number} [crc] the running value from a previous call
 * @returns {number} unsigned 32-bit value
 */
export function crc32(data, crc = 0) {
  const bytes = toBytes(data);
  let c = ~crc >>> 0;
  for (let i = 0; i < bytes.length; i++) c = TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

/** The checksum string the server sends: `crc32:` and 8 lowercase hex digits. */
export function crc32Hex(data) {
  return crc32(data).toString(16).padStart(8, '0');
}

function toBytes(data) {
  if (typeof data === 'string') return new TextEncoder().encode(data);
  if (data instanceof Uint8Array) return data;
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return new Uint8Array(data);
}
