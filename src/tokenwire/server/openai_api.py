"""The OpenAI-compatible API: ``POST /v1/chat/completions`` and ``GET /v1/models``.

Wire format as OpenAI's API reference gives it ("The chat completion chunk
object", ``stream_options.include_usage``): a streamed answer is SSE
``data: {chat.completion.chunk}`` lines — first ``delta.role = "assistant"``,
then one content delta per token, then an empty delta with ``finish_reason``,
then (``include_usage``) a chunk with ``"choices": []`` and the usage, every
other chunk carrying ``"usage": null`` — and ``data: [DONE]``. Errors use
OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``, which also
carries tokenwire's ``code`` and ``message``.

``logprobs: true`` (and ``top_logprobs``: 0..20 alternatives) adds, per content
chunk, ``choices[0].logprobs.content = [{token, logprob, bytes, top_logprobs}]``
from the token event's ``logprob``/``top_logprobs`` (the non-streamed answer
gathers them); a merged catch-up frame carries none, so its chunk has ``null``.

Every answer names its tokenwire stream in ``X-Tokenwire-Stream``, and each
chunk made from an event has an SSE ``id:`` that is the event's seq, so the
same stream can be resumed on ``/v1/streams/{id}/events``. A client that
disconnects leaves the stream (grace period), it does not stop it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from tokenwire import sse
from tokenwire.core.http_encoders import SSE_MEDIA_TYPE, stream_headers
from tokenwire.errors import (
    BodyTooLarge,
    InvalidRequest,
    TokenwireError,
    UnknownModel,
    excerpt,
)
from tokenwire.events import CANCELLED, DONE, ERROR, TOKEN, Event, dumps
from tokenwire.server.chat_sse import read_to_end, serve_sse, start_and_subscribe
from tokenwire.server.errors import read_json
from tokenwire.server.services import Services
from tokenwire.stream import Subscription

TRANSPORT = "openai"
FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "content_filter", "function_call"})
MAX_TOKENS_LIMIT = 32768
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
_DONE_LINE = b"data: [DONE]\n\n"
REFUSALS = frozenset({"model_busy", "model_unavailable"})
"""Error codes that mean the model never took the request: HTTP 503."""


class OpenAIError(TokenwireError):
    """An error answered in OpenAI's shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self, headers: Mapping[str, str] | None = None) -> JSONResponse:
        if self.status == 408:  # the rest of a slow body may still come: close after
            headers = {**(headers or {}), "connection": "close"}
        return JSONResponse(self.body(), status_code=self.status, headers=headers)

    @classmethod
    def from_tokenwire(cls, exc: TokenwireError) -> OpenAIError:
        if isinstance(exc, OpenAIError):
            return exc
        if isinstance(exc, UnknownModel):
            return cls(404, exc.message, code="model_not_found", param="model")
        if isinstance(exc, BodyTooLarge):
            return cls(413, exc.message, code=exc.code)
        if isinstance(exc, InvalidRequest):
            return cls(400, exc.message, code="invalid_value")
        kind = (
            "rate_limit_error"
            if exc.status == 429
            else "server_error"
            if exc.status >= 500
            else "invalid_request_error"
        )
        return cls(exc.status, exc.message, type=kind, code=exc.code)

    @classmethod
    def from_event(cls, event: Event) -> OpenAIError:
        """A stream's ``error`` event, as the status a non-streamed answer gets."""
        code = str(event.fields.get("code", "server_error"))
        message = str(event.fields.get("message", "the model failed"))
        if code == "context_length_exceeded":
            return cls(400, message, code=code, param="messages")
        status = 503 if code in REFUSALS else 502 if code.startswith("upstream") else 500
        return cls(status, message, type="server_error", code=code)


# -- request ------------------------------------------------------------------


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _bad_type(param: str, expected: str, value: Any) -> OpenAIError:
    return OpenAIError(
        400,
        f"Invalid type for '{param}': expected {expected}, but got {_json_type(value)} instead.",
        code="invalid_type",
        param=param,
    )


def _bad_value(param: str, message: str) -> OpenAIError:
    return OpenAIError(400, f"Invalid '{param}': {message}", code="invalid_value", param=param)


