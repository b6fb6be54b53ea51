"""Choosing the next token from logits: greedy, or temperature with top-k, top-p and min-p.

The order is llama.cpp's sampler chain as llama-cpp-python builds it (top-k,
top-p, min-p, then temperature, then a draw), so one request reads the same on
either backend: top-p and min-p look at the untempered distribution.
Temperature 0 is greedy (the first of equal maxima, like ``argmax``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class SamplerSettings:
    temperature: float = 0.7
    top_k: int = 40  # 0: off
    top_p: float = 0.95  # 1.0: off
    min_p: float = 0.05  # 0.0: off

    def __post_init__(self) -> None:
        if self.temperature < 0 or self.top_k < 0 or not 0 <= self.top_p <= 1:
            raise ValueError("temperature and top_k must be >= 0, top_p within 0..1")
        if not 0 <= self.min_p <= 1:
            raise ValueError("min_p must be within 0..1")


class Sampler:
    """Draws token ids from logits; seeded, so a seed gives the same choices."""

    def __init__(self, settings: SamplerSettings, seed: int | None = None) -> None:
        self.settings = settings
        self._rng = np.random.default_rng(seed)

    def __call__(self, logits: np.ndarray) -> int:
        s = self.settings
        x = np.asarray(logits, dtype=np.float64).reshape(-1)
        if s.temperature == 0 or s.top_k == 1:
            return int(np.argmax(x))
        ids = candidates(x, s)
        scaled = x[ids] / s.temperature
        probs = np.exp(scaled - scaled.max())
        probs /= probs.sum()
        return int(ids[self._rng.choice(len(ids), p=probs)])


def candidates(logits: np.ndarray, s: SamplerSettings) -> np.ndarray:
    """The ids that survive top-k, top-p and min-p, most likely first."""
    n = logits.shape[0]
    if 0 < s.top_k < n:
        ids = np.argpartition(-logits, s.top_k - 1)[: s.top_k]
    else:
        ids = np.arange(n)
    ids = ids[np.argsort(-logits[ids], kind="stable")]
    probs = np.exp(logits[ids] - logits[ids[0]])
    probs /= probs.sum()
    keep = len(ids)
    if s.top_p < 1.0:
        # the smallest prefix whose mass reaches top_p (at least one token)
        keep = min(keep, int(np.searchsorted(np.cumsum(probs), s.top_p)) + 1)
    if s.min_p > 0.0:
        keep = min(keep, max(1, int(np.count_nonzero(probs >= s.min_p * probs[0]))))
    return ids[:keep]
