"""Optional access control: bearer API keys and CORS, as ASGI middleware.

With ``api_keys`` configured (``TOKENWIRE_API_KEYS=k1,k2``), every request needs
``Authorization: Bearer <key>``, or ``?api_key=<key>`` for clients that cannot
set headers (a browser ``EventSource``, a WebSocket), except on the few paths
named public below: the demo page ``/``, ``/static/…``, ``/healthz``,
``/readyz`` and ``/metrics``. Deny by default: the check is on the path exactly
as the routers see it (``scope["path"]``, already percent-decoded), so a path
variant (``/socket.io`` without its slash, ``//v1/…``, ``/V1/``, ``%2F``) is
either public by exact name or needs the key; it can never reach a protected
route through a gap between two prefix lists. CORS preflights carry no
credentials (Fetch standard): the CORS middleware, in front, answers them when
origins are configured; without it they are refused like anything else. A
refused HTTP request gets 401 with the usual JSON error; a refused WebSocket
handshake is closed (HTTP 403).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qs

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from tokenwire.events import dumps
from tokenwire.server.errors import PlainErrorsAsJSON

PUBLIC_PATHS = frozenset({"/", "/healthz", "/readyz", "/metrics"})
PUBLIC_PREFIX = "/static/"
"""Everything under it is the StaticFiles mount, which serves files and nothing else."""


def is_public(path: str) -> bool:
    """Whether ``path`` (``scope["path"]``) may be served without a key."""
    if path in PUBLIC_PATHS:
        return True
    # A Mount matches "/static/" + anything, so no other route can be behind it; ".."
    # segments are still refused by StaticFiles, but they have no business here.
    return path.startswith(PUBLIC_PREFIX) and "/.." not in path and "//" not in path


class APIKeyAuth:
    def __init__(self, app: ASGIApp, keys: Iterable[str]) -> None:
        self.app = app
        self.keys = tuple(k.encode() for k in keys if k)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)  # create_app()'s .state, .router, .sio

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] not in ("http", "websocket")
            or is_public(scope["path"])
            or self._allowed(scope)
        ):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1008})
            return
        body = dumps({"error": {"code": "unauthorized", "message": "a valid API key is required"}})
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"www-authenticate", b'Bearer realm="tokenwire"'),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _allowed(self, scope: Scope) -> bool:
        token: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                token = value[7:].strip()
                break
        if token is None:
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            values = query.get("api_key")
            token = values[0].encode() if values else None
        return token is not None and any(hmac.compare_digest(token, key) for key in self.keys)


def protect(app: ASGIApp, *, api_keys: Iterable[str], cors_origins: Iterable[str]) -> ASGIApp:
    """Wrap ``app`` with what is configured; unchanged when nothing is."""
    keys = [k for k in api_keys if k]
    if keys:
        app = APIKeyAuth(app, keys)
    origins = [o for o in cors_origins if o]
    if origins:
        cors = CORSMiddleware(
            app,
            allow_origins=origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
            expose_headers=["X-Tokenwire-Stream"],
        )
        # A refused preflight is plain text from Starlette; every error here is JSON.
        app = PlainErrorsAsJSON(cors, "/", frozenset({"OPTIONS"}))
    return app