def _number(body: Mapping[str, Any], param: str, lo: float, hi: float, integer: bool) -> Any:
    value = body.get(param)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int if integer else int | float):
        raise _bad_type(param, "an integer" if integer else "a number", value)
    if not lo <= value <= hi:
        raise _bad_value(param, f"expected a value within {lo:g}..{hi:g}, but got {value} instead.")
    return value


def _content(index: int, message: Mapping[str, Any]) -> str:
    """A message's text: a string, an array of ``text`` parts, or null (assistant)."""
    param = f"messages[{index}].content"
    content = message.get("content")
    if isinstance(content, str):
        return content
    if content is None and message.get("role") == "assistant":
        return ""
    if not isinstance(content, list):
        raise _bad_type(param, "a string or an array of content parts", content)
    texts = []
    for j, part in enumerate(content):
        if not isinstance(part, Mapping) or not isinstance(part.get("text"), str):
            raise _bad_type(f"{param}[{j}]", "a text content part", part)
        if part.get("type") != "text":
            raise _bad_value(f"{param}[{j}].type", "only 'text' content parts are supported.")
        texts.append(part["text"])
    return "".join(texts)


def _messages(body: Mapping[str, Any]) -> list[dict[str, str]]:
    messages = body.get("messages")
    if messages is None:
        raise OpenAIError(
            400,
            "Missing required parameter: 'messages'.",
            code="missing_required_parameter",
            param="messages",
        )
    if not isinstance(messages, list):
        raise _bad_type("messages", "an array", messages)
    if not messages:
        raise _bad_value("messages", "empty array. Expected an array with minimum length 1.")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise _bad_type(f"messages[{i}]", "an object", message)
        role = message.get("role")
        if not isinstance(role, str) or role not in _ROLES:
            raise _bad_value(
                f"messages[{i}].role",
                f"{excerpt(role)} is not supported; expected one of {', '.join(_ROLES)}.",
            )
        out.append({"role": _ROLES[role], "content": _content(i, message)})
    return out


# Every field of OpenAI's Chat Completions request, and tokenwire's delay_ms. Ones
# not implemented are accepted and ignored, so any OpenAI client works unchanged;
# a name outside this list is ignored too (as vLLM does), but named: a warning
# line and the x-tokenwire-ignored-fields response header.
OPENAI_FIELDS = frozenset(
    "messages model audio frequency_penalty function_call functions logit_bias logprobs "
    "max_completion_tokens max_tokens metadata modalities n parallel_tool_calls prediction "
    "presence_penalty prompt_cache_key reasoning_effort response_format safety_identifier "
    "seed service_tier stop store stream stream_options temperature tool_choice tools "
    "top_logprobs top_p user verbosity web_search_options delay_ms".split()
)


