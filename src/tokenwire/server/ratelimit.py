"""Rate limits: a token bucket per client for stream starts and connection opens,
and a cap on one client IP's concurrent connections (docs/protocol.md, "Access
control").

A client is its API key when it sent one (every address using a key shares its
bucket), else its IP address (``scope["client"]``; behind a proxy, uvicorn's
``--forwarded-allow-ips`` decides whether ``X-Forwarded-For`` names it).
``TOKENWIRE_RATE_LIMIT=10/s`` lets each client start or open 10 a second, in
bursts of up to 10; past it the answer is 429 ``rate_limited`` with
``Retry-After`` (a WebSocket handshake too, through the ASGI denial response; a
``start`` op on an open WebSocket or Socket.IO connection gets the error frame).

Memory is bounded: at most :data:`MAX_CLIENTS` buckets are kept, least recently
used first out (a client evicted that way comes back with a full bucket), and the
connection counts hold only addresses with a connection open.
"""

from __future__ import annotations

import math
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from tokenwire.errors import TokenwireError
from tokenwire.events import dumps

MAX_CLIENTS = 10_000
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_RATE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*/\s*([smh])\s*")
_STARTS = frozenset({"/v1/streams", "/v1/chat/completions", "/v1/ai-sdk/chat"})
_OPENS = re.compile(r"/v1/streams/[^/]+/(?:events|ndjson)|/v1/ai-sdk/chat/[^/]+/stream")


class TooManyRequestsError(TokenwireError):
    status = 429
    code = "rate_limited"

    def __init__(self, retry_after_s: float) -> None:
        self.retry_after = max(1, math.ceil(retry_after_s))
        super().__init__(f"too many stream starts or connections; retry in {self.retry_after} s")


class TooManyConnectionsError(TokenwireError):
    status = 429
    code = "too_many_connections"

    def __init__(self, limit: int) -> None:
        self.retry_after = 1
        super().__init__(f"at most {limit} connections may be open from one address")


@dataclass(frozen=True, slots=True)
class Rate:
    per_s: float
    burst: float


def parse_rate(text: str) -> Rate | None:
    """``"10/s"``, ``"600/m"``, ``"100/h"``: that many, replenished over the unit, in
    bursts of that many. Empty or ``off``: no limit."""
    if text.strip().lower() in ("", "off", "0"):
        return None
    match = _RATE.fullmatch(text)
    if match is None or float(match[1]) <= 0:
        raise ValueError("expected a rate such as 10/s, 600/m or 100/h")
    count = float(match[1])
    return Rate(per_s=count / _UNITS[match[2]], burst=count)


class TokenBuckets:
    """One token bucket per client, pure (``now`` is passed in), LRU-bounded."""

    def __init__(self, rate: Rate, max_clients: int = MAX_CLIENTS) -> None:
        self.rate = rate
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, client: str, now: float | None = None) -> float:
        """Take one token: 0.0 when there was one, else the seconds until there is."""
        now = time.monotonic() if now is None else now
        rate = self.rate
        tokens, last = self._buckets.pop(client, (rate.burst, now))
        tokens = min(rate.burst, tokens + (now - last) * rate.per_s)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / rate.per_s
        self._buckets[client] = (tokens, now)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait

    def admit(self, client: str) -> None:
        """:meth:`take`, raising :class:`TooManyRequestsError` when empty."""
        wait = self.take(client)
        if wait > 0:
            raise TooManyRequestsError(wait)


def charged(scope: Scope) -> bool:
    """Whether a request is a stream start or a connection open."""
    if scope["type"] == "websocket":
        return True
    path, method = scope["path"], scope["method"]
    if method == "POST":
        return path in _STARTS
    if method != "GET":
        return False
    if path == "/socket.io/":  # an engine.io handshake has no sid yet
        return b"sid=" not in scope.get("query_string", b"")
    return _OPENS.fullmatch(path) is not None


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return "ip:" + (client[0] if client else "unknown")


class RateLimit:
    """ASGI middleware: the bucket of the request's client (``client_of``), and the
    per-address connection cap (0: none)."""

    def __init__(
        self,
        app: ASGIApp,
        buckets: TokenBuckets | None,
        max_per_address: int,
        client_of: Callable[[Scope], str] = client_address,
    ) -> None:
        self.app = app
        self.buckets = buckets
        self.max_per_address = max_per_address
        self.client_of = client_of
        self.open: dict[str, int] = {}

    def __getattr__(self, name: str) -> object:
        if name.startswith("__") or name == "app":
            raise AttributeError(name)
        return getattr(self.app, name)

    # A plain ``def``: without a connection cap nothing is left to do once the request
    # is admitted, so no frame of its own stays suspended for a stream's whole life.
    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] not in ("http", "websocket"):
            return self.app(scope, receive, send)
        address = client_address(scope)
        try:
            if self.max_per_address and self.open.get(address, 0) >= self.max_per_address:
                raise TooManyConnectionsError(self.max_per_address)
            if self.buckets is not None and charged(scope):
                self.buckets.admit(self.client_of(scope))
        except (TooManyRequestsError, TooManyConnectionsError) as exc:
            return _refuse(scope, receive, send, exc)
        if not self.max_per_address:
            return self.app(scope, receive, send)
        return self._counted(address, scope, receive, send)

    async def _counted(self, address: str, scope: Scope, receive: Receive, send: Send) -> None:
        self.open[address] = self.open.get(address, 0) + 1
        try:
            await self.app(scope, receive, send)
        finally:
            left = self.open[address] - 1
            if left:
                self.open[address] = left
            else:
                del self.open[address]


async def _refuse(
    scope: Scope, receive: Receive, send: Send, exc: TooManyRequestsError | TooManyConnectionsError
) -> None:
    body = dumps({"error": {"code": exc.code, "message": exc.message}})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
        (b"retry-after", b"%d" % exc.retry_after),
    ]
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 429, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    await receive()  # websocket.connect
    if "websocket.http.response" in scope.get("extensions", {}):
        await send({"type": "websocket.http.response.start", "status": 429, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1013})  # RFC 6455: try again later
