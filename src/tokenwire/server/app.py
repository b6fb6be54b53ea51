"""``create_app()``: the tokenwire ASGI application."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from tokenwire.errors import TokenwireError
from tokenwire.metrics import declare_stream_metrics, process_gauges
from tokenwire.models import ModelManager
from tokenwire.pipelines import PipelineRegistry
from tokenwire.server import ai_sdk, chat_views, openai_api, openapi, socketio_app, ws
from tokenwire.server.access import CREATE, READ, STOP, Guarded, credentials_of, require_json
from tokenwire.server.access_log import AccessLog
from tokenwire.server.auth import protect
from tokenwire.server.config import ServerConfig, config_path
from tokenwire.server.direct_routes import DirectRoutes
from tokenwire.server.errors import (
    EXCEPTION_HANDLERS,
    PlainErrorsAsJSON,
    error_response,
    read_json,
)
from tokenwire.server.http_stream import EventStreamEndpoint, ndjson_encoder, sse_encoder
from tokenwire.server.mounting import FullPaths, MountedPaths
from tokenwire.server.services import Services
from tokenwire.stream import Hub, log_event

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
# the label values of per-transport counters, present on /metrics from the start
TRANSPORTS = ("sse", "ndjson", "ws", "socketio", "openai", "ai_sdk")


# TOKENWIRE_COOP_COEP: the demo page and /static/ become cross-origin isolated, which
# browsers require before a page may use SharedArrayBuffer (docs/browser.md).
ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
}


class _WithHeaders:
    """Adds ``headers`` to every HTTP response of ``app``."""

    def __init__(self, app: Any, headers: dict[str, str]) -> None:
        self.app = app
        self.raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *self.raw]}
            await send(message)

        await self.app(scope, receive, with_headers)


class _SocketIOFront:
    """``/socket.io/`` to python-socketio's app (``socketio``), every other request
    straight to ``app``: engine.io's ``__call__`` would only pass those on, and its
    frame would stay suspended for each stream's whole life (docs/performance.md)."""

    def __init__(self, socketio: Any, app: Any) -> None:
        self.socketio = socketio
        self.app = app
        self.prefix: str = socketio.engineio_path  # "/socket.io/"

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("app", "socketio"):
            raise AttributeError(name)
        return getattr(self.socketio, name)  # .sio, and the app's .state, .router

    def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
        if scope["type"] in ("http", "websocket"):
            path: str = scope["path"]
            # engine.io's own test: the path with a trailing slash under its prefix
            if not (path if path.endswith("/") else path + "/").startswith(self.prefix):
                return self.app(scope, receive, send)
        return self.socketio(scope, receive, send)


def _static_files() -> StaticFiles:
    """``/static/``: the browser client first (``static/js`` links to clients/js/src,
    so ``/static/tokenwire.js`` and its relative imports resolve), then the demo page's
    own files. Symlinks are followed; paths still cannot leave the served directories."""
    files = StaticFiles(directory=STATIC_DIR, follow_symlink=True)
    library = STATIC_DIR / "js"
    if library.is_dir():
        files.all_directories.insert(0, library)
    return files