class ChatCompletionRequest:
    """A ``POST /v1/chat/completions`` body, checked the way OpenAI checks it.
    Fields tokenwire has no use for (``tools``, ``user``…) are ignored."""

    def __init__(self, body: Any, default_model: str) -> None:
        if not isinstance(body, Mapping):
            raise OpenAIError(400, "The request body must be a JSON object.", code="invalid_type")
        model = body.get("model", default_model)
        if not isinstance(model, str):
            raise _bad_type("model", "a string", model)
        if not model:
            raise OpenAIError(
                400,
                "Invalid type for 'model': expected a non-empty string, but got an empty "
                "string instead.",
                code="invalid_type",
                param="model",
            )
        n = body.get("n")
        if n is not None and (isinstance(n, bool) or not isinstance(n, int)):
            raise _bad_type("n", "an integer", n)
        if n is not None and n != 1:
            raise _bad_value("n", "tokenwire generates one choice per request; 'n' must be 1.")
        stream = body.get("stream")
        if stream is not None and not isinstance(stream, bool):
            raise _bad_type("stream", "a boolean", stream)
        options = body.get("stream_options")
        if options is not None and not isinstance(options, Mapping):
            raise _bad_type("stream_options", "an object", options)
        include_usage = (options or {}).get("include_usage")
        if include_usage is not None and not isinstance(include_usage, bool):
            raise _bad_type("stream_options.include_usage", "a boolean", include_usage)
        max_tokens = _number(body, "max_completion_tokens", 1, MAX_TOKENS_LIMIT, True)
        if max_tokens is None:
            max_tokens = _number(body, "max_tokens", 1, MAX_TOKENS_LIMIT, True)
        stop = body.get("stop")
        if isinstance(stop, str):
            stop = [stop]
        if stop is not None and (
            not isinstance(stop, list) or not all(isinstance(s, str) for s in stop)
        ):
            raise _bad_type("stop", "a string or an array of strings", stop)
        seed = body.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise _bad_type("seed", "an integer", seed)
        logprobs = body.get("logprobs")
        if logprobs is not None and not isinstance(logprobs, bool):
            raise _bad_type("logprobs", "a boolean", logprobs)
        top_logprobs = _number(body, "top_logprobs", 0, 20, True)
        if top_logprobs is not None and not logprobs:
            raise _bad_value("top_logprobs", "'logprobs' must be set to true to use it.")
        generation: dict[str, Any] = {"model": model, "messages": _messages(body)}
        values = {
            "max_tokens": max_tokens,
            "temperature": _number(body, "temperature", 0, 2, False),
            "top_p": _number(body, "top_p", 0, 1, False),
            "stop": stop,
            "seed": seed,
            "delay_ms": body.get("delay_ms"),  # tokenwire extension (scripted model)
            "top_logprobs": (top_logprobs or 0) if logprobs else None,
        }
        generation.update({k: v for k, v in values.items() if v is not None})
        self.generation = generation
        self.ignored = sorted(str(k) for k in body if k not in OPENAI_FIELDS)
        if self.ignored:
            logging.getLogger("tokenwire").warning(
                "event=ignored_fields route=/v1/chat/completions fields=%s",
                ",".join(name[:64] for name in self.ignored[:10]),
            )
        self.stream = bool(stream)
        self.include_usage = bool(include_usage) and self.stream
        self.logprobs = bool(logprobs)


# -- response -----------------------------------------------------------------


def completion_id(stream_id: str) -> str:
    return "chatcmpl-" + stream_id.removeprefix("st_")


def finish_reason(terminal: Event) -> str:
    """OpenAI's finish_reason for a terminal event. A stopped stream (``cancelled``)
    reads ``stop``: its text simply ends there; strict clients know no other value."""
    reason = terminal.fields.get("finish_reason") if terminal.kind == DONE else "stop"
    return reason if reason in FINISH_REASONS else "stop"


def token_count(event: Event) -> int:
    """How many token events a (possibly merged catch-up) token frame covers."""
    return event.seq - int(event.fields.get("from_seq", event.seq)) + 1


def _token_logprob(token: str, logprob: Any) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}


def logprobs_content(event: Event) -> list[dict[str, Any]] | None:
    """OpenAI's ``logprobs.content`` for one token event, or None when it has none."""
    fields = event.fields
    if "logprob" not in fields:
        return None
    entry = _token_logprob(str(fields["text"]), fields["logprob"])
    entry["top_logprobs"] = [
        _token_logprob(str(t.get("token", "")), t.get("logprob"))
        for t in fields.get("top_logprobs") or ()
        if isinstance(t, Mapping)
    ]
    return [entry]


def usage(terminal: Event, completion_tokens: int) -> dict[str, int]:
    """The backend's usage when it reported one, else the tokens counted on the wire."""
    reported = terminal.fields.get("usage") if terminal.kind == DONE else None
    if isinstance(reported, Mapping) and "completion_tokens" in reported:
        prompt, completion = (
            int(reported.get("prompt_tokens", 0)),
            int(reported["completion_tokens"]),
        )
    else:
        prompt, completion = 0, completion_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


