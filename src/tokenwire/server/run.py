"""``tokenwire serve``: run the app under uvicorn, after the models' start-up self-check.

The server listens at once (``/healthz`` answers, ``/readyz`` says 503
``starting``) while each default model's workers start and generate one token.
If that fails, ``serve`` prints one paragraph saying what failed and what to
do, and exits with status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys
from typing import Any

from tokenwire.errors import TokenwireError
from tokenwire.server import logformat, ws_deflate
from tokenwire.server.config import ENV_CONFIG, ServerConfig, config_path, unknown_variables
from tokenwire.server.connections import ConnectionLimits, guarded_protocol


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from tokenwire.server.app import create_app

    overrides = {
        "host": args.host,
        "port": args.port,
        "backlog": getattr(args, "backlog", None),
        "default_model": args.model,
        "broker": getattr(args, "broker", None),
        "processes": getattr(args, "processes", None),
        "model_workers": getattr(args, "model_workers", None),
        # run.py runs the self-check itself, so that a failure ends the process
        "preload_model": False,
    }
    try:
        config = ServerConfig.from_env(config_file=getattr(args, "config", None), **overrides)
    except ValueError as exc:
        return _bad_value(exc)
    refusal = _check_processes(config)
    if refusal:
        print(f"tokenwire serve: error: {refusal}", file=sys.stderr)
        return 2
    tls = _tls(args)
    if tls is None:
        return 2
    logformat.configure(args.log_level, getattr(args, "log_format", "text"))
    for line in unknown_variables():
        logging.getLogger("tokenwire").warning(line)
    try:
        models = _models(args)
    except TokenwireError as exc:
        return _bad_value(exc)
    _warn_somaxconn(config.backlog)
    if config.processes > 1:
        return _serve_processes(config, args, tls)
    app = create_app(hub=_hub(config), config=config, models=models)
    # With thousands of long-lived connections a full collection pauses every stream
    # for 50-100 ms (bench/, docs/performance.md). Everything built so far lives as
    # long as the process: freeze it out of the collector, and collect young objects
    # less often.
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 10)
    from tokenwire.server.graceful import GracefulServer, drain_of

    # SIGTERM: every open connection gets its final frame first (core/shutdown.py)
    server = GracefulServer(
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            backlog=config.backlog,
            log_level=args.log_level,
            # logging is configured above: uvicorn's lines go through the same handler
            log_config=None,
            access_log=False,
            ws_max_size=config.max_ws_message_bytes,
            # Idle and header-read timeouts, the header bound and the connection cap
            # live below ASGI (server/connections.py); uvicorn's own limit_concurrency
            # would answer plain text and leave silent sockets open.
            http=guarded_protocol(
                ConnectionLimits(
                    header_timeout_s=config.header_timeout_s,
                    max_header_bytes=config.max_header_bytes,
                    max_connections=config.max_connections,
                ),
                config.http_impl,
            ),
            timeout_keep_alive=max(1, round(config.keepalive_s)),
            h11_max_incomplete_event_size=config.max_header_bytes,
            ws_ping_interval=config.heartbeat_s,
            # As engine.io's: a pong later than this drops the client, and a loaded
            # machine (or a client busy between reads) may take seconds.
            ws_ping_timeout=max(2 * config.heartbeat_s, 5.0),
            # Deflate for text frames only: binary tensor frames go out as they are.
            ws_per_message_deflate=config.ws_compression,
            ws=ws_deflate.protocol_class() if config.ws_compression else "auto",
            timeout_graceful_shutdown=1,
            **tls,
        ),
        drain_of(app),
    )
    with asyncio.Runner(loop_factory=server.config.get_loop_factory()) as runner:
        return runner.run(_serve_checked(server, models))


def _warn_somaxconn(backlog: int) -> None:
    """listen() silently caps the backlog at net.core.somaxconn: say so when it does."""
    try:
        with open("/proc/sys/net/core/somaxconn") as f:
            somaxconn = int(f.read())
    except (OSError, ValueError):
        return
    if somaxconn < backlog:
        logging.getLogger("tokenwire").warning(
            "backlog %d is capped at net.core.somaxconn=%d: a connect storm past that many "
            "pending connections is refused (raise it: sysctl -w net.core.somaxconn=%d)",
            backlog, somaxconn, backlog,
        )  # fmt: skip


def _check_processes(config: ServerConfig) -> str:
    """Why ``config`` cannot be served ('' when it can)."""
    from tokenwire.broker import SCHEMES, is_shared

    scheme = config.broker.split(":", 1)[0].lower()
    if scheme not in SCHEMES:
        known = ", ".join(f"{s}://" for s in SCHEMES)
        return f"--broker {config.broker!r}: unknown scheme; expected one of {known}"
    if config.processes < 1:
        return f"--processes must be at least 1, not {config.processes}"
    if config.model_workers < 0:
        return f"--model-workers must be at least 0, not {config.model_workers}"
    if config.model_workers == 0 and not is_shared(config.broker):
        return (
            "--model-workers 0 needs a shared broker: a pure gateway queues its generations "
            "for `tokenwire worker` processes over Redis, and the memory broker has no queue"
        )
    if config.processes > 1 and not is_shared(config.broker):
        return (
            f"--processes {config.processes} needs a shared broker: with the memory broker "
            "each process holds its own streams, and a client the kernel sends to another "
            "process would not find its stream (404) or could not resume it. Use one process."
        )
    return ""


def _hub(config: ServerConfig) -> Any:
    """The hub over a shared broker; None for memory (the app builds that one)."""
    from tokenwire.broker import broker_from_url, is_shared
    from tokenwire.stream import Hub

    if not is_shared(config.broker):
        return None
    hc = config.hub
    return Hub(broker_from_url(config.broker, hc.retention, hc.window_bytes), config=hc)


def app_factory() -> Any:
    """One process of ``serve --processes N`` (uvicorn imports it in each process): the
    app from the environment, which the parent filled from its flags."""
    from tokenwire.server.app import create_app

    config = ServerConfig.from_env(preload_model=False)
    hub = _hub(config)
    app = create_app(hub=hub, config=config)
    return _closing_hub(app, hub) if hub is not None else app


def _closing_hub(app: Any, hub: Any) -> Any:
    """Close a hub given to the app (it closes only hubs it built) at lifespan shutdown."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return

        async def on_send(message: Any) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                await hub.aclose()
            await send(message)

        await app(scope, receive, on_send)

    return wrapped


