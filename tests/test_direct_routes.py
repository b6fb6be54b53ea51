"""server/direct_routes.py: the long-lived routes reach their endpoints without
Starlette's per-request frames, and every other request is routed as Starlette
routes it (in-process, through httpx's ASGI transport)."""

from __future__ import annotations

import sys
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from starlette.types import Receive, Scope, Send

from tokenwire.server.direct_routes import DirectRoutes


class Endpoint:
    """An ASGI endpoint that records its scope and the coroutines awaiting it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.scopes: list[Scope] = []
        self.callers: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scopes.append(scope)
        frame = sys._getframe(1)
        self.callers = []
        while frame is not None:
            self.callers.append(frame.f_code.co_qualname)
            frame = frame.f_back  # type: ignore[assignment]
        await PlainTextResponse(self.name)(scope, receive, send)


def _app() -> tuple[Starlette, DirectRoutes, dict[str, Any]]:
    events, shadow, shadowed, plain = (Endpoint(n) for n in ("events", "shadow", "s", "p"))
    events_route = Route("/a/{x}/events", events, methods=["GET"])
    shadowed_route = Route("/s/events", shadowed, methods=["GET"])
    app = Starlette(
        routes=[
            events_route,
            Route("/s/events", shadow, methods=["GET"]),  # first: Starlette picks it
            shadowed_route,
            Route("/p/events", plain, methods=["GET"]),
        ]
    )
    direct = DirectRoutes(app, [events_route, shadowed_route], ("/events",))
    return app, direct, {"events": events, "shadow": shadow, "route": events_route, "p": plain}


def _client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


STARLETTE_FRAMES = ("Starlette.__call__", "ServerErrorMiddleware.__call__", "Router.app")


async def test_a_direct_route_skips_starlettes_frames_with_its_scope_keys() -> None:
    app, direct, e = _app()
    async with _client(direct) as client:
        r = await client.get("/a/7/events")
    assert (r.status_code, r.text) == (200, "events")
    scope = e["events"].scopes[-1]
    assert scope["path_params"] == {"x": "7"}
    assert scope["route"] is e["route"] and scope["app"] is app and scope["router"] is app.router
    assert not [name for name in e["events"].callers if name in STARLETTE_FRAMES]


async def test_other_requests_are_routed_by_starlette() -> None:
    _, direct, e = _app()
    async with _client(direct) as client:
        plain = await client.get("/p/events")  # matching suffix, not a direct route
        wrong_method = await client.post("/a/7/events")
        shadowed = await client.get("/s/events")
        missing = await client.get("/nowhere/events")
    assert (plain.status_code, plain.text) == (200, "p")
    assert [name for name in e["p"].callers if name in STARLETTE_FRAMES]
    assert wrong_method.status_code == 405
    assert (shadowed.status_code, shadowed.text) == (200, "shadow")  # the first full match
    assert missing.status_code == 404


async def test_mounted_the_route_path_is_under_root_path_and_the_host_router_stays() -> None:
    _, direct, e = _app()
    host = Starlette(routes=[Mount("/tw", direct)])
    async with _client(host) as client:
        r = await client.get("/tw/a/9/events")
        outside = await client.get("/a/9/events")
    assert (r.status_code, r.text) == (200, "events")
    scope = e["events"].scopes[-1]
    assert scope["path_params"] == {"x": "9"} and scope["router"] is host.router
    assert e["events"].callers.count("Starlette.__call__") == 1  # the host's only
    assert outside.status_code == 404
