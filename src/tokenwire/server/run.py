"""``tokenwire serve``: run the app under uvicorn."""

from __future__ import annotations

import argparse
import gc
import logging

from tokenwire.server.config import ServerConfig


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from tokenwire.server.app import create_app

    overrides = {
        "host": args.host,
        "port": args.port,
        "default_model": args.model,
        "preload_model": True,
    }
    config = ServerConfig.from_env(**overrides)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    app = create_app(config=config, models=_models(args, config))
    # With thousands of long-lived connections a full collection pauses every stream
    # for 50-100 ms (bench/, docs/performance.md). Everything built so far lives as
    # long as the process: freeze it out of the collector, and collect young objects
    # less often.
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 10)
    uvicorn.run(
        app,
        host=config.host,
        port=config.port,
        log_level=args.log_level,
        access_log=False,
        ws_max_size=config.max_ws_message_bytes,
        ws_ping_interval=config.heartbeat_s,
        ws_ping_timeout=2 * config.heartbeat_s,
        # Token frames are tiny and tensor bytes do not compress: deflate per
        # connection would cost CPU for every subscriber and gain nothing.
        ws_per_message_deflate=False,
    )
    return 0


def _models(args: argparse.Namespace, config: ServerConfig):  # type: ignore[no-untyped-def]
    from tokenwire.models import default_manager

    config_file = getattr(args, "config", None)
    return default_manager(
        default=config.default_model, config_file=config_file, models=getattr(args, "models", None)
    )
