/**
 * Paints a reassembled tensor (from the tokenwire client's `tensor` event) on
 * a canvas: (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), row-major. uint8 is
 * shown as is; other dtypes are scaled from their min..max to 0..255.
 */

/** Is this tensor something paintTensor can show? */
export function isImage(tensor) {
  const s = tensor && tensor.shape;
  if (!Array.isArray(s) || s.some((n) => n <= 0)) return false;
  if (typeof tensor.array?.[0] === 'bigint') return false;
  return s.length === 2 || (s.length === 3 && [1, 3, 4].includes(s[2]));
}

/** Paint `tensor` on `canvas` (resized to the tensor); false when it is not an image. */
export function paintTensor(canvas, tensor) {
  if (!isImage(tensor) || tensor.dtype.startsWith('complex')) return false;
  const [height, width, channels = 1] = tensor.shape;
  if (canvas.width !== width) canvas.width = width;
  if (canvas.height !== height) canvas.height = height;
  const ctx = canvas.getContext('2d');
  const image = ctx.createImageData(width, height);
  const dst = image.data;
  const src = tensor.array;
  const scale = tensor.dtype === 'uint8' ? null : range(src);
  const pixels = width * height;
  for (let i = 0; i < pixels; i++) {
    const s = i * channels;
    const d = i * 4;
    if (channels === 1) {
      dst[d] = dst[d + 1] = dst[d + 2] = level(src[s], scale);
      dst[d + 3] = 255;
    } else {
      dst[d] = level(src[s], scale);
      dst[d + 1] = level(src[s + 1], scale);
      dst[d + 2] = level(src[s + 2], scale);
      dst[d + 3] = channels === 4 ? level(src[s + 3], scale) : 255;
    }
  }
  ctx.putImageData(image, 0, 0);
  return true;
}

/** "256×256 RGB · uint8 · 192 KB" */
export function describeTensor(tensor) {
  const [h, w, c] = tensor.shape;
  const kind = tensor.shape.length === 2 || c === 1 ? 'grey' : c === 4 ? 'RGBA' : 'RGB';
  const dims = isImage(tensor) ? `${w}×${h} ${kind}` : `[${tensor.shape.join(', ')}]`;
  return `${dims} · ${tensor.dtype} · ${formatBytes(tensor.nbytes)}`;
}

export function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(n < 10 * 1024 ? 1 : 0)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

function range(src) {
  let lo = Infinity;
  let hi = -Infinity;
  for (let i = 0; i < src.length; i++) {
    const v = src[i];
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return { lo, span: hi > lo ? hi - lo : 1 };
}

function level(v, scale) {
  if (scale === null) return v;
  return Math.round(((v - scale.lo) / scale.span) * 255);
}
