"""Turn a backend's ``generate()`` into the events of one stream.

``model_producer`` yields a ``token`` event per text piece, then a ``metrics``
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

from tokenwire.errors import TokenwireError
from tokenwire.events import Event
from tokenwire.models.base import Finish, GenerationRequest, ModelBackend
from tokenwire.tracker import StreamingTracker

log = logging.getLogger(__name__)


async def model_producer(
    backend: ModelBackend,
    request: GenerationRequest,
    *,
    tracker: StreamingTracker | None = None,
) -> AsyncIterator[Event]:
    """The events of one generation; see the module docstring."""
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
                    yield Event.token(item)
        except TokenwireError as exc:
            yield Event.error(exc.code, exc.message)
            return
        except Exception as exc:
            log.exception("model %r failed", request.model)
            yield Event.error("model_error", f"{type(exc).__name__}: {exc}")
            return
    finally:
        close = getattr(pieces, "aclose", None)
        if close is not None:
            await close()
    usage = finish.usage if finish is not None else None
    counted = usage.completion_tokens if usage is not None and usage.completion_tokens else None
    yield Event.metrics(**tracker.snapshot(tokens=counted).to_dict())
    yield Event.done(
        finish.finish_reason if finish is not None else "stop",
        usage.to_dict() if usage is not None else None,
    )
