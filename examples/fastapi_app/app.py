"""A FastAPI app with tokenwire mounted at /tw, and two front ends on it.

    cd examples/fastapi_app
    npm ci && node build.mjs          # the pages, into dist/
    uvicorn app:app --port 8000       # then open http://127.0.0.1:8000/

- ``/``: a React page on the Vercel AI SDK's ``useChat`` (web/chat.jsx), talking to
  tokenwire's AI SDK route at ``/tw/v1/ai-sdk/chat``;
- ``/socketio.html``: a plain page on ``socket.io-client``, on tokenwire's Socket.IO
  server at ``/tw/socket.io/``;
- ``/api/health``: one of the app's own routes, reading tokenwire's hub.

Everything else of tokenwire (SSE, NDJSON, WebSocket, OpenAI routes, the demo
page) is under ``/tw/``. ``tokenwire.lifespan`` runs tokenwire's start-up and
shut-down (the model workers, the hub) inside this app's.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

import tokenwire
from tokenwire.server import create_app

HERE = Path(__file__).resolve().parent
PAGES = Path(os.environ.get("EXAMPLE_PAGES", HERE / "dist"))

tw = create_app()
app = FastAPI(title="tokenwire in FastAPI", lifespan=tokenwire.lifespan(tw))
app.mount("/tw", tw)


@app.get("/api/health")
async def health() -> dict[str, object]:
    hub = tw.state.hub
    return {"ok": True, "streams": hub.active_count()}


# Last: the pages own every path no route above took.
app.mount("/", StaticFiles(directory=PAGES, html=True, check_dir=False), name="pages")
