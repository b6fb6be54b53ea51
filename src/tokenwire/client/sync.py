"""A synchronous facade for scripts and notebooks.

:class:`SyncClient` runs its own event loop in a background thread (so it works
where a loop is already running, as in Jupyter) and forwards every call to an
async :class:`~tokenwire.client.client.Client` on it::

    with SyncClient("http://127.0.0.1:8000") as client:
        print(client.start(model="scripted", prompt="hi").text())
        for event in client.start(model="scripted", prompt="hi"):
            print(event.fields.get("text", ""), end="")

Callbacks and ``on_state`` run on the client's thread, not the caller's.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar, Unpack

from tokenwire.client.client import Client, StartOptions
from tokenwire.client.handle import StreamHandle
from tokenwire.client.machine import TransportState
from tokenwire.events import Event
from tokenwire.tracker import TokenMetrics

T = TypeVar("T")


class SyncClient:
    def __init__(self, url: str, transport: str = "sse", api_key: str | None = None, **kw: Any):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="tokenwire-client", daemon=True
        )
        self._thread.start()
        self._closed = False
        try:
            self.client = self._call(self._make(url, transport, api_key, kw))
        except BaseException:
            self._stop_loop()
            raise

    @staticmethod
    async def _make(url: str, transport: str, api_key: str | None, kw: dict[str, Any]) -> Client:
        return Client(url, transport, api_key, **kw)

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if self._closed:
            coro.close()
            raise RuntimeError("the SyncClient is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self, model: str | None = None, **kw: Unpack[StartOptions]) -> SyncStreamHandle:
        """:meth:`Client.start`, synchronously."""
        return SyncStreamHandle(self, self._call(self.client.start(model, **kw)))

    def subscribe(self, stream_id: str, after: int = 0, **kw: Any) -> SyncStreamHandle:
        async def make() -> StreamHandle:
            return self.client.subscribe(stream_id, after, **kw)

        return SyncStreamHandle(self, self._call(make()))

    def status(self, stream_id: str) -> dict[str, Any]:
        return self._call(self.client.status(stream_id))

    def health(self) -> dict[str, dict[str, Any]]:
        return self.client.health()

    def metrics(self) -> dict[str, Any]:
        return self.client.metrics()

    def close(self) -> None:
        """Close every stream and connection, then stop the thread."""
        if self._closed:
            return
        try:
            self._call(self.client.aclose(), timeout=30)
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SyncStreamHandle:
    """A :class:`StreamHandle`, synchronously: iterate it, ``text()``, ``cancel()``."""

    def __init__(self, client: SyncClient, handle: StreamHandle) -> None:
        self._client = client
        self.handle = handle

    @property
    def stream_id(self) -> str | None:
        return self.handle.stream_id

    @property
    def state(self) -> TransportState:
        return self.handle.state

    @property
    def last_seq(self) -> int:
        return self.handle.last_seq

    @property
    def stats(self) -> TokenMetrics:
        return self.handle.stats

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        try:
            return self._client._call(self.handle.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None

    def text(self) -> str:
        return self._client._call(self.handle.text())

    def wait(self) -> Event:
        return self._client._call(self.handle.wait())

    def cancel(self) -> None:
        self._client._call(self.handle.cancel())

    def close(self) -> None:
        self._client._call(self.handle.aclose())

    def __enter__(self) -> SyncStreamHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
