"""Optional access control: bearer API keys and CORS, as ASGI middleware.

With ``api_keys`` configured (``TOKENWIRE_API_KEYS=k1,k2``), every request needs
``Authorization: Bearer <key>``, or ``?api_key=<key>`` for clients that cannot
set headers (a browser ``EventSource``, a WebSocket), except on the few paths
named public below: the demo page ``/``, ``/static/…``, ``/healthz``,
``/readyz``, ``/metrics``, and the API's description ``/openapi.json`` and
``/docs``. Deny by default: the check is on the path exactly
as the routers see it (``scope["path"]``, already percent-decoded), so a path
variant (``/socket.io`` without its slash, ``//v1/…``, ``/V1/``, ``%2F``) is
either public by exact name or needs the key; it can never reach a protected
route through a gap between two prefix lists. CORS preflights carry no
credentials (Fetch standard): the CORS middleware, in front, answers them when
origins are configured; without it they are refused like anything else. A
refused HTTP request gets 401 with the usual JSON error; a refused WebSocket
handshake is closed (HTTP 403).

A stream token (``tw1.…``, :mod:`tokenwire.server.tokens`) is accepted instead of
a key, as ``Authorization: Bearer`` or ``?token=``, on the paths that read or
stop one stream (:data:`TOKEN_PATHS`) and nowhere else; which stream it may read
is :mod:`tokenwire.server.access`'s decision, on the credentials this middleware
leaves in the scope. A forged or expired token gets 401 ``invalid_token`` or
``token_expired`` (a WebSocket: accepted, one ``error`` frame with that code,
closed with 1008), so that a client knows to fetch a new one.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Awaitable, Iterable
from typing import Any
from urllib.parse import parse_qs

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from tokenwire.events import dumps
from tokenwire.server.access import (
    SCOPE_KEY,
    Access,
    Credentials,
    OriginCheck,
    client_of,
    key_fingerprint,
)
from tokenwire.server.errors import PlainErrorsAsJSON
from tokenwire.server.ratelimit import RateLimit
from tokenwire.server.tokens import InvalidTokenError, TokenSigner, looks_like_token

PUBLIC_PATHS = frozenset({"/", "/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"})
PUBLIC_PREFIX = "/static/"
"""Everything under it is the StaticFiles mount, which serves files and nothing else."""
TOKEN_PATHS = re.compile(
    r"/v1/streams/[^/]+(?:/events|/ndjson)?|/v1/ws|/socket\.io/|/v1/ai-sdk/chat/[^/]+/stream"
)
"""The paths (matched whole) where a stream token may stand in for a key."""
CHAT_TOKEN = "X-Tokenwire-Chat-Token"


def is_public(path: str) -> bool:
    """Whether ``path`` (``scope["path"]``) may be served without a key."""
    if path in PUBLIC_PATHS:
        return True
    # A Mount matches "/static/" + anything, so no other route can be behind it; ".."
    # segments are still refused by StaticFiles, but they have no business here.
    return path.startswith(PUBLIC_PREFIX) and "/.." not in path and "//" not in path


class APIKeyAuth:
    def __init__(self, app: ASGIApp, keys: Iterable[str], signer: TokenSigner) -> None:
        self.app = app
        self.keys = tuple(k.encode() for k in keys if k)
        self.signer = signer

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)  # create_app()'s .state, .router, .sio

    # A plain ``def`` handing on the app's coroutine: no frame of its own stays
    # suspended for a stream's whole life (docs/performance.md, idle connections).
    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] not in ("http", "websocket"):
            return self.app(scope, receive, send)
        try:
            credentials = self._authenticate(scope)
        except InvalidTokenError as exc:
            return self._refuse(scope, receive, send, exc.code, exc.message)
        if credentials is not None or is_public(scope["path"]):
            scope[SCOPE_KEY] = credentials or Credentials()
            return self.app(scope, receive, send)
        return self._refuse(scope, receive, send, "unauthorized", "a valid API key is required")

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, code: str, msg: str
    ) -> None:
        if scope["type"] == "websocket":
            await receive()  # websocket.connect
            if code != "unauthorized":
                # A token that was sent but failed: say why, so the client refreshes it.
                await send({"type": "websocket.accept"})
                frame = dumps({"type": "error", "code": code, "message": msg}).decode()
                await send({"type": "websocket.send", "text": frame})
            await send({"type": "websocket.close", "code": 1008})
            return
        body = dumps({"error": {"code": code, "message": msg}})
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

    def _authenticate(self, scope: Scope) -> Credentials | None:
        """The request's key or token, or None; :class:`InvalidTokenError` for a token that
        does not verify where tokens are accepted."""
        bearer: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                bearer = value[7:].strip()
                break
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        keyed = [bearer] if bearer is not None else []
        keyed += [v.encode("latin-1") for v in query.get("api_key", [])[:1]]
        for candidate in keyed:
            for key in self.keys:
                if hmac.compare_digest(candidate, key):
                    return Credentials(key=key_fingerprint(key))
        token = query.get("token", [None])[0]
        if token is None and bearer is not None and looks_like_token(bearer.decode("latin-1")):
            token = bearer.decode("latin-1")
        if token is None or not TOKEN_PATHS.fullmatch(scope["path"]):
            return None
        return Credentials(grant=self.signer.verify(token))


def protect(
    app: ASGIApp,
    *,
    api_keys: Iterable[str],
    cors_origins: Iterable[str],
    access: Access,
    max_connections_per_ip: int = 0,
) -> ASGIApp:
    """Wrap ``app`` with what is configured; the ``Origin`` check is always on.
    Outermost first: CORS, API keys, rate limits (which count keys), ``Origin``."""
    keys = [k for k in api_keys if k]
    origins = [o for o in cors_origins if o]
    app = OriginCheck(app, origins)
    if access.buckets is not None or max_connections_per_ip:
        app = RateLimit(app, access.buckets, max_connections_per_ip, client_of)
    if keys:
        app = APIKeyAuth(app, keys, access.signer)
    if origins:
        cors = CORSMiddleware(
            app,
            allow_origins=origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Last-Event-ID", CHAT_TOKEN],
            expose_headers=[
                "X-Tokenwire-Stream",
                CHAT_TOKEN,
                "X-Tokenwire-Read-Token",
                "X-Tokenwire-Control-Token",
            ],
        )
        # A refused preflight is plain text from Starlette; every error here is JSON.
        app = PlainErrorsAsJSON(cors, "/", frozenset({"OPTIONS"}))
    return app
