"""What the HTTP backends (OpenAI-compatible, Ollama) share: one ``httpx.AsyncClient``
per event loop, and the mapping of transport failures onto typed errors."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx

from tokenwire.models.errors import UpstreamHTTPError, UpstreamUnreachableError

DEFAULT_TIMEOUT = httpx.Timeout(connect=10.0, read=300.0, write=30.0, pool=30.0)

# A streamed error body is read only this far before it goes into the error message.
_MAX_ERROR_BODY = 4096


class ClientPerLoop:
    """An ``httpx.AsyncClient`` for each running event loop.

    A client's connection pool belongs to the loop that opened it, and one
    backend object may serve several loops in a process (a server, a CLI run,
    tests), so each loop gets its own client, reused by its requests.
    """

    def __init__(self, timeout: httpx.Timeout, headers: Mapping[str, str]) -> None:
        self._timeout = timeout
        self._headers = dict(headers)
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary()
        )

    def get(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None or client.is_closed:
            client = httpx.AsyncClient(timeout=self._timeout, headers=self._headers)
            self._clients[loop] = client
        return client

    async def aclose(self) -> None:
        """Close the current loop's client; the others go with their loops."""
        loop = asyncio.get_running_loop()
        client = self._clients.pop(loop, None)
        if client is not None:
            await client.aclose()


@asynccontextmanager
async def open_stream(
    client: httpx.AsyncClient, url: str, body: Mapping[str, Any]
) -> AsyncIterator[httpx.Response]:
    """POST ``body`` and yield the streaming response once it is known to be 2xx.

    Leaving the block closes the response, which aborts the request upstream
    when it is still running (how a stop reaches a remote model).
    """
    try:
        async with client.stream("POST", url, json=body) as response:
            if response.status_code >= 400:
                detail = await _read_some(response)
                raise UpstreamHTTPError(url, response.status_code, detail)
            yield response
    except httpx.TimeoutException as exc:
        raise UpstreamUnreachableError(url, f"timed out ({type(exc).__name__})") from exc
    except httpx.TransportError as exc:
        raise UpstreamUnreachableError(url, f"{type(exc).__name__}: {exc}") from exc


async def _read_some(response: httpx.Response) -> str:
    data = bytearray()
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) >= _MAX_ERROR_BODY:
            break
    return bytes(data[:_MAX_ERROR_BODY]).decode("utf-8", "replace")


@contextmanager
def mid_stream_errors(url: str) -> Iterator[None]:
    """Map transport failures while reading a body onto typed errors."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise UpstreamUnreachableError(url, f"timed out mid-stream ({type(exc).__name__})") from exc
    except httpx.TransportError as exc:
        raise UpstreamUnreachableError(url, f"broke off mid-stream: {type(exc).__name__}") from exc
