"""The Vercel AI SDK UI message stream: ``POST /v1/ai-sdk/chat`` for ``useChat``.

The protocol is the AI SDK's own (``ai`` 5/6: docs "Stream Protocols", data
stream section; ``uiMessageChunkSchema`` in ``ui-message-stream/ui-message-chunks.ts``;
``UI_MESSAGE_STREAM_HEADERS``; ``JsonToSseTransformStream``): SSE whose every
event is ``data: <one UI message chunk as JSON>``, ending with ``data: [DONE]``,
under the header ``x-vercel-ai-ui-message-stream: v1``. A tokenwire stream maps
onto one assistant message::

    start {messageId, messageMetadata: {tokenwire: {stream, model}}}, start-step,
    text-start, text-delta…, [data-progress, data-metrics, data-app],
    text-end, finish-step, finish {finishReason, messageMetadata}   (done)
    text-end, error {errorText}, finish-step, finish {finishReason: "error"}   (error)
    text-end, finish-step, abort {reason}   (cancelled)

The request body is what ``DefaultChatTransport`` posts: ``{id, messages,
trigger, messageId, …body}``, each message ``{id, role, parts}`` of which the
``text`` parts are read. ``GET /v1/ai-sdk/chat/{chatId}/stream`` is the
transport's resume URL (``useChat({resume: true})``): it replays the chat's
running stream from its start, which is what the transport expects by default
(``resumeStreamIsReplay``), or answers 204 when nothing runs. Over Redis the
chat index is shared (:mod:`tokenwire.server.chat_index`) and the stream may run
on another node, so a reload resumes through any gateway.

A chat id belongs to the client that first used it (docs/protocol.md, "Access
control"): with API keys on, to its key (or a read token of the chat's current
stream, for a resume); without keys, to whoever holds the chat token the first
``POST`` answered with (header ``x-tokenwire-chat-token``), which later posts and
resumes of that id must send back (that header, ``Authorization: Bearer`` or
``?token=``). Anyone else's ``POST`` with that id still streams its answer, but
the id stays bound to its owner's stream; anyone else's resume gets 403
``chat_taken``.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from tokenwire.broker.redis_log import BrokerUnavailable
from tokenwire.errors import InvalidRequest, StreamNotFound, TokenwireError
from tokenwire.events import (
    CANCELLED,
    DATA,
    DONE,
    ERROR,
    METRICS,
    PROGRESS,
    TOKEN,
    Event,
    dumps,
)
from tokenwire.server.access import Credentials, Forbidden, credentials_of
from tokenwire.server.chat_index import Chat, ChatIndex, chat_index
from tokenwire.server.chat_sse import serve_sse, start_and_subscribe
from tokenwire.server.errors import error_response, read_json
from tokenwire.server.services import Services
from tokenwire.stream import Subscription

TRANSPORT = "ai_sdk"
TEXT_ID = "text-1"
HEARTBEAT = b": keep-alive\n\n"  # the AI SDK's own keep-alive comment
MAX_ID_CHARS = 256
# Body fields passed on to the generation (useChat sends them through its `body` option).
GENERATION_FIELDS = ("model", "max_tokens", "temperature", "top_p", "stop", "seed", "delay_ms")
# tokenwire / OpenAI finish reasons -> the AI SDK's finishReason enum.
FINISH_REASONS = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content-filter",
    "tool_calls": "tool-calls",
    "function_call": "tool-calls",
}
_DONE_LINE = b"data: [DONE]\n\n"
_ROLES = ("system", "user", "assistant")


def headers(stream_id: str) -> list[tuple[bytes, bytes]]:
    """``UI_MESSAGE_STREAM_HEADERS`` (less ``connection``, the server's business)
    and the tokenwire stream id."""
    return [
        (b"content-type", b"text/event-stream"),
        (b"cache-control", b"no-cache"),
        (b"x-vercel-ai-ui-message-stream", b"v1"),
        (b"x-accel-buffering", b"no"),
        (b"x-tokenwire-stream", stream_id.encode()),
    ]


# -- request ------------------------------------------------------------------


def _optional_id(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_CHARS:
        raise InvalidRequest(f"'{key}' must be a string of 1..{MAX_ID_CHARS} characters")
    return value


def _text(index: int, message: Mapping[str, Any]) -> str:
    """A UI message's text: its ``text`` parts joined. Other parts (files, tools,
    reasoning, data, step markers) carry nothing a text model reads."""
    parts = message.get("parts")
    if parts is None and isinstance(message.get("content"), str):
        return str(message["content"])  # AI SDK 4 messages
    if not isinstance(parts, list):
        raise InvalidRequest(f"messages[{index}].parts must be an array of UI message parts")
    texts = []
    for j, part in enumerate(parts):
        if not isinstance(part, Mapping) or not isinstance(part.get("type"), str):
            raise InvalidRequest(f"messages[{index}].parts[{j}] must be an object with a 'type'")
        if part["type"] == "text":
            if not isinstance(part.get("text"), str):
                raise InvalidRequest(f"messages[{index}].parts[{j}].text must be a string")
            texts.append(part["text"])
    return "".join(texts)


def chat_request(body: Any) -> tuple[dict[str, Any], str | None]:
    """A ``useChat`` request body as the ``POST /v1/streams`` body it asks for, and
    the chat's id."""
    if not isinstance(body, Mapping):
        raise InvalidRequest("the request body must be a JSON object, as useChat sends it")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array of UI messages")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise InvalidRequest(f"messages[{i}] must be an object")
        role = message.get("role")
        if role not in _ROLES:
            raise InvalidRequest(f"messages[{i}].role must be system, user or assistant")
        out.append({"role": role, "content": _text(i, message)})
    for key in ("messageId", "trigger"):
        _optional_id(body, key)
    generation: dict[str, Any] = {"messages": out}
    generation.update({k: body[k] for k in GENERATION_FIELDS if body.get(k) is not None})
    return generation, _optional_id(body, "id")


