"""SSE and NDJSON transports: one streaming HTTP response per link, over a shared
``httpx.AsyncClient`` (its pool reuses connections across streams and requests).

Resume is ``?after=N`` on every link. Bytes are read raw (the server never
compresses event streams, and the client asks for ``identity``) and fed to the
link's framing; the reader only reads when the buffer has room, so a slow
application holds the server back through TCP flow control instead of
growing the client's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import quote

import httpx

from tokenwire.client.auth import current_token, refresh_after
from tokenwire.client.errors import (
    ClientError,
    ConnectError,
    ConnectionLostError,
    HTTPStatusError,
    status_error,
)
from tokenwire.client.transport import Transport
from tokenwire.client.wire import Framing, NDJSONFraming, SSEFraming
from tokenwire.events import loads

MAX_ERROR_BODY = 64 * 1024


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and how to reach one server."""

    url: str
    """The server's base URL, without a trailing slash (``http://host:port``)."""
    headers: Mapping[str, str] = field(default_factory=dict)
    """Sent with every request (``Authorization: Bearer …``); read at each request,
    so a :class:`~tokenwire.client.auth.BearerAuth` refreshed meanwhile applies."""
    max_line_bytes: int = 1 << 20
    max_event_bytes: int = 8 << 20

    def stream_url(self, stream_id: str, suffix: str = "") -> str:
        return f"{self.url}/v1/streams/{quote(stream_id, safe='')}{suffix}"


async def error_from_response(
    response: httpx.Response, stream_id: str | None = None
) -> HTTPStatusError:
    """The typed error for an error answer, from its ``{"error": {code, message}}`` body
    (read up to 64 KiB; a bigger or non-JSON body leaves code and message empty)."""
    body = bytearray()
    with contextlib.suppress(httpx.HTTPError):
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > MAX_ERROR_BODY:
                break
    code, message = "", ""
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        err = loads(bytes(body))["error"]
        code, message = str(err.get("code", "")), str(err.get("message", ""))
    return status_error(response.status_code, code, message, stream_id=stream_id)


def transport_error(exc: httpx.HTTPError, *, connected: bool) -> ClientError:
    """An httpx failure as a client error: before the response, ``ConnectError``;
    while reading it, ``ConnectionLostError``."""
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return ConnectionLostError(detail) if connected else ConnectError(detail)


async def request(
    http: httpx.AsyncClient, endpoint: Endpoint, method: str, url: str, stream_id: str
) -> httpx.Response:
    """One request with the endpoint's credentials, sent once more with a refreshed
    token if the server said it had expired; an error answer raises."""
    for attempt in range(2):
        used = current_token(endpoint.headers)
        try:
            response = await http.request(method, url, headers=dict(endpoint.headers))
        except httpx.HTTPError as exc:
            raise transport_error(exc, connected=False).at(stream_id, 0) from None
        if response.status_code < 400:
            return response
        error = await error_from_response(response, stream_id)
        if attempt or not await refresh_after(endpoint.headers, error.code, used):
            raise error
    raise AssertionError("unreachable")


async def stop_stream(http: httpx.AsyncClient, endpoint: Endpoint, stream_id: str) -> None:
    """``DELETE /v1/streams/{id}``: the true stop."""
    await request(http, endpoint, "DELETE", endpoint.stream_url(stream_id), stream_id)


class HTTPTransport(Transport):
    """A resumable streaming GET; subclasses choose the route and the framing."""

    suffix: ClassVar[str] = ""
    accept: ClassVar[str] = ""

    def __init__(
        self, http: httpx.AsyncClient, endpoint: Endpoint, stream_id: str, **kw: Any
    ) -> None:
        super().__init__(stream_id, **kw)
        self._stream = stream_id
        self.http = http
        self.endpoint = endpoint
        self._url = endpoint.stream_url(stream_id, self.suffix)
        self._headers = {
            "Accept": self.accept,
            "Accept-Encoding": "identity",
            "Cache-Control": "no-cache",
        }
        self._response: httpx.Response | None = None
        self._chunks: AsyncIterator[bytes] | None = None
        self._framing: Framing | None = None

    def _new_framing(self) -> Framing:
        raise NotImplementedError

    def _params(self, after: int) -> dict[str, int]:
        if self.coalesce_ms is None:
            return {"after": after}
        return {"after": after, "coalesce_ms": self.coalesce_ms}

    async def _open(self, after: int) -> None:
        await self._drop("reopen")
        # No read timeout: silence is the machine's heartbeat check.
        timeout = self.http.timeout
        credentials = self.endpoint.headers
        for attempt in range(2):
            used = current_token(credentials)
            request = self.http.build_request(
                "GET",
                self._url,
                params=self._params(after),
                headers={**credentials, **self._headers},
                timeout=httpx.Timeout(
                    connect=timeout.connect, read=None, write=timeout.write, pool=timeout.pool
                ),
            )
            try:
                response = await self.http.send(request, stream=True)
            except httpx.HTTPError as exc:
                raise transport_error(exc, connected=False) from None
            if response.status_code == 200:
                break
            if response.status_code == 204:  # resumed at or past the terminal event
                await response.aclose()
                self.machine.receive_ended(asyncio.get_running_loop().time())
                return
            try:
                error = await error_from_response(response, self.stream_id)
            finally:
                await response.aclose()
            if attempt or not await refresh_after(credentials, error.code, used):
                raise error
        self._response = response
        self._chunks = response.aiter_raw()
        self._framing = self._new_framing()

    async def _receive(self) -> None:
        chunks = self._chunks
        if chunks is None or self._framing is None:
            raise ConnectionLostError("no open link")
        try:
            chunk = await anext(chunks)
        except StopAsyncIteration:
            raise ConnectionLostError("the server ended the response early") from None
        except httpx.HTTPError as exc:
            raise transport_error(exc, connected=True) from None
        now = asyncio.get_running_loop().time()
        machine = self.machine
        machine.bytes_received(now)
        self.counters.bytes += len(chunk)
        self._framing.feed(chunk, machine, now)

    async def _drop(self, reason: str) -> None:
        response = self._response
        self._response = self._chunks = self._framing = None
        if response is not None:
            with contextlib.suppress(Exception):
                await response.aclose()

    async def send(self, message: Mapping[str, Any]) -> None:
        op = message.get("op")
        if op != "cancel":
            raise ValueError(f"the {self.kind} transport can only send op 'cancel', not {op!r}")
        await stop_stream(self.http, self.endpoint, self._stream)


class SSETransport(HTTPTransport):
    """``GET /v1/streams/{id}/events?after=N`` (``text/event-stream``)."""

    kind = "sse"
    suffix = "/events"
    accept = "text/event-stream"

    def _new_framing(self) -> Framing:
        ep = self.endpoint
        return SSEFraming(max_line_bytes=ep.max_line_bytes, max_event_bytes=ep.max_event_bytes)


class NDJSONTransport(HTTPTransport):
    """``GET /v1/streams/{id}/ndjson?after=N`` (``application/x-ndjson``)."""

    kind = "ndjson"
    suffix = "/ndjson"
    accept = "application/x-ndjson"

    def _new_framing(self) -> Framing:
        return NDJSONFraming(max_line_bytes=self.endpoint.max_event_bytes)