class ChunkFrames:
    """One streamed answer's ``chat.completion.chunk`` lines (a :class:`ChatFrames`)."""

    heartbeat = sse.HEARTBEAT

    def __init__(
        self,
        stream_id: str,
        created: int,
        model: str,
        include_usage: bool,
        logprobs: bool = False,
    ) -> None:
        head = dumps(
            {
                "id": completion_id(stream_id),
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
            }
        )[:-1]  # without the closing brace: chunks append their choices
        self._head = b"data: " + head
        self._tail = b',"usage":null}\n\n' if include_usage else b"}\n\n"
        self._content_open = self._head + b',"choices":[{"index":0,"delta":{"content":'
        # Token chunks end with their `id:` line (written last, as every tokenwire
        # SSE event): the closing parts stop after the data line's newline.
        self._content_close = b'},"logprobs":null,"finish_reason":null}]' + self._tail[:-1]
        self._content_logprobs = b'},"logprobs":{"content":'
        self._refusal_close = b',"refusal":null},"finish_reason":null}]' + self._tail[:-1]
        self.include_usage = include_usage
        self.logprobs = logprobs
        self.completion_tokens = 0

    def prelude(self) -> bytes:
        return (
            self._head
            + b',"choices":[{"index":0,"delta":{"role":"assistant","content":""},'
            + b'"logprobs":null,"finish_reason":null}]'
            + self._tail
        )

    def events(self, batch: list[Event]) -> bytes:
        out: list[bytes] = []
        for event in batch:
            if event.kind == TOKEN:
                self.completion_tokens += token_count(event)
                content = logprobs_content(event) if self.logprobs else None
                if content is None:
                    out += (
                        self._content_open,
                        dumps(event.fields["text"]),
                        self._content_close,
                        b"id: %d\n\n" % event.seq,
                    )
                else:
                    out += (
                        self._content_open,
                        dumps(event.fields["text"]),
                        self._content_logprobs,
                        dumps(content),
                        self._refusal_close,
                        b"id: %d\n\n" % event.seq,
                    )
            elif event.kind in (DONE, CANCELLED):
                out.append(self._finish(event))
            elif event.kind == ERROR:
                # OpenAI's streaming error: a data line holding an error object (the
                # openai clients raise APIError on it); [DONE] then ends the body.
                error = OpenAIError.from_event(event)
                out.append(b"data: %s\nid: %d\n\n%s" % (dumps(error.body()), event.seq, _DONE_LINE))
            # progress, metrics, data and tensors have no place in a chat completion.
        return b"".join(out)

    def _finish(self, terminal: Event) -> bytes:
        reason = dumps(finish_reason(terminal))
        out = [
            self._head,
            b',"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":',
            reason,
            b"}]",
            self._tail[:-1],
            b"id: %d\n\n" % terminal.seq,
        ]
        if self.include_usage:
            used = dumps(usage(terminal, self.completion_tokens))
            out += [self._head, b',"choices":[],"usage":', used, b"}\n\n"]
        out.append(_DONE_LINE)
        return b"".join(out)


class _Primed:
    """``frames`` whose prelude also carries the events read before the status line."""

    def __init__(self, frames: ChunkFrames, first: list[Event]) -> None:
        self.frames = frames
        self.first = first
        self.heartbeat = frames.heartbeat

    def prelude(self) -> bytes:
        first, self.first = self.first, []
        return self.frames.prelude() + self.frames.events(first)

    def events(self, batch: list[Event]) -> bytes:
        return self.frames.events(batch)


def completion_object(
    stream_id: str, created: int, model: str, events: list[Event], logprobs: bool = False
) -> Any:
    """The non-streamed ``chat.completion`` for a stream's events."""
    tokens = [e for e in events if e.kind == TOKEN]
    terminal = events[-1]
    choice_logprobs = None
    if logprobs:
        content = [entry for e in tokens for entry in logprobs_content(e) or ()]
        choice_logprobs = {"content": content, "refusal": None}
    return {
        "id": completion_id(stream_id),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "".join(e.fields["text"] for e in tokens),
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": choice_logprobs,
                "finish_reason": finish_reason(terminal),
            }
        ],
        "usage": usage(terminal, sum(token_count(e) for e in tokens)),
    }


# -- routes -------------------------------------------------------------------


