"""The long-lived routes (SSE, NDJSON, ``/v1/ws``) handed straight to their
endpoints, past Starlette's per-request layers.

A request through ``Starlette.__call__`` keeps seven coroutine frames suspended
for as long as its response lasts (the app, its error and exception middlewares
with their ``send`` closures, the router, the route): for a stream that is the
connection's whole life, about 2 KiB of every idle connection
(docs/performance.md, "Idle connections"). :class:`DirectRoutes` matches the
routes itself, exactly as Starlette's router would (the first full match wins),
fills in the same scope keys, and returns the endpoint's own coroutine. Every
other request goes through Starlette unchanged.

What the bypass gives up: Starlette's last-resort handlers for an exception that
escapes one of these endpoints. They answer their own errors (JSON 4xx before
the response starts, a close frame on a WebSocket); an unexpected exception, a
bug, reaches the ASGI server, which logs it and answers 500 or closes the
connection.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable

from starlette._utils import get_route_path  # what Route.matches itself matches on
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Match
from starlette.types import Receive, Scope, Send


class DirectRoutes:
    """``app`` with ``direct`` (some of its routes) served without its per-request
    layers; ``suffixes``: the route paths that may be one of them (a cheap test
    before matching)."""

    def __init__(self, app: Starlette, direct: Iterable[BaseRoute], suffixes: tuple[str, ...]):
        self.app = app
        self.direct = frozenset(id(route) for route in direct)
        self.suffixes = suffixes
        # Anything Starlette would run in front of the router keeps the full path.
        self.enabled = not app.user_middleware and getattr(app, "max_body_size", None) is None

    def __getattr__(self, name: str) -> object:
        if name.startswith("__") or name == "app":
            raise AttributeError(name)
        return getattr(self.app, name)  # .state, .router

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if (
            self.enabled
            and scope["type"] in ("http", "websocket")
            and get_route_path(scope).endswith(self.suffixes)
        ):
            router = self.app.router
            for route in router.routes:
                match, child_scope = route.matches(scope)
                if match is not Match.FULL:
                    continue
                if id(route) not in self.direct:
                    break
                # What Starlette.__call__ and Router.app leave in the scope.
                scope["app"] = self.app
                if "router" not in scope:
                    scope["router"] = router
                scope["route"] = route
                scope.update(child_scope)
                endpoint = route.app  # type: ignore[attr-defined]
                result: Awaitable[None] = endpoint(scope, receive, send)
                return result
        return self.app(scope, receive, send)