def _serve_processes(config: ServerConfig, args: argparse.Namespace, tls: dict[str, Any]) -> int:
    import os

    import uvicorn

    # The processes are spawned: each builds its app from the environment.
    os.environ.update(
        {
            "TOKENWIRE_HOST": config.host,
            "TOKENWIRE_PORT": str(config.port),
            "TOKENWIRE_MODEL": config.default_model,
            "TOKENWIRE_BROKER": config.broker,
            "TOKENWIRE_MODEL_WORKERS": str(config.model_workers),
        }
    )
    os.environ.pop("TOKENWIRE_PROCESSES", None)
    path = config_path(getattr(args, "config", None))
    if path:
        os.environ[ENV_CONFIG] = os.path.abspath(path)
    if getattr(args, "models", None):
        os.environ["TOKENWIRE_MODELS"] = args.models
    uvicorn.run(
        "tokenwire.server.run:app_factory",
        factory=True,
        host=config.host,
        port=config.port,
        workers=config.processes,
        log_level=args.log_level,
        access_log=False,
        ws_max_size=config.max_ws_message_bytes,
        ws_per_message_deflate=False,
        **tls,
    )
    return 0


def _bad_value(exc: Exception) -> int:
    """A mistake in a flag, a variable or the config file: one line, exit status 2."""
    message = exc.message if isinstance(exc, TokenwireError) else str(exc)
    print(f"tokenwire serve: error: {message}", file=sys.stderr)
    return 2


async def _serve_checked(server: Any, models: Any) -> int:
    check = models.begin_self_check()
    serving = asyncio.create_task(server.serve())
    try:
        await asyncio.wait({check, serving}, return_when=asyncio.FIRST_COMPLETED)
        if check.done() and not check.cancelled() and check.exception() is not None:
            from tokenwire.workers.report import start_failure_paragraph

            print(start_failure_paragraph(models, check.exception()), file=sys.stderr, flush=True)
            server.should_exit = True
            await serving
            return 1
        await serving
        return 0
    finally:
        if not check.done():
            check.cancel()


def _tls(args: argparse.Namespace) -> dict[str, Any] | None:
    """uvicorn's TLS options from ``--tls-cert`` and ``--tls-key`` (both or neither);
    None, after saying why, when they cannot be used."""
    cert, key = getattr(args, "tls_cert", None), getattr(args, "tls_key", None)
    if cert is None and key is None:
        return {}
    if cert is None or key is None:
        print("tokenwire serve: --tls-cert and --tls-key go together", file=sys.stderr)
        return None
    import ssl

    try:  # fail here, in one line, rather than in uvicorn's traceback
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        print(f"tokenwire serve: cannot use {cert} and {key} for TLS: {exc}", file=sys.stderr)
        return None
    return {"ssl_certfile": cert, "ssl_keyfile": key}


def _models(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from tokenwire.models import default_manager

    config_file = config_path(getattr(args, "config", None))
    # --model, else TOKENWIRE_MODEL, else the file's default, else smollm2: the
    # manager's own order (config.default_model would hide the file's default)
    return default_manager(
        default=getattr(args, "model", None),
        config_file=config_file,
        models=getattr(args, "models", None),
    )
