"""Every error the server sends is JSON: ``{"error": {"code", "message"}}``."""

from __future__ import annotations

import asyncio
import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tokenwire.errors import BodyTooLarge, InvalidRequest, TokenwireError
from tokenwire.events import loads

log = logging.getLogger("tokenwire")


class RequestTimeout(TokenwireError):
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
            raise InvalidRequest("invalid Content-Length")
        if int(length) > limit:
            raise BodyTooLarge(f"request body over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge(f"request body over {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeout(f"the request body did not arrive within {timeout:g} s") from None
    body = b"".join(chunks)
    if not body.strip():
        raise InvalidRequest("the request body is empty; send a JSON object")
    try:
        return loads(body)
    except ValueError:
        raise InvalidRequest("the request body is not valid JSON") from None