# -- response -----------------------------------------------------------------


def _part(part: Mapping[str, Any], seq: int | None = None) -> bytes:
    data = b"data: " + dumps(part)
    return data + b"\n\n" if seq is None else data + b"\nid: %d\n\n" % seq


class UIMessageFrames:
    """One response's UI message chunks (a :class:`~tokenwire.server.chat_sse.ChatFrames`).

    The SSE ``id:`` of the last chunk made from an event is that event's seq, for
    resuming on ``/v1/streams/{id}/events``; ``start`` and ``[DONE]`` have none."""

    heartbeat = HEARTBEAT

    def __init__(self, stream_id: str, model: str | None) -> None:
        self.stream_id = stream_id
        self.model = model
        self.text_open = False

    def prelude(self) -> bytes:
        metadata = {"tokenwire": {"stream": self.stream_id, "model": self.model}}
        start = {"type": "start", "messageId": self.stream_id, "messageMetadata": metadata}
        return _part(start) + _part({"type": "start-step"})

    def events(self, batch: list[Event]) -> bytes:
        out: list[bytes] = []
        for event in batch:
            parts = self._parts(event)
            if parts:
                out += [_part(p) for p in parts[:-1]]
                out.append(_part(parts[-1], event.seq))
            if event.terminal:
                out.append(_DONE_LINE)
        return b"".join(out)

    def _parts(self, event: Event) -> list[dict[str, Any]]:
        fields = event.fields
        if event.kind == TOKEN:
            parts: list[dict[str, Any]] = []
            if not self.text_open:
                self.text_open = True
                parts.append({"type": "text-start", "id": TEXT_ID})
            parts.append({"type": "text-delta", "id": TEXT_ID, "delta": fields["text"]})
            return parts
        if event.kind == PROGRESS:
            data = {k: v for k, v in fields.items() if k != "from_seq"}
            return [{"type": "data-progress", "id": "progress", "data": data, "transient": True}]
        if event.kind == METRICS:
            return [{"type": "data-metrics", "id": "metrics", "data": fields}]
        if event.kind == DATA:
            return [{"type": "data-app", "data": fields.get("data")}]
        if not event.terminal:
            return []  # tensors: read them on /v1/streams/{id}/events
        parts = [{"type": "text-end", "id": TEXT_ID}] if self.text_open else []
        self.text_open = False
        if event.kind == DONE:
            reason = FINISH_REASONS.get(str(fields.get("finish_reason")), "other")
            meta = {"tokenwire": {"finish_reason": fields.get("finish_reason")}}
            if fields.get("usage") is not None:
                meta["tokenwire"]["usage"] = fields["usage"]
            finish = {"type": "finish", "finishReason": reason, "messageMetadata": meta}
            return [*parts, {"type": "finish-step"}, finish]
        if event.kind == ERROR:
            error = {"code": fields.get("code"), "message": fields.get("message")}
            return [
                *parts,
                {"type": "error", "errorText": f"{error['code']}: {error['message']}"},
                {"type": "finish-step"},
                {
                    "type": "finish",
                    "finishReason": "error",
                    "messageMetadata": {"tokenwire": {"error": error}},
                },
            ]
        assert event.kind == CANCELLED
        return [*parts, {"type": "finish-step"}, {"type": "abort", "reason": fields.get("reason")}]


# -- routes -------------------------------------------------------------------


CHAT_TOKEN_HEADER = b"x-tokenwire-chat-token"


class ChatTakenError(Forbidden):
    code = "chat_taken"

    def __init__(self, chat_id: str) -> None:
        super().__init__(
            f"the chat id {chat_id[:64]!r} belongs to another client; send its chat token "
            "(x-tokenwire-chat-token) or the API key that started it"
        )


