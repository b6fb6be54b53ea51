"""A llama forward pass in MLX, straight on the quantized tensors of a GGUF file.

``mx.load(path, return_metadata=True)`` keeps Q4_0/Q4_1/Q8_0 tensors quantized
in MLX's affine layout (``weight`` packed in uint32, ``scales`` and ``biases``
per group of 32), which is what ``mx.quantized_matmul`` takes: no weight is
ever dequantized. The bit width of each tensor follows from its packed shape
(SmolLM2's Q4_1 file keeps ``token_embd`` in Q8_0).

The layer is llama.cpp's ``llama`` architecture: RMSNorm, attention with
grouped K/V heads and RoPE, a SwiGLU MLP. llama.cpp's GGUF converter permutes
the Q and K rows so that RoPE rotates adjacent pairs (its ``LLAMA_ROPE_TYPE_NORM``),
which is MLX's ``traditional=True``. With no ``output.weight`` the output
projection is the token embedding (tied weights).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import mlx.core as mx

GROUP_SIZE = 32
KV_STEP = 256  # the KV cache grows by this many positions at a time


@dataclass(frozen=True, slots=True)
class LlamaConfig:
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    ffn_dim: int
    vocab_size: int
    context_length: int
    rope_base: float
    rope_dims: int
    norm_eps: float

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any]) -> LlamaConfig:
        arch = str(meta.get("general.architecture", ""))
        if arch != "llama":
            raise ValueError(f"the MLX backend runs llama models, this file is {arch!r}")

        def num(key: str, default: Any = None) -> Any:
            value = meta.get(f"llama.{key}", default)
            if value is None:
                raise ValueError(f"the GGUF metadata has no llama.{key}")
            return value.item() if hasattr(value, "item") else value

        dim = int(num("embedding_length"))
        heads = int(num("attention.head_count"))
        return cls(
            dim=dim,
            n_layers=int(num("block_count")),
            n_heads=heads,
            n_kv_heads=int(num("attention.head_count_kv", heads)),
            ffn_dim=int(num("feed_forward_length")),
            vocab_size=int(num("vocab_size", len(meta.get("tokenizer.ggml.tokens", ())))),
            context_length=int(num("context_length", 2048)),
            rope_base=float(num("rope.freq_base", 10000.0)),
            rope_dims=int(num("rope.dimension_count", dim // heads)),
            norm_eps=float(num("attention.layer_norm_rms_epsilon", 1e-5)),
        )


class QuantizedLinear:
    """``x @ W.T`` on a weight kept quantized; float weights (rare) are used as they are."""

    __slots__ = ("biases", "bits", "scales", "weight")

    def __init__(self, tensors: Mapping[str, mx.array], name: str, in_features: int) -> None:
        self.weight = tensors[f"{name}.weight"]
        self.scales = tensors.get(f"{name}.scales")
        self.biases = tensors.get(f"{name}.biases")
        # 32 bits per packed uint32: in_features values in weight.shape[-1] words
        self.bits = 32 * self.weight.shape[-1] // in_features if self.scales is not None else 0

    def __call__(self, x: mx.array) -> mx.array:
        if self.scales is None:
            return x @ self.weight.T
        return mx.quantized_matmul(
            x,
            self.weight,
            self.scales,
            self.biases,
            transpose=True,
            group_size=GROUP_SIZE,
            bits=self.bits,
        )

    def rows(self, ids: mx.array) -> mx.array:
        """The dequantized rows ``ids`` (an embedding lookup)."""
        if self.scales is None or self.biases is None:
            return self.weight[ids]
        return mx.dequantize(
            self.weight[ids],
            self.scales[ids],
            self.biases[ids],
            group_size=GROUP_SIZE,
            bits=self.bits,
        )


class KVCache:
    """Keys and values of one layer, ``[1, n_kv_heads, positions, head_dim]``, grown
    in steps of :data:`KV_STEP` up to the context length."""

    __slots__ = ("keys", "limit", "offset", "values")

    def __init__(self, limit: int) -> None:
        self.keys: mx.array | None = None
        self.values: mx.array | None = None
        self.offset = 0
        self.limit = limit

    def trim(self, n: int) -> None:
        """Keep the first ``n`` positions (the rest is overwritten by what comes next)."""
        self.offset = min(self.offset, n)

    def update(self, k: mx.array, v: mx.array) -> tuple[mx.array, mx.array]:
        n = k.shape[2]
        end = self.offset + n
        if end > self.limit:
            raise ValueError(f"the KV cache holds {self.limit} positions, {end} asked")
        if self.keys is None or end > self.keys.shape[2]:
            size = min(self.limit, (end + KV_STEP - 1) // KV_STEP * KV_STEP)
            shape = (k.shape[0], k.shape[1], size, k.shape[3])
            keys, values = mx.zeros(shape, k.dtype), mx.zeros(shape, v.dtype)
            if self.keys is not None and self.values is not None and self.offset:
                keys[..., : self.offset, :] = self.keys[..., : self.offset, :]
                values[..., : self.offset, :] = self.values[..., : self.offset, :]
            self.keys, self.values = keys, values
        assert self.keys is not None and self.values is not None
        self.keys[..., self.offset : end, :] = k
        self.values[..., self.offset : end, :] = v
        self.offset = end
        return self.keys[..., :end, :], self.values[..., :end, :]


class _Layer:
    __slots__ = (
        "attn_norm",
        "down",
        "ffn_norm",
        "gate",
        "k",
        "o",
        "q",
        "up",
        "v",
    )

    def __init__(self, tensors: Mapping[str, mx.array], i: int, cfg: LlamaConfig) -> None:
        p = f"blk.{i}"
        self.attn_norm = tensors[f"{p}.attn_norm.weight"]
        self.ffn_norm = tensors[f"{p}.ffn_norm.weight"]
        self.q = QuantizedLinear(tensors, f"{p}.attn_q", cfg.dim)
        self.k = QuantizedLinear(tensors, f"{p}.attn_k", cfg.dim)
        self.v = QuantizedLinear(tensors, f"{p}.attn_v", cfg.dim)
        self.o = QuantizedLinear(tensors, f"{p}.attn_output", cfg.dim)
        self.gate = QuantizedLinear(tensors, f"{p}.ffn_gate", cfg.dim)
        self.up = QuantizedLinear(tensors, f"{p}.ffn_up", cfg.dim)
        self.down = QuantizedLinear(tensors, f"{p}.ffn_down", cfg.ffn_dim)


class LlamaModel:
    """The model: ``logits = model(ids, caches)`` for the positions after the caches'."""

    def __init__(self, tensors: Mapping[str, mx.array], cfg: LlamaConfig) -> None:
        self.cfg = cfg
        self.embed = QuantizedLinear(tensors, "token_embd", cfg.dim)
        self.output = (
            QuantizedLinear(tensors, "output", cfg.dim)
            if "output.weight" in tensors
            else self.embed
        )
        self.norm = tensors["output_norm.weight"]
        self.layers = [_Layer(tensors, i, cfg) for i in range(cfg.n_layers)]
        self.scale = 1.0 / math.sqrt(cfg.head_dim)

    def new_cache(self, limit: int | None = None) -> list[KVCache]:
        size = min(limit or self.cfg.context_length, self.cfg.context_length)
        return [KVCache(size) for _ in self.layers]

    def __call__(self, ids: mx.array, caches: list[KVCache]) -> mx.array:
        """Logits of the last position, ``[vocab]`` float32, for ``ids`` (1-D) appended
        to what the caches hold."""
        cfg = self.cfg
        n = ids.shape[0]
        x = self.embed.rows(ids)[None].astype(mx.float32)  # [1, n, dim]
        mask = "causal" if n > 1 else None
        for layer, cache in zip(self.layers, caches, strict=True):
            h = mx.fast.rms_norm(x, layer.attn_norm, cfg.norm_eps)
            q = layer.q(h).reshape(1, n, cfg.n_heads, cfg.head_dim).transpose(0, 2, 1, 3)
            k = layer.k(h).reshape(1, n, cfg.n_kv_heads, cfg.head_dim).transpose(0, 2, 1, 3)
            v = layer.v(h).reshape(1, n, cfg.n_kv_heads, cfg.head_dim).transpose(0, 2, 1, 3)
            offset = cache.offset
            q = mx.fast.rope(
                q, cfg.rope_dims, traditional=True, base=cfg.rope_base, scale=1.0, offset=offset
            )
            k = mx.fast.rope(
                k, cfg.rope_dims, traditional=True, base=cfg.rope_base, scale=1.0, offset=offset
            )
            keys, values = cache.update(k, v)
            attn = mx.fast.scaled_dot_product_attention(
                q, keys, values, scale=self.scale, mask=mask
            )
            x = x + layer.o(attn.transpose(0, 2, 1, 3).reshape(1, n, cfg.dim))
            h = mx.fast.rms_norm(x, layer.ffn_norm, cfg.norm_eps)
            x = x + layer.down(nn_silu(layer.gate(h)) * layer.up(h))
        last = mx.fast.rms_norm(x[:, -1, :], self.norm, cfg.norm_eps)
        return self.output(last)[0]


def nn_silu(x: mx.array) -> mx.array:
    return x * mx.sigmoid(x)


def load(path: str) -> tuple[LlamaModel, dict[str, Any]]:
    """The model in ``path`` (a GGUF file) and the file's metadata."""
    loaded: Any = mx.load(path, return_metadata=True)
    tensors, meta = loaded
    return LlamaModel(tensors, LlamaConfig.from_metadata(meta)), dict(meta)
