"""Any stream read as OpenAI chunks or as the AI SDK stream, resumable.

``GET /v1/streams/{id}/openai`` answers the stream as ``chat.completion.chunk``
lines (what ``POST /v1/chat/completions`` with ``"stream": true`` writes) and
``GET /v1/streams/{id}/ai-sdk`` as the Vercel AI SDK UI message stream, so one
generation feeds every kind of front end at once, whatever route started it.
Both resume like ``/events`` (``?after=N`` or ``Last-Event-ID``, the ``id:`` of
every chunk being its event's seq) with the same answers (docs/protocol.md,
"Resume edges"): 204 at or past the end of an ended stream, 404 for an
unknown one, 422 for a bad offset. They are the session core's HTTP stream
with the route's chat frames as the encoder.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.types import Receive, Scope, Send

from tokenwire.core.http_encoders import SSE_MEDIA_TYPE, ChatEncoder, ChatFrames, stream_headers
from tokenwire.core.http_response import stream_response
from tokenwire.errors import TokenwireError
from tokenwire.server import ai_sdk
from tokenwire.server.errors import error_response
from tokenwire.server.http_stream import no_content, parse_after
from tokenwire.server.openai_api import ChunkFrames
from tokenwire.server.services import Services
from tokenwire.stream import Stream

FramesFor = Callable[[Stream], ChatFrames]
HeadersFor = Callable[[str], list[tuple[bytes, bytes]]]


def openai_frames(stream: Stream) -> ChatFrames:
    return ChunkFrames(stream.id, int(stream.created_at), stream.model or "", False)


def ai_sdk_frames(stream: Stream) -> ChatFrames:
    return ai_sdk.UIMessageFrames(stream.id, stream.model)


class ChatView:
    """``GET /v1/streams/{id}/openai`` or ``/ai-sdk`` (see the module docstring)."""

    def __init__(
        self, services: Services, transport: str, frames: FramesFor, headers: HeadersFor
    ) -> None:
        self.services = services
        self.transport = transport
        self.frames = frames
        self.headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        services = self.services
        hub = services.hub
        stream_id = scope["path_params"]["stream_id"]
        try:
            after = parse_after(scope, dict(scope["headers"]))
            sub = hub.subscribe(stream_id, after, transport=self.transport)
            opened = await sub.open()
        except TokenwireError as exc:
            await error_response(exc.status, exc.code, exc.message)(scope, receive, send)
            return
        try:
            if sub.finished:  # at or past the end: what /events answers
                await no_content(stream_id, send)
                return
            config = services.config
            await stream_response(
                sub,
                ChatEncoder(self.frames(hub.get(stream_id)), self.transport),
                opened,
                self.headers(stream_id),
                receive,
                send,
                heartbeat_s=config.heartbeat_s,
                max_batch_events=config.max_batch_events,
                metrics=hub.metrics,
                connections=services.connections,
            )
        finally:
            sub.close()


def views(services: Services) -> dict[str, Any]:
    """The two views, by path suffix."""
    return {
        "openai": ChatView(
            services, "openai", openai_frames, lambda sid: stream_headers(SSE_MEDIA_TYPE, sid)
        ),
        "ai-sdk": ChatView(services, "ai_sdk", ai_sdk_frames, ai_sdk.headers),
    }
