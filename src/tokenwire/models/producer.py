"""Turn a backend's ``generate()`` into the events of one stream.

``model_producer`` yields a ``token`` event per text piece (with ``logprob``
and ``top_logprobs`` when the request asked for them), then a ``metrics``
event (time to first token, tokens/s, inter-token latency) and the terminal
``done {finish_reason, usage}``. A backend that raises ends the stream with an
``error`` event instead: its own code for a :class:`~tokenwire.errors.TokenwireError`
(``upstream_http_502``, ``model_busy``…), ``model_error`` for anything else.

Cancellation is the consumer's: cancelling the task that iterates, or closing
the generator, closes the backend's generator at once, which is how a backend
learns to stop (within one token for the embedded model).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from tokenwire.errors import TokenwireError
from tokenwire.events import TOKEN, Event
from tokenwire.metrics import Metrics
from tokenwire.models.base import Finish, GenerationRequest, ModelBackend
from tokenwire.models.logprobs import logprob_fields
from tokenwire.tracker import StreamingTracker, TokenMetrics

log = logging.getLogger(__name__)


async def model_producer(
    backend: ModelBackend,
    request: GenerationRequest,
    *,
    tracker: StreamingTracker | None = None,
    metrics: Metrics | None = None,
) -> AsyncIterator[Event]:
    """The events of one generation; see the module docstring. With ``metrics``
    (the server's :class:`~tokenwire.metrics.Metrics`), the figures are also
    exported for ``/metrics`` (see :func:`record`)."""
    if tracker is None:
        tracker = StreamingTracker()  # TTFT counts from the first iteration
    else:
        tracker.restart()
    finish: Finish | None = None
    pieces = backend.generate(request)
    try:
        try:
            async for item in pieces:
                if isinstance(item, Finish):
                    finish = item
                    break
                if item:
                    tracker.on_token()
                    extra = logprob_fields(item)
                    yield Event.token(item) if extra is None else _token(item, extra)
        except TokenwireError as exc:
            _count_error(metrics)
            yield Event.error(exc.code, exc.message)
            return
        except Exception as exc:
            log.exception("model %r failed", request.model)
            _count_error(metrics)
            yield Event.error("model_error", f"{type(exc).__name__}: {exc}")
            return
    finally:
        close = getattr(pieces, "aclose", None)
        if close is not None:
            await close()
    usage = finish.usage if finish is not None else None
    counted = usage.completion_tokens if usage is not None and usage.completion_tokens else None
    snapshot = tracker.snapshot(tokens=counted)
    if metrics is not None:
        record(metrics, snapshot)
    yield Event.metrics(**snapshot.to_dict())
    yield Event.done(
        finish.finish_reason if finish is not None else "stop",
        usage.to_dict() if usage is not None else None,
    )


def _token(text: str, extra: dict[str, Any]) -> Event:
    """A ``token`` event with the piece's ``logprob`` and ``top_logprobs``."""
    return Event(TOKEN, {"text": str(text), **extra})


def record(metrics: Metrics, snapshot: TokenMetrics) -> None:
    """Export one finished generation's figures: TTFT and median inter-token
    latency histograms, token and generation counters."""
    metrics.inc("tokenwire_model_generations_total")
    metrics.inc("tokenwire_model_tokens_total", snapshot.tokens)
    if snapshot.ttft_ms is not None:
        metrics.histogram(
            "tokenwire_model_ttft_seconds", "generation start to its first token"
        ).observe(snapshot.ttft_ms / 1000)
    if snapshot.itl_p50_ms is not None:
        metrics.histogram(
            "tokenwire_model_itl_p50_seconds", "median inter-token latency of each generation"
        ).observe(snapshot.itl_p50_ms / 1000)


def _count_error(metrics: Metrics | None) -> None:
    if metrics is not None:
        metrics.inc("tokenwire_model_errors_total")
