"""Who may do what to which stream: the one authorization check every route and
transport calls (docs/protocol.md, "Access control").

Authentication happens once per request or connection, in front of the app
(:mod:`tokenwire.server.auth`): it leaves :class:`Credentials` in the ASGI scope.
Every operation on a stream then calls :func:`authorize` (or
:meth:`Access.check`, which first narrows the credentials to a token sent with
the operation itself, as a WebSocket ``subscribe`` or a Socket.IO ``cancel`` may):

=============  ===========  ============================  ==========================
credentials    ``create``   ``read`` stream S             ``stop`` stream S
=============  ===========  ============================  ==========================
no keys set    yes          yes                           yes
an API key     yes          yes                           yes
read token T   no (403)     if T is for S, else 403       no (403)
control token  no (403)     if T is for S, else 403       if T is for S, else 403
nothing        401          401                           401
=============  ===========  ============================  ==========================

Also here: the ``Origin`` rule for WebSocket handshakes and Socket.IO (a browser
applies no CORS to a WebSocket, so the server must), and the JSON media type a
``POST /v1/streams`` must declare (a cross-site form or ``text/plain`` fetch is
sent without a preflight).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import secrets
import time
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from tokenwire.errors import TokenwireError
from tokenwire.server.errors import error_response
from tokenwire.server.ratelimit import TokenBuckets, client_address
from tokenwire.server.tokens import Grant, TokenExpiredError, TokenSigner

log = logging.getLogger("tokenwire")

Action = Literal["create", "read", "stop"]
CREATE: Action = "create"
READ: Action = "read"
STOP: Action = "stop"
SCOPE_KEY = "tokenwire.credentials"
"""Where :mod:`tokenwire.server.auth` leaves a request's :class:`Credentials`."""


class UnauthorizedError(TokenwireError):
    status = 401
    code = "unauthorized"


class ForbiddenError(TokenwireError):
    status = 403
    code = "forbidden"


class UnsupportedMediaTypeError(TokenwireError):
    status = 415
    code = "unsupported_media_type"


Forbidden = ForbiddenError  # the name before 0.1.0, for tokenwire.server.ai_sdk


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a request or connection proved: nothing (``open`` when no keys are
    configured), an API key (by fingerprint, never the key itself), or a token's grant."""

    open: bool = False
    key: str | None = None
    grant: Grant | None = None
    client: str = ""
    """Whom rate limits count against: the key, else the address (server/ratelimit.py)."""


OPEN = Credentials(open=True)
ANONYMOUS = Credentials()


def key_fingerprint(key: bytes) -> str:
    """A stable name for an API key that does not reveal it (chat ownership, rate limits)."""
    return "key:" + hashlib.sha256(key).hexdigest()[:16]


def authorize(credentials: Credentials, stream_id: str | None, action: Action) -> None:
    """Return if ``credentials`` may ``action`` the stream ``stream_id`` (None for
    ``create``); raise :class:`UnauthorizedError` or :class:`ForbiddenError` otherwise."""
    if credentials.open or credentials.key is not None:
        return
    grant = credentials.grant
    if grant is None:
        raise UnauthorizedError("a valid API key or stream token is required")
    if action == CREATE:
        raise ForbiddenError("a stream token cannot start streams; that takes an API key")
    if grant.stream != stream_id:
        raise ForbiddenError("this token is for another stream")
    if action == STOP and not grant.allows_stop():
        raise ForbiddenError("a read token cannot stop its stream; use the control_token")


def credentials_of(scope: Scope) -> Credentials:
    """The credentials :mod:`~tokenwire.server.auth` found (open when it is not
    installed), naming the client they came from."""
    found = scope.get(SCOPE_KEY)
    credentials = found if isinstance(found, Credentials) else OPEN
    if credentials.client or "client" not in scope:
        return credentials
    return dataclasses.replace(credentials, client=client_of(scope))


def client_of(scope: Scope) -> str:
    """The rate-limited client of a request: its API key, else its address."""
    found = scope.get(SCOPE_KEY)
    if isinstance(found, Credentials) and found.key is not None:
        return found.key
    return client_address(scope)


