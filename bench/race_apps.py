"""The Python servers the race (:mod:`bench.race`) runs, each in its own process.

``tokenwire`` and ``sse-starlette`` are :mod:`bench.apps`'s; ``fastapi`` is the
same peer pattern (a broadcaster with one ``asyncio.Queue`` per subscriber, each
event JSON-encoded once) written the way FastAPI 0.165 documents native SSE: a
path operation with ``response_class=EventSourceResponse`` that yields
``ServerSentEvent`` objects (``raw_data``: the pre-encoded JSON goes out as is).
All three expose the bench surface :mod:`bench.apps` describes.

Run: ``python -m bench.race_apps tokenwire|sse-starlette|fastapi --port PORT [--backlog N]
[--protocols plain|serve]`` (``serve``: ``tokenwire serve``'s uvicorn protocol classes,
for the scale bench's idle connections).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent
from starlette.types import ASGIApp

from bench.apps import APPS, Gates, PeerStream

TERMINAL = ("done", "error", "cancelled")


def fastapi_app() -> ASGIApp:
    app = FastAPI()
    gates = Gates()
    streams: dict[str, PeerStream] = {}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/bench/go")
    async def go(request: Request) -> dict[str, bool]:
        gates.open((await request.json())["key"])
        return {"ok": True}

    @app.post("/v1/streams", status_code=201)
    async def start(request: Request) -> dict[str, str]:
        body = await request.json()
        stream = PeerStream(f"st_{len(streams) + 1}")
        streams[stream.id] = stream
        gate = gates.get(body["prompt"])
        coro = stream.run(gate, int(body["max_tokens"]), float(body.get("delay_ms", 0)))
        stream.task = asyncio.create_task(coro)
        return {"id": stream.id}

    def find(stream_id: str) -> PeerStream:
        if stream_id not in streams:
            raise HTTPException(404, "no such stream")
        return streams[stream_id]

    @app.get("/v1/streams/{stream_id}")
    async def status(stream_id: str) -> dict[str, Any]:
        stream = find(stream_id)
        return {"id": stream.id, "last_seq": stream.last_seq, "subscribers": len(stream.queues)}

    @app.delete("/v1/streams/{stream_id}")
    async def stop(stream_id: str) -> JSONResponse:
        stream = streams.pop(find(stream_id).id)
        if stream.task is not None:
            stream.task.cancel()
        return JSONResponse({"id": stream.id})

    @app.get("/v1/streams/{stream_id}/events", response_class=EventSourceResponse)
    async def events(stream_id: str) -> AsyncIterator[ServerSentEvent]:
        stream = find(stream_id)
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        stream.queues.add(queue)
        try:
            yield ServerSentEvent(retry=2000)
            while True:
                item = await queue.get()
                yield ServerSentEvent(raw_data=item["data"], event=item["event"], id=item["id"])
                if item["event"] in TERMINAL:
                    return
        finally:
            stream.queues.discard(queue)

    return app


RACE_APPS = {**APPS, "fastapi": fastapi_app}


def uvicorn_protocols(which: str, max_connections: int = 1_000_000) -> dict[str, Any]:
    """uvicorn's ``http``/``ws`` settings. ``plain``: uvicorn's own (httptools);
    ``serve``: those of ``tokenwire serve`` (server/run.py: the guarded HTTP protocol
    of server/connections.py and the deflate-capable WebSocket protocol), with a
    connection cap the bench does not reach."""
    if which == "plain":
        return {"http": "httptools"}
    from tokenwire.server import ws_deflate
    from tokenwire.server.connections import ConnectionLimits, guarded_protocol

    return {
        "http": guarded_protocol(ConnectionLimits(max_connections=max_connections)),
        "ws": ws_deflate.protocol_class(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("app", choices=sorted(RACE_APPS))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backlog", type=int, default=4096, help="listen queue (uvicorn's)")
    parser.add_argument("--protocols", default="plain", choices=("plain", "serve"))
    args = parser.parse_args()
    # The settings of `tokenwire serve`, pinned, for every Python server alike.
    uvicorn.run(
        RACE_APPS[args.app](),
        host=args.host,
        port=args.port,
        loop="uvloop",
        access_log=False,
        log_level="warning",
        backlog=args.backlog,
        **uvicorn_protocols(args.protocols),
    )


if __name__ == "__main__":
    main()