def _presented_token(scope: Scope) -> str | None:
    """A chat token sent as ``x-tokenwire-chat-token``, ``Authorization: Bearer`` or
    ``?token=``."""
    bearer: str | None = None
    for name, value in scope["headers"]:
        if name == CHAT_TOKEN_HEADER:
            return str(value.decode("latin-1").strip())
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            bearer = str(value[7:].decode("latin-1").strip())
    if bearer is not None:
        return bearer
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
    return values[0] if values else None


async def _owner_for(
    chats: ChatIndex, chat_id: str, credentials: Credentials, scope: Scope
) -> str | None:
    """Who a ``POST`` naming ``chat_id`` speaks for: the existing owner when the
    request proves it is them, a new owner for a new id, None for someone else."""
    chat = await chats.get(chat_id)
    if chat is None:
        return credentials.key or "chat_" + secrets.token_urlsafe(24)
    return chat.owner if _is_owner(chat, credentials, scope) else None


def _is_owner(chat: Chat, credentials: Credentials, scope: Scope) -> bool:
    if credentials.key is not None:
        return credentials.key == chat.owner
    grant = credentials.grant
    if grant is not None:  # a read token of the chat's current stream
        return grant.stream == chat.stream_id
    if not credentials.open:
        return False
    token = _presented_token(scope)
    return token is not None and hmac.compare_digest(token.encode(), chat.owner.encode())


class ChatEndpoint:
    """``POST /v1/ai-sdk/chat``: start a generation and answer with its UI message stream."""

    def __init__(self, services: Services, chats: ChatIndex) -> None:
        self.services = services
        self.chats = chats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        services = self.services
        try:
            body = await read_json(
                Request(scope, receive),
                services.config.max_body_bytes,
                services.config.body_timeout_s,
            )
            generation, chat_id = chat_request(body)
            credentials = credentials_of(scope)
            owner = None
            if chat_id is not None:
                owner = await _owner_for(self.chats, chat_id, credentials, scope)
            sub = await start_and_subscribe(services, generation, TRANSPORT)
        except TokenwireError as exc:
            await error_response(exc.status, exc.code, exc.message)(scope, receive, send)
            return
        chat_token = None
        if chat_id is not None and owner is not None:
            try:
                await self.chats.set(chat_id, sub.stream_id, owner)
            except BrokerUnavailable as exc:
                sub.close()  # nobody reads it: the grace period ends it
                await error_response(exc.status, exc.code, exc.message)(scope, receive, send)
                return
            chat_token = None if credentials.key is not None else owner
        try:
            await _serve(services, sub, receive, send, chat_token)
        finally:
            sub.close()


class ResumeEndpoint:
    """``GET /v1/ai-sdk/chat/{chat_id}/stream``: replay the chat's running stream, or 204."""

    def __init__(self, services: Services, chats: ChatIndex) -> None:
        self.services = services
        self.chats = chats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        chat_id = scope["path_params"]["chat_id"]
        sub: Subscription | None = None
        try:
            chat = await self.chats.get(chat_id)
            if chat is not None:
                sub = await self._open(chat_id, chat, scope)
        except TokenwireError as exc:
            await error_response(exc.status, exc.code, exc.message)(scope, receive, send)
            return
        if sub is None:
            await Response(status_code=204)(scope, receive, send)
            return
        try:
            await _serve(self.services, sub, receive, send)
        finally:
            sub.close()

    async def _open(self, chat_id: str, chat: Chat, scope: Scope) -> Subscription | None:
        """The chat's running stream from its start, wherever it runs; None once ended."""
        hub = self.services.hub
        sub = None
        try:
            # resolve: a stream another gateway (or a worker) runs is known from Redis.
            if (await hub.resolve(chat.stream_id)).status.ended:
                raise StreamNotFound(chat.stream_id)
            if not _is_owner(chat, credentials_of(scope), scope):
                raise ChatTakenError(chat_id)
            sub = hub.subscribe(chat.stream_id, 0, transport=TRANSPORT)
            await sub.open()
        except StreamNotFound:
            if sub is not None:
                sub.close()
            await self.chats.forget(chat_id, chat.stream_id)
            return None
        except BaseException:
            if sub is not None:
                sub.close()
            raise
        return sub


async def _serve(
    services: Services,
    sub: Subscription,
    receive: Receive,
    send: Send,
    chat_token: str | None = None,
) -> None:
    model = services.hub.get(sub.stream_id).model
    frames = UIMessageFrames(sub.stream_id, model)
    hdrs = headers(sub.stream_id) + services.access.token_headers(sub.stream_id)
    if chat_token is not None:
        hdrs.append((CHAT_TOKEN_HEADER, chat_token.encode()))
    links = services.connections
    await serve_sse(services.hub, services.config, sub, frames, hdrs, receive, send, links)


def routes(services: Services) -> list[BaseRoute]:
    chats = chat_index(services.hub.broker)
    return [
        Route("/v1/ai-sdk/chat", ChatEndpoint(services, chats), methods=["POST"]),
        Route("/v1/ai-sdk/chat/{chat_id}/stream", ResumeEndpoint(services, chats), methods=["GET"]),
    ]