class Access:
    """The server's access policy: whether keys are on, and the token signer."""

    def __init__(
        self, keys_required: bool, signer: TokenSigner, buckets: TokenBuckets | None = None
    ) -> None:
        self.keys_required = keys_required
        self.signer = signer
        self.buckets = buckets

    def admit_start(self, credentials: Credentials) -> None:
        """Charge a stream start made inside a connection (a WebSocket or Socket.IO
        ``start``) to its client's bucket: :class:`TooManyRequestsError` when it is empty.
        Starts over HTTP are charged in front of the app (server/ratelimit.py)."""
        if self.buckets is not None:
            self.buckets.admit(credentials.key or credentials.client or "unknown")

    @classmethod
    def from_settings(
        cls,
        api_keys: Iterable[str],
        secret: str,
        ttl_s: float = 3600.0,
        buckets: TokenBuckets | None = None,
    ) -> Access:
        keys_required = any(api_keys)
        if secret:
            raw = secret.encode()
        else:
            raw = secrets.token_bytes(32)
            if keys_required:
                log.warning(
                    "TOKENWIRE_TOKEN_SECRET is not set: stream tokens are signed with a secret "
                    "made for this process only; several gateways must share one secret"
                )
        return cls(keys_required, TokenSigner(raw, ttl_s), buckets)

    def tokens(self, stream_id: str) -> dict[str, str]:
        """A new stream's ``read_token`` and ``control_token``; none without keys."""
        return self.signer.pair(stream_id) if self.keys_required else {}

    def token_headers(self, stream_id: str) -> list[tuple[bytes, bytes]]:
        """The same as response headers, for the routes that answer with the stream."""
        return [
            (b"x-tokenwire-" + name.replace("_", "-").encode(), token.encode())
            for name, token in self.tokens(stream_id).items()
        ]

    def check(
        self,
        credentials: Credentials,
        stream_id: str | None,
        action: Action,
        token: object = None,
    ) -> None:
        """:func:`authorize`, with a token sent alongside the operation, when there is
        one, standing in for the connection's own token."""
        if token is not None and self.keys_required and credentials.key is None:
            if not isinstance(token, str):
                raise UnauthorizedError("'token' must be a string")
            credentials = Credentials(grant=self.signer.verify(token))
        grant = credentials.grant
        if grant is not None and credentials.key is None and time.time() >= grant.expires:
            # A connection outlives the token it opened with; each op checks it anew.
            raise TokenExpiredError("the connection's token has expired; send a new one")
        authorize(credentials, stream_id, action)


def require_json(headers: Headers, max_body_bytes: int) -> None:
    """415 unless the body is declared JSON. A browser sends ``text/plain``, form and
    multipart bodies (and typeless ``Blob`` bodies) cross-site without a CORS
    preflight; ``application/json`` always takes one. An over-size body is left to
    the body reader's 413."""
    length = headers.get("content-length", "")
    if length.isascii() and length.isdigit() and int(length) > max_body_bytes:
        return
    media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/json" and not (
        media.startswith("application/") and media.endswith("+json")
    ):
        raise UnsupportedMediaTypeError(
            "send the request body as JSON, with Content-Type: application/json"
        )


# -- Origin --------------------------------------------------------------------------


def origin_allowed(origin: str | None, host: str | None, origins: Iterable[str]) -> bool:
    """A WebSocket or Socket.IO client's ``Origin``: absent (not a browser), one of the
    configured ``origins`` (``*`` allows every origin), or a page of the server's own
    host. The scheme is not compared (a TLS proxy in front changes it), and a ``Host``
    without a port matches that host on any port: a proxy that forwards
    ``Host: $host`` (nginx) drops it."""
    if origin is None:
        return True
    allowed = [o for o in origins if o]
    if "*" in allowed or origin in allowed:
        return True
    if host is None:
        return False
    try:
        page, server = urlsplit(origin), urlsplit("//" + host.strip())
        page_port = page.port or {"http": 80, "https": 443}.get(page.scheme)
        server_port = server.port
    except ValueError:
        return False
    if not page.hostname or page.hostname != server.hostname:
        return False
    return server_port is None or server_port == page_port


class OriginCheck:
    """ASGI middleware: refuse WebSocket handshakes and Socket.IO requests from
    another site's page (``Origin`` not allowed). A refused WebSocket is closed before
    accept (HTTP 403); a refused HTTP request gets 403 ``origin_not_allowed``."""

    def __init__(self, app: ASGIApp, origins: Iterable[str]) -> None:
        self.app = app
        self.origins = tuple(o for o in origins if o)

    def __getattr__(self, name: str) -> object:
        if name.startswith("__") or name == "app":
            raise AttributeError(name)
        return getattr(self.app, name)  # create_app()'s .state, .router, .sio

    # Plain ``def``s handing on the app's coroutine: no frame of their own stays
    # suspended for a stream's whole life (docs/performance.md, idle connections).
    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        kind = scope["type"]
        if kind == "websocket" or (kind == "http" and scope["path"].startswith("/socket.io")):
            headers = Headers(scope=scope)
            if not origin_allowed(headers.get("origin"), headers.get("host"), self.origins):
                if kind == "websocket":
                    return _close_policy(receive, send)
                message = "this origin may not connect; see TOKENWIRE_CORS_ORIGINS"
                return error_response(403, "origin_not_allowed", message)(scope, receive, send)
        return self.app(scope, receive, send)


async def _close_policy(receive: Receive, send: Send) -> None:
    await receive()  # websocket.connect
    await send({"type": "websocket.close", "code": 1008})


class Guarded:
    """An ASGI endpoint behind :func:`authorize` for ``action`` on its ``{stream_id}``."""

    def __init__(self, app: ASGIApp, action: Action) -> None:
        self.app = app
        self.action = action

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        try:
            authorize(credentials_of(scope), scope["path_params"]["stream_id"], self.action)
        except TokenwireError as exc:
            return error_response(exc.status, exc.code, exc.message)(scope, receive, send)
        return self.app(scope, receive, send)
