"""Embedding ``create_app()`` in a host app: ``host.mount("/tw", create_app(...))``.

Under Starlette's ``Mount`` the sub-app gets the full path (``/tw/socket.io/``)
with the prefix in ``root_path``. The routes match on the part after
``root_path``, but the layers in front of them (API-key public paths, token
paths, rate limits, the ``Origin`` check, engine.io's ``/socket.io/``) match
``scope["path"]``: :class:`MountedPaths` hands them the path as seen under the
mount, and :class:`FullPaths` gives the routes the full path back, so redirects
and ``url_for`` keep the prefix.

A mounted app's lifespan is not run by Starlette (only the outermost app gets
``lifespan`` events): ``tokenwire.lifespan`` and ``tokenwire.mount``
(tokenwire/asgi.py) compose it with the host's.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

_FULL_PATH = "tokenwire.full_path"


def relative_path(scope: Scope) -> str | None:
    """``scope["path"]`` without a ``root_path`` prefix, or None when there is none."""
    root: str = scope.get("root_path", "")
    path: str = scope["path"]
    if not root or not path.startswith(root):
        return None
    rest = path[len(root) :]
    if rest and not rest.startswith("/"):
        return None  # /twx is not under /tw
    return rest or "/"


class MountedPaths:
    """The outer layers see the path under the mount (see the module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "app":
            raise AttributeError(name)
        return getattr(self.app, name)  # create_app()'s .state, .router, .sio

    # A plain ``def`` handing on the app's coroutine: no frame of its own stays
    # suspended for a stream's whole life (docs/performance.md, idle connections).
    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] in ("http", "websocket"):
            rest = relative_path(scope)
            if rest is not None:
                scope = {**scope, "path": rest, _FULL_PATH: scope["path"]}
        return self.app(scope, receive, send)


class FullPaths:
    """The routes get the full path back, as Starlette's ``Mount`` gave it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "app":
            raise AttributeError(name)
        return getattr(self.app, name)

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        full = scope.get(_FULL_PATH)
        if full is not None:
            scope = {**scope, "path": full}
        return self.app(scope, receive, send)