class ChatCompletionsEndpoint:
    """``POST /v1/chat/completions``, streamed or not."""

    def __init__(self, services: Services) -> None:
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        services = self.services
        try:
            try:
                body = await read_json(
                    Request(scope, receive),
                    services.config.max_body_bytes,
                    services.config.body_timeout_s,
                )
            except BodyTooLarge:
                raise
            except InvalidRequest as exc:
                raise OpenAIError(400, exc.message, code="invalid_json") from None
            request = ChatCompletionRequest(body, services.models.default or "")
            sub = await start_and_subscribe(services, request.generation, TRANSPORT)
        except TokenwireError as exc:
            await OpenAIError.from_tokenwire(exc).response()(scope, receive, send)
            return
        except OpenAIError as exc:
            await exc.response()(scope, receive, send)
            return
        try:
            await self._answer(request, sub, scope, receive, send)
        finally:
            sub.close()

    async def _answer(
        self,
        request: ChatCompletionRequest,
        sub: Subscription,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        config = self.services.config
        stream = self.services.hub.get(sub.stream_id)
        created, model = int(stream.created_at), stream.model or ""
        tokens = self.services.access.token_headers(sub.stream_id)
        if request.ignored:
            # bounded, and ASCII: a header cannot carry any name a JSON body can
            named = ",".join(name[:64] for name in request.ignored[:10])
            # printable ASCII only: a control character (\r, \x01) is no header value
            named = "".join(c if " " <= c <= "~" else "?" for c in named)
            tokens = [*tokens, (b"x-tokenwire-ignored-fields", named.encode("ascii"))]
        stream_header = {"x-tokenwire-stream": sub.stream_id}
        stream_header.update((name.decode(), value.decode()) for name, value in tokens)
        if request.stream:
            # The status line waits for the first event (at most a heartbeat interval):
            # a request refused as it starts (model_busy when the queue filled up
            # meanwhile, model_unavailable) gets its documented 503, not a 200 with
            # the error in the body. A failure once generating stays in the stream.
            try:
                first = await sub.read(config.max_batch_events, config.heartbeat_s)
            except TokenwireError as exc:
                await OpenAIError.from_tokenwire(exc).response(stream_header)(scope, receive, send)
                return
            if first and first[0].kind == ERROR and first[0].fields.get("code") in REFUSALS:
                error = OpenAIError.from_event(first[0]).response(stream_header)
                await error(scope, receive, send)
                return
            frames = ChunkFrames(
                sub.stream_id, created, model, request.include_usage, request.logprobs
            )
            headers = [*stream_headers(SSE_MEDIA_TYPE, sub.stream_id), *tokens]
            if sub.finished:  # the whole answer came at once
                body = frames.prelude() + frames.events(first)
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
            primed = _Primed(frames, first)
            links = self.services.connections
            await serve_sse(self.services.hub, config, sub, primed, headers, receive, send, links)
            return
        try:
            events = await read_to_end(config, sub, receive)
        except TokenwireError as exc:
            response: Response = OpenAIError.from_tokenwire(exc).response(stream_header)
        else:
            if events is None:
                return  # the client went away: that is a leave, nothing to answer
            if events[-1].kind == ERROR:
                response = OpenAIError.from_event(events[-1]).response(stream_header)
            else:
                answer = completion_object(sub.stream_id, created, model, events, request.logprobs)
                response = JSONResponse(answer, headers=stream_header)
        await response(scope, receive, send)


def routes(services: Services) -> list[BaseRoute]:
    created = int(time.time())

    def model_object(name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": created, "owned_by": "tokenwire"}

    async def list_models(request: Request) -> Response:
        data = [model_object(name) for name in services.models.names()]
        return JSONResponse({"object": "list", "data": data})

    async def retrieve_model(request: Request) -> Response:
        name = request.path_params["model"]
        try:
            services.models.resolve(name)
        except TokenwireError as exc:
            return OpenAIError.from_tokenwire(exc).response()
        return JSONResponse(model_object(name))

    return [
        Route("/v1/chat/completions", ChatCompletionsEndpoint(services), methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model:path}", retrieve_model, methods=["GET"]),
    ]
