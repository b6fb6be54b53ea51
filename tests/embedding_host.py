"""A FastAPI host app that mounts tokenwire at ``/tw``, run under uvicorn by the
embedding tests: ``uvicorn tests.embedding_host:app``.

``EMBED_MODE=lifespan`` builds the host with ``tokenwire.lifespan(tw, host=…)``;
``EMBED_MODE=mount`` builds it with its own lifespan first and then calls
``tokenwire.mount``. Either way the host's lifespan prints ``host startup`` and
``host shutdown``, so the tests can check the order against tokenwire's lines."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request

import tokenwire
from tokenwire.server import ServerConfig, create_app

logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s")
log = logging.getLogger("host")

tw = create_app(config=ServerConfig.from_env(preload_model=True))


@contextlib.asynccontextmanager
async def host_lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
    log.info("host startup")
    yield {"greeting": "hello from the host"}
    log.info("host shutdown")


if os.environ.get("EMBED_MODE", "lifespan") == "mount":
    app = FastAPI(lifespan=host_lifespan)
    tokenwire.mount(app, "/tw", tw)
else:
    app = FastAPI(lifespan=tokenwire.lifespan(tw, host=host_lifespan))
    app.mount("/tw", tw)


@app.get("/hello")
async def hello(request: Request) -> dict[str, Any]:
    return {"greeting": request.state.greeting}
