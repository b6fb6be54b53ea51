"""The ``denoise`` pipeline: an image refined step by step, like a diffusion model.

It starts from pure noise and, over ``steps`` steps, follows a deterministic DDIM
trajectory (cosine noise schedule) towards a procedural target: a sunset over
layered hills, laid out by ``seed``. The "denoiser" is an oracle that knows the
target, so the example needs no weights, yet the stream looks and behaves like
a real sampler: each step yields

- ``progress {stage: "denoise", progress: i/steps, message: "step i/steps"}``, then
- the current image, a ``uint8`` RGB array of shape ``(height, width, 3)``, as a
  tensor (``tensor_id`` ``"step-i"``, ``meta {"step": i, "steps": steps}``).

The last image equals the target exactly.

Parameters (``POST /v1/streams {"pipeline": "denoise", "params": {…}}``):
``width``, ``height`` (1..512, default 256), ``steps`` (1..100, default 30),
``delay_ms`` between steps (0..10000, default 40), ``seed`` (default 0) and
``engine``: ``"numpy"`` (default) or ``"mlx"``, which computes every step with MLX
inside its own CPU stream (:func:`tokenwire.mlx_context.run_in_stream`) and
yields MLX arrays, framed like numpy ones.

Run it::

    python -m tokenwire.examples.denoise                      # in-process Hub
    python -m tokenwire.examples.denoise --url http://127.0.0.1:8000 --transport ws
"""

from __future__ import annotations

import argparse
import asyncio
import math
import struct
import sys
import time
import zlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import numpy as np

from tokenwire.errors import InvalidRequestError
from tokenwire.events import PROGRESS, TERMINAL_KINDS, Event
from tokenwire.examples.params import check_names, choice_param, int_param
from tokenwire.tensors import ReceivedTensor, TensorAssembler, tensor_to_frames

MAX_SIDE = 512
MAX_STEPS = 100
ENGINES = ("numpy", "mlx")
PARAMS = ("width", "height", "steps", "delay_ms", "seed", "engine")


class DenoiseParams:
    """The validated ``params`` of the ``denoise`` pipeline."""

    __slots__ = ("delay_ms", "engine", "height", "seed", "steps", "width")

    def __init__(self, params: Mapping[str, Any]) -> None:
        check_names("denoise", params, PARAMS)
        self.width = int_param(params, "width", 256, 1, MAX_SIDE)
        self.height = int_param(params, "height", 256, 1, MAX_SIDE)
        self.steps = int_param(params, "steps", 30, 1, MAX_STEPS)
        self.delay_ms = int_param(params, "delay_ms", 40, 0, 10_000)
        self.seed = int_param(params, "seed", 0, 0, 2**32 - 1)
        self.engine = choice_param(params, "engine", "numpy", ENGINES)
        if self.engine == "mlx":
            try:
                import mlx.core  # noqa: F401
            except ImportError as exc:
                raise InvalidRequestError(f"engine 'mlx' is not available here ({exc})") from exc


# -- the picture -----------------------------------------------------------------