def _preload(models: ModelManager) -> None:
    """Start the default model (its self-check) before the first request needs it;
    ``/readyz`` answers 503 until it is ready."""

    def done(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logging.getLogger("tokenwire").error(
                "model %r failed its start-up self-check: %s", models.default, task.exception()
            )
        elif not task.cancelled():
            log_event("model_loaded", model=models.default, transport="server")

    models.begin_self_check().add_done_callback(done)


def _error_app(exc: TokenwireError) -> Response:
    return error_response(exc.status, exc.code, exc.message)


def create_app(
    hub: Hub | None = None,
    config: ServerConfig | None = None,
    models: ModelManager | None = None,
    pipelines: PipelineRegistry | None = None,
) -> Starlette:
    """The ASGI app. Everything not given is built from ``config`` (or the environment)."""
    config = config or ServerConfig.from_env()
    owns_hub = hub is None
    hub = hub or Hub(config=config.hub)
    if models is None:
        from tokenwire.models import default_manager

        models = default_manager(default=config.default_model, config_file=config_path(None))
    if pipelines is None:
        from tokenwire.examples import default_pipelines

        pipelines = default_pipelines()
    services = Services(hub, models, config, pipelines)
    from tokenwire.workers.redis_worker import job_runner_for

    services.jobs = job_runner_for(hub, models, config)  # over Redis (docs/scaling.md)

    access = services.access

    async def start_stream(request: Request) -> Response:
        access.check(credentials_of(request.scope), None, CREATE)
        require_json(request.headers, config.max_body_bytes)
        body = await read_json(request, config.max_body_bytes, config.body_timeout_s)
        started = await services.start_generation(body)
        # Mounted under a prefix (docs/embedding.md): the URLs keep it.
        root = request.scope.get("root_path", "")
        for name in ("events_url", "ndjson_url", "status_url"):
            started[name] = root + started[name]
        return JSONResponse(started, status_code=201)

    async def stream_status(request: Request) -> Response:
        access.check(credentials_of(request.scope), request.path_params["stream_id"], READ)
        # Over Redis, also a stream another node runs or a job still queued.
        stream = await hub._lookup(request.path_params["stream_id"])
        return JSONResponse(stream.to_dict())

    async def stop_stream(request: Request) -> Response:
        access.check(credentials_of(request.scope), request.path_params["stream_id"], STOP)
        stream = await hub.cancel(request.path_params["stream_id"])
        return JSONResponse({"id": stream.id, "status": str(stream.status)})

    async def healthz(request: Request) -> Response:
        return JSONResponse(
            {
                "status": "ok",
                "streams": hub.active_count(),
                "subscribers": hub.subscriber_count,
                "models": models.names(),
                "default_model": models.default,
                "pipelines": services.pipelines.names(),
                "readiness": models.readiness,
                "workers": models.states(),
                # over Redis: this node's generation slots (workers/redis_worker.py)
                **({"jobs": services.jobs.describe()} if services.jobs is not None else {}),
            }
        )

    async def readyz(request: Request) -> Response:
        # Ready once the self-check passed (or nothing is checked: models start on
        # first use), and while the default model is not in a crash loop.
        states = models.states()
        default = states.get(models.default or "", {})
        status = models.readiness
        if status in ("lazy", "ready") and default.get("state") == "unavailable":
            status = "unavailable"
        body: dict[str, Any] = {
            "status": status,
            "default_model": models.default,
            "workers": states,
        }
        if status in ("lazy", "ready"):
            return JSONResponse(body)
        err = models.startup_error
        body["error"] = {
            "code": getattr(err, "code", None) or f"model_{status}",
            "message": getattr(err, "message", None)
            or default.get("reason")
            or f"the default model {models.default!r} is {status}",
        }
        return JSONResponse(body, status_code=503)

    lag_monitor = process_gauges(hub.metrics)
    hub.metrics.include_process()
    declare_stream_metrics(hub.metrics, models.names(), TRANSPORTS)

    async def metrics(request: Request) -> Response:
        return PlainTextResponse(
            hub.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    isolation = ISOLATION_HEADERS if config.coop_coep else None

    async def index(request: Request) -> Response:
        page = STATIC_DIR / "index.html"
        if page.is_file():
            return FileResponse(page, headers=isolation)
        return JSONResponse({"name": "tokenwire", "docs": "/v1/streams", "health": "/healthz"})

    sse, nd = sse_encoder(config), ndjson_encoder(config)
    events = Route(
        "/v1/streams/{stream_id}/events",
        Guarded(EventStreamEndpoint(hub, config, sse, _error_app, services.connections), READ),
        methods=["GET"],
    )
    ndjson = Route(
        "/v1/streams/{stream_id}/ndjson",
        Guarded(EventStreamEndpoint(hub, config, nd, _error_app, services.connections), READ),
        methods=["GET"],
    )
    ws_routes = ws.routes(services)
    routes: list[BaseRoute] = [
        Route("/", index, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/v1/streams", start_stream, methods=["POST"]),
        Route("/v1/streams/{stream_id}", stream_status, methods=["GET"]),
        Route("/v1/streams/{stream_id}", stop_stream, methods=["DELETE"]),
        events,
        ndjson,
    ]
    for name, view in chat_views.views(services).items():  # any stream as a chat format
        routes.append(
            Route(f"/v1/streams/{{stream_id}}/{name}", Guarded(view, READ), methods=["GET"])
        )
    routes += ws_routes + openai_api.routes(services) + ai_sdk.routes(services)
    routes += openapi.routes()
    if STATIC_DIR.is_dir():
        static: Any = _static_files()
        if isolation:
            static = _WithHeaders(static, isolation)
        routes.append(Mount("/static", static, name="static"))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        lag_monitor.start()
        if config.preload_model:
            _preload(models)
        if services.jobs is not None:
            await services.jobs.start()
        yield
        if services.jobs is not None:
            await services.jobs.aclose()
        await lag_monitor.aclose()
        if owns_hub:
            await hub.aclose()
        await models.aclose()

    app = Starlette(routes=routes, exception_handlers=EXCEPTION_HANDLERS, lifespan=lifespan)  # type: ignore[arg-type]
    app.state.services = services
    app.state.hub = hub
    # SIGTERM: final frames to every open connection, before uvicorn waits for them
    # (core/shutdown.py; tokenwire serve calls it).
    app.state.drain = lambda: services.connections.drain(
        hub if owns_hub else None, config.shutdown_timeout_s
    )
    # engine.io answers its own 4xx in plain text; every error here is JSON.
    # The long-lived routes skip Starlette's per-request frames (server/direct_routes.py).
    direct = DirectRoutes(app, [events, ndjson, *ws_routes], ("/events", "/ndjson", "/v1/ws"))
    routes_app = FullPaths(direct)
    socketio = PlainErrorsAsJSON(socketio_app.wrap(routes_app, services), "/socket.io")
    wrapped = _SocketIOFront(socketio, routes_app)
    protected = protect(
        wrapped,
        api_keys=config.api_keys,
        cors_origins=config.cors_origins,
        access=access,
        max_connections_per_ip=config.max_connections_per_ip,
    )
    return AccessLog(MountedPaths(protected))  # type: ignore[return-value]
