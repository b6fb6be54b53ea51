"""Every error the server sends is JSON: ``{"error": {"code", "message"}}``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tokenwire.errors import BodyTooLargeError, InvalidRequestError, TokenwireError
from tokenwire.events import dumps, loads

log = logging.getLogger("tokenwire")


class RequestTimeoutError(TokenwireError):
    """The request body did not arrive in time; the connection is closed after this."""

    status = 408
    code = "request_timeout"


_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    422: "invalid_request",
    429: "limit_exceeded",
    503: "overloaded",
}


def error_response(status: int, code: str, message: str) -> JSONResponse:
    # After a 408 the rest of the body may still be on its way: do not keep the
    # connection for another request.
    headers = {"connection": "close"} if status == 408 else None
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


async def on_tokenwire_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TokenwireError)
    return error_response(exc.status, exc.code, exc.message)


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail))


async def on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "internal_error", "internal server error")


EXCEPTION_HANDLERS = {
    TokenwireError: on_tokenwire_error,
    HTTPException: on_http_error,
    Exception: on_unexpected,
}


async def read_json(request: Request, limit: int, timeout: float = 30.0) -> object:
    """The request body as JSON, refusing bodies over ``limit`` bytes before reading
    them, and bodies that take longer than ``timeout`` seconds to arrive (a slow
    sender holds a connection and a buffer)."""
    length = request.headers.get("content-length")
    if length is not None:
        if not (length.isascii() and length.isdigit()):
            raise InvalidRequestError("invalid Content-Length")
        if int(length) > limit:
            raise BodyTooLargeError(f"request body over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise BodyTooLargeError(f"request body over {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeoutError(f"the request body did not arrive within {timeout:g} s") from None
    body = b"".join(chunks)
    if not body.strip():
        raise InvalidRequestError("the request body is empty; send a JSON object")
    try:
        return loads(body)
    except ValueError:
        raise InvalidRequestError("the request body is not valid JSON") from None


class PlainErrorsAsJSON:
    """ASGI middleware for an app we do not write the errors of (engine.io under
    ``/socket.io``, Starlette's CORS preflights): a 4xx it answers in plain text
    ("Invalid session …") is sent as ``{"error": {"code", "message"}}`` instead,
    with the text as the message. Only the paths and methods named go through it."""

    MAX_MESSAGE_CHARS = 200

    def __init__(self, app: ASGIApp, prefix: str, methods: frozenset[str] | None = None) -> None:
        self.app = app
        self.prefix = prefix
        self.methods = methods

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "app":
            raise AttributeError(name)
        return getattr(self.app, name)  # create_app()'s .state, .router, .sio

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if (
            scope["type"] != "http"
            or not scope["path"].startswith(self.prefix)
            or (self.methods is not None and scope["method"] not in self.methods)
        ):
            # no frame of its own for what it passes through (a stream's whole life)
            return self.app(scope, receive, send)
        return self._rewrite(scope, receive, send)

    async def _rewrite(self, scope: Scope, receive: Receive, send: Send) -> None:
        held: Message | None = None
        text = bytearray()

        async def send_json_errors(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers") or [])
                media = headers.get(b"content-type", b"")
                if 400 <= message["status"] < 500 and not media.startswith(b"application/json"):
                    held = message
                    return
            elif held is not None and message["type"] == "http.response.body":
                text.extend(message.get("body", b"")[: self.MAX_MESSAGE_CHARS * 4])
                if message.get("more_body"):
                    return
                await self._send_json(send, held, bytes(text))
                return
            await send(message)

        await self.app(scope, receive, send_json_errors)

    async def _send_json(self, send: Send, start: Message, text: bytes) -> None:
        status = start["status"]
        message = text.decode("utf-8", "replace").strip()[: self.MAX_MESSAGE_CHARS]
        body = dumps(
            {"error": {"code": _HTTP_CODES.get(status, "bad_request"), "message": message}}
        )
        headers = [
            (name, value)
            for name, value in start.get("headers") or []
            if name.lower() not in (b"content-type", b"content-length")
        ]
        headers += [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