def target_image(width: int, height: int, seed: int = 0) -> np.ndarray[Any, Any]:
    """A sunset over three layers of hills, float32 RGB in 0..1, shape (height, width, 3)."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :, None]
    top = np.array([0.08, 0.10, 0.32], np.float32)
    horizon = np.array([0.99, 0.62, 0.36], np.float32)
    img = top + (horizon - top) * y**0.7 + np.zeros_like(x)

    aspect = width / height
    cx, cy, radius = rng.uniform(0.25, 0.75), rng.uniform(0.22, 0.42), 0.09
    dist = np.sqrt(((x - cx) * aspect) ** 2 + (y - cy) ** 2)
    glow = np.exp(-((dist / (radius * 3.0)) ** 2)) * 0.45
    img = img + glow * np.array([1.0, 0.75, 0.35], np.float32)
    disk = np.clip((radius - dist) * height / 1.5, 0.0, 1.0)
    img = img * (1 - disk) + disk * np.array([1.0, 0.94, 0.72], np.float32)

    colors = [(0.42, 0.22, 0.42), (0.27, 0.14, 0.32), (0.13, 0.07, 0.20)]
    for layer, color in enumerate(colors):
        base = 0.58 + 0.12 * layer
        phase, freq = rng.uniform(0, 2 * math.pi, 2), rng.uniform(1.0, 2.5)
        ridge = (
            base
            + 0.05 * np.sin(2 * math.pi * freq * x + phase[0])
            + 0.02 * np.sin(2 * math.pi * 3.7 * freq * x + phase[1])
        )
        hill = np.clip((y - ridge) * height / 1.5, 0.0, 1.0)
        # Haze: hills lighten towards the top of each ridge.
        shade = np.array(color, np.float32) * (1.0 + 0.35 * np.clip(ridge + 0.15 - y, 0, 1))
        img = img * (1 - hill) + hill * shade
    clipped: np.ndarray[Any, Any] = np.clip(img, 0.0, 1.0).astype(np.float32)
    return clipped


def to_uint8(x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """An image in -1..1 as uint8 0..255."""
    out: np.ndarray[Any, Any] = np.clip(np.rint((x + 1.0) * 127.5), 0, 255).astype(np.uint8)
    return out


def alpha_bar(t: float) -> float:
    """Cosine noise schedule (Nichol & Dhariwal): signal fraction at time t in 0..1."""
    return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2


def schedule(steps: int) -> list[float]:
    """Signal level after each step 1..steps; the last is exactly 1 (the clean image)."""
    return [1.0 if i == steps else alpha_bar(1.0 - i / steps) for i in range(1, steps + 1)]


# -- the pipeline ----------------------------------------------------------------


def denoise(params: Mapping[str, Any]) -> AsyncIterator[Any]:
    """The ``denoise`` pipeline (validates now, streams when iterated)."""
    p = DenoiseParams(params)
    if p.engine == "mlx":
        from tokenwire.mlx_context import run_in_stream

        return run_in_stream("cpu", _denoise_mlx(p))
    return _denoise_numpy(p)


def _start(p: DenoiseParams) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """The clean image x0 in -1..1 and the fixed noise it starts from."""
    x0 = target_image(p.width, p.height, p.seed) * 2.0 - 1.0
    noise = np.random.default_rng([p.seed, 1]).standard_normal(x0.shape, dtype=np.float32)
    return x0, noise


def _step_events(i: int, steps: int, image: Any) -> list[Event]:
    progress = Event.progress("denoise", i / steps, f"step {i}/{steps}")
    frames = tensor_to_frames(image, tensor_id=f"step-{i}", meta={"step": i, "steps": steps})
    return [progress, *frames]


async def _denoise_numpy(p: DenoiseParams) -> AsyncIterator[Any]:
    x0, noise = _start(p)
    for i, signal in enumerate(schedule(p.steps), start=1):
        # DDIM with an oracle denoiser: the predicted noise is the starting noise,
        # so x_t = sqrt(a) * x0 + sqrt(1 - a) * eps at every step.
        x_t = math.sqrt(signal) * x0 + math.sqrt(1.0 - signal) * noise
        for event in _step_events(i, p.steps, to_uint8(x_t)):
            yield event
        if p.delay_ms and i < p.steps:
            await asyncio.sleep(p.delay_ms / 1000)


async def _denoise_mlx(p: DenoiseParams) -> AsyncIterator[Any]:
    import mlx.core as mx

    start, start_noise = _start(p)
    x0, noise = mx.array(start), mx.array(start_noise)
    for i, signal in enumerate(schedule(p.steps), start=1):
        x_t = math.sqrt(signal) * x0 + math.sqrt(1.0 - signal) * noise
        image = mx.clip(mx.round((x_t + 1.0) * 127.5), 0, 255).astype(mx.uint8)
        for event in _step_events(i, p.steps, image):
            yield event
        if p.delay_ms and i < p.steps:
            await asyncio.sleep(p.delay_ms / 1000)


# -- the command line ----------------------------------------------------------


def png_bytes(image: np.ndarray[Any, Any]) -> bytes:
    """An RGB uint8 image (H, W, 3) as a PNG file (no imaging library needed)."""
    height, width, _ = image.shape
    rows = np.zeros((height, 1 + width * 3), np.uint8)  # filter byte 0 per row
    rows[:, 1:] = image.reshape(height, width * 3)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            chunk(b"IHDR", header),
            chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)),
            chunk(b"IEND", b""),
        )
    )


def psnr(image: np.ndarray[Any, Any], reference: np.ndarray[Any, Any]) -> float:
    err = np.mean((image.astype(np.float64) - reference.astype(np.float64)) ** 2)
    return math.inf if err == 0 else 10 * math.log10(255.0**2 / err)


async def _in_process(params: Mapping[str, Any]) -> AsyncIterator[Any]:
    from tokenwire.stream import Hub
    from tokenwire.tensors import tensors_to_frame_stream

    hub = Hub()
    try:
        stream = await hub.start(tensors_to_frame_stream(denoise(params)), model="pipeline:denoise")
        async for event in hub.subscribe(stream.id):
            yield event
    finally:
        await hub.aclose()


async def consume(args: argparse.Namespace, out: Any = sys.stdout) -> ReceivedTensor | None:
    params = {
        "width": args.width,
        "height": args.height,
        "steps": args.steps,
        "delay_ms": args.delay_ms,
        "seed": args.seed,
        "engine": args.engine,
    }
    if args.url:
        from tokenwire.examples.remote import remote_events

        body = {"pipeline": "denoise", "params": params}
        source = remote_events(args.url.rstrip("/"), body, args.transport)
        where = f"{args.url} over {args.transport}"
    else:
        source = _in_process(params)
        where = "in-process hub"
    reference = to_uint8(target_image(args.width, args.height, args.seed) * 2.0 - 1.0)
    assembler = TensorAssembler()
    last: ReceivedTensor | None = None
    started = time.perf_counter()
    print(f"denoise {args.width}x{args.height}, {args.steps} steps, {where}", file=out)
    async for item in source:
        kind, fields = (item.kind, item.fields) if isinstance(item, Event) else _kind(item)
        if kind == PROGRESS:
            done = fields.get("progress", 0.0)
            bar = "#" * round(done * 20)
            print(f"  [{bar:<20}] {done:4.0%} {fields.get('message', '')}", end="", file=out)
        elif kind in TERMINAL_KINDS:
            print(f"{kind}: {_public(fields)}", file=out)
        received = item if kind is None or kind.startswith("tensor.") else None
        tensor = assembler.feed_tensor(received) if received is not None else None
        if tensor is not None:
            last = tensor
            print(f"  PSNR {psnr(tensor.array, reference):5.1f} dB", file=out)
    if last is not None:
        image = last.array
        means = ", ".join(f"{m:.1f}" for m in image.reshape(-1, 3).mean(axis=0))
        print(
            f"final {image.shape} {image.dtype}: mean RGB ({means}), "
            f"{'equals' if np.array_equal(image, reference) else 'differs from'} the target, "
            f"{time.perf_counter() - started:.3f} s",
            file=out,
        )
    return last


def _public(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if k not in ("seq", "kind")}


def _kind(item: Any) -> tuple[str | None, Mapping[str, Any]]:
    if isinstance(item, Mapping):
        return item.get("kind"), item
    return None, {}  # a WebSocket binary chunk frame


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tokenwire.examples.denoise",
        description="Stream a denoising loop's images and progress, and consume them.",
    )
    parser.add_argument("--url", help="a tokenwire server (default: an in-process hub)")
    parser.add_argument("--transport", choices=("sse", "ndjson", "ws"), default="sse")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--delay-ms", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--engine", choices=ENGINES, default="numpy")
    parser.add_argument("--save", metavar="PNG", help="write the final image to this file")
    args = parser.parse_args(argv)
    try:
        DenoiseParams({k: getattr(args, k) for k in PARAMS})
    except InvalidRequestError as exc:
        parser.error(exc.message)
    last = asyncio.run(consume(args))
    if last is None:
        return 1
    if args.save:
        with open(args.save, "wb") as f:
            f.write(png_bytes(last.array))
        print(f"saved {args.save}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
