"""Token logprobs: the chosen token's log-probability and its top-k alternatives.

A backend asked for them (``GenerationRequest.top_logprobs`` = k, 0..20) yields
:class:`TokenPiece` items: a ``str`` (so every consumer that only wants text is
unchanged) that also carries ``logprob`` and ``top_logprobs``, a tuple of
``(token text, logprob)`` pairs, most likely first.

The logprobs are those of the model's own distribution, the log-softmax of the
raw logits, before temperature, top-k, top-p or min-p reshape it for
sampling: what OpenAI's API reports too. When one text piece covers several
tokens (a multi-byte character split across tokens, text held back as the
possible start of a stop string), its ``logprob`` is the sum over those
tokens, the log-probability of the whole piece, and its alternatives are
those of its first token, where the candidates parted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

MAX_TOP_LOGPROBS = 20
_DIGITS = 5  # decimals kept on the wire


class TokenPiece(str):
    """A text piece with its logprobs (see the module docstring)."""

    logprob: float
    top_logprobs: tuple[tuple[str, float], ...]

    def __new__(
        cls, text: str, logprob: float, top_logprobs: Sequence[tuple[str, float]] = ()
    ) -> TokenPiece:
        piece = super().__new__(cls, text)
        piece.logprob = logprob
        piece.top_logprobs = tuple(top_logprobs)
        return piece

    def event_fields(self) -> dict[str, Any]:
        """The fields a ``token`` event gains."""
        return {
            "logprob": self.logprob,
            "top_logprobs": [{"token": t, "logprob": lp} for t, lp in self.top_logprobs],
        }


def logprob_fields(piece: str) -> dict[str, Any] | None:
    """``piece``'s logprob fields for a ``token`` event, or None when it has none."""
    return piece.event_fields() if isinstance(piece, TokenPiece) else None


def log_softmax(logits: Any) -> np.ndarray:
    """``log(softmax(logits))`` in float64 (a 49k vocabulary loses digits in float32)."""
    x = np.asarray(logits, dtype=np.float64).reshape(-1)
    shifted = x - x.max()
    result: np.ndarray = shifted - np.log(np.exp(shifted).sum())
    return result


def top_candidates(
    logprobs: np.ndarray, chosen: int, k: int
) -> tuple[float, list[tuple[int, float]]]:
    """The logprob of ``chosen`` and the ``k`` most likely ids with theirs, best first."""
    value = round(float(logprobs[chosen]), _DIGITS)
    if k <= 0:
        return value, []
    k = min(k, logprobs.shape[0])
    best = np.argpartition(-logprobs, k - 1)[:k]
    best = best[np.argsort(-logprobs[best], kind="stable")]
    return value, [(int(i), round(float(logprobs[i]), _DIGITS)) for i in best]


class PieceLogprobs:
    """Collects the logprobs of the tokens behind one text piece (see the docstring)."""

    __slots__ = ("_k", "_logprob", "_text_of", "_top")

    def __init__(self, k: int, text_of: Callable[[int], str]) -> None:
        self._k = k
        self._text_of = text_of
        self._logprob: float | None = None
        self._top: list[tuple[str, float]] = []

    def add(self, logits: Any, chosen: int) -> None:
        """One token: ``chosen`` was picked from ``logits``."""
        value, top = top_candidates(log_softmax(logits), chosen, self._k)
        if self._logprob is None:
            self._logprob = value
            self._top = [(self._text_of(i), lp) for i, lp in top]
        else:
            self._logprob = round(self._logprob + value, _DIGITS)

    def piece(self, text: str) -> str:
        """``text`` carrying the logprobs gathered since the last piece."""
        if self._logprob is None:
            return text
        piece = TokenPiece(text, self._logprob, self._top)
        self._logprob, self._top = None, []
        return piece
