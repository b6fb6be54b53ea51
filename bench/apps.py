"""The two servers the fan-out bench compares, each run in its own process.

Both expose the same bench surface, so one client and one orchestrator drive both:

- ``POST /v1/streams`` ``{"model": "bench", "prompt": KEY, "max_tokens": M, "delay_ms": D}``
  creates a stream whose producer waits on the gate ``KEY``, then emits ``M``
  token events ``D`` ms apart (``0``: as fast as it can), then the terminal event;
- ``GET /v1/streams/{id}`` reports ``subscribers``;
- ``GET /v1/streams/{id}/events`` is the SSE endpoint;
- ``POST /bench/go`` ``{"key": KEY}`` opens the gate;
- ``DELETE /v1/streams/{id}`` stops a stream.

Every token's text is ``"<time.time_ns()> "``, taken right before the producer
yields it, so clients on the same machine can measure publish-to-receive latency.
Consecutive tokens merged by tokenwire's catch-up stay parseable: the merged
text is the stamps joined.

``tokenwire`` is the real app (``create_app`` with a ``ModelManager`` holding a
gated bench backend and the scripted one). ``sse-starlette`` is the pattern most
Python users write: a broadcaster with one ``asyncio.Queue`` per subscriber, fed
by the producer, drained by an ``EventSourceResponse`` generator.

Run: ``python -m bench.apps tokenwire|sse-starlette --port PORT [--gc-tune]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

INF = float("inf")


class Gates:
    """Named one-shot gates: producers wait until the bench says go."""

    def __init__(self) -> None:
        self._gates: dict[str, asyncio.Event] = {}

    def get(self, key: str) -> asyncio.Event:
        return self._gates.setdefault(key, asyncio.Event())

    def open(self, key: str) -> None:
        self.get(key).set()
        self._gates.pop(key, None)


async def paced_stamps(count: int, delay_ms: float) -> AsyncIterator[str]:
    """``count`` stamps ``delay_ms`` apart on an absolute schedule (a late tick emits
    what is due at once, so the mean rate holds); ``0`` means no pacing, yielding
    to the loop every 64 tokens like the scripted model."""
    interval = delay_ms / 1000.0
    start = time.perf_counter()
    for i in range(count):
        if interval:
            wait = start + i * interval - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
        elif i % 64 == 63:
            await asyncio.sleep(0)
        yield f"{time.time_ns()} "


# -- tokenwire -------------------------------------------------------------------


def tokenwire_app() -> ASGIApp:
    from tokenwire.models import Finish, GenerationRequest, ModelManager, ScriptedBackend, Usage
    from tokenwire.server import ServerConfig, create_app
    from tokenwire.stream import Hub, HubConfig

    gates = Gates()

    class BenchBackend:
        """Waits for its gate (the prompt text), then streams timestamped tokens."""

        name = "bench"

        async def generate(self, request: GenerationRequest) -> AsyncIterator[str | Finish]:
            await gates.get(request.prompt_text).wait()
            async for stamp in paced_stamps(request.max_tokens, request.delay_ms):
                yield stamp
            yield Finish("length", Usage(0, request.max_tokens))

        async def aclose(self) -> None:
            return None

    models = ModelManager(default="bench")
    models.register("bench", BenchBackend())
    models.register("scripted", ScriptedBackend())
    # Nothing may end a stream during the bench: no grace, no idle watchdog.
    hub_config = HubConfig(grace_s=INF, idle_timeout_s=3600.0, deadline_s=3600.0)
    config = ServerConfig(hub=hub_config)
    app = create_app(hub=Hub(config=hub_config), config=config, models=models)

    async def go(request: Request) -> Response:
        gates.open((await request.json())["key"])
        return JSONResponse({"ok": True})

    app.router.routes.insert(0, Route("/bench/go", go, methods=["POST"]))
    return app


# -- sse-starlette peer ----------------------------------------------------------


class PeerStream:
    """One stream of the peer: a set of subscriber queues and a producer task."""

    def __init__(self, stream_id: str) -> None:
        self.id = stream_id
        self.queues: set[asyncio.Queue[dict[str, Any]]] = set()
        self.last_seq = 0
        self.task: asyncio.Task[None] | None = None

    def publish(self, kind: str, fields: dict[str, Any]) -> None:
        self.last_seq += 1
        seq = self.last_seq
        # Encoded once here; sse-starlette still frames it per subscriber.
        data = orjson.dumps({"seq": seq, "kind": kind, **fields}).decode()
        item = {"id": str(seq), "event": kind, "data": data}
        for q in self.queues:
            q.put_nowait(item)

    async def run(self, gate: asyncio.Event, count: int, delay_ms: float) -> None:
        try:
            await gate.wait()
            async for stamp in paced_stamps(count, delay_ms):
                self.publish("token", {"text": stamp})
            self.publish("done", {"finish_reason": "length"})
        except asyncio.CancelledError:
            self.publish("cancelled", {"reason": "stopped"})
            raise


def peer_app() -> ASGIApp:
    from sse_starlette.sse import EventSourceResponse

    gates = Gates()
    streams: dict[str, PeerStream] = {}

    async def start(request: Request) -> Response:
        body = await request.json()
        stream = PeerStream(f"st_{len(streams) + 1}")
        streams[stream.id] = stream
        gate = gates.get(body["prompt"])
        coro = stream.run(gate, int(body["max_tokens"]), float(body.get("delay_ms", 0)))
        stream.task = asyncio.create_task(coro)
        return JSONResponse({"id": stream.id}, status_code=201)

    async def status(request: Request) -> Response:
        stream = streams[request.path_params["stream_id"]]
        return JSONResponse(
            {"id": stream.id, "last_seq": stream.last_seq, "subscribers": len(stream.queues)}
        )

    async def stop(request: Request) -> Response:
        stream = streams.pop(request.path_params["stream_id"])
        if stream.task is not None:
            stream.task.cancel()
        return JSONResponse({"id": stream.id})

    async def events(request: Request) -> Response:
        stream = streams[request.path_params["stream_id"]]
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        stream.queues.add(queue)

        async def feed() -> AsyncIterator[dict[str, Any]]:
            try:
                # Like tokenwire's prelude; uvicorn sends the response head with it.
                yield {"retry": 2000}
                while True:
                    item = await queue.get()
                    yield item
                    if item["event"] in ("done", "error", "cancelled"):
                        return
            finally:
                stream.queues.discard(queue)

        return EventSourceResponse(feed(), ping=15)

    async def go(request: Request) -> Response:
        gates.open((await request.json())["key"])
        return JSONResponse({"ok": True})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/bench/go", go, methods=["POST"]),
            Route("/v1/streams", start, methods=["POST"]),
            Route("/v1/streams/{stream_id}", status, methods=["GET"]),
            Route("/v1/streams/{stream_id}", stop, methods=["DELETE"]),
            Route("/v1/streams/{stream_id}/events", events, methods=["GET"]),
        ]
    )


APPS = {"tokenwire": tokenwire_app, "sse-starlette": peer_app}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("app", choices=sorted(APPS))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--gc-tune", action="store_true", help="freeze the startup heap, rarer young collections"
    )
    args = parser.parse_args()
    app = APPS[args.app]()
    if args.gc_tune:
        # With 1000 connections a full collection walks ~170k objects (60-100 ms
        # here), and the futures and coroutines alive at each young collection get
        # promoted, so one comes every couple of seconds. Not what `tokenwire serve`
        # does (yet): off unless asked.
        gc.collect()
        gc.freeze()
        gc.set_threshold(20_000, 20, 10)
    # The settings of `tokenwire serve`, pinned: uvloop, httptools, no access log.
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        backlog=4096,
    )


if __name__ == "__main__":
    main()
