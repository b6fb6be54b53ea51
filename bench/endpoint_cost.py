"""The SSE endpoint's own Python cost per write, without sockets, uvicorn or Starlette.

N subscribers are served in-process by ``EventStreamEndpoint`` with a ``send``
that only counts; a producer publishes M tokens, yielding to the loop after each
one (or every ``--every`` tokens: a burst, merged into catch-up frames), so every
publish wakes every subscriber for a one-event write. CPU time /
writes is what the hub, the cursor and the endpoint cost per subscriber per
event; the kernel's share of a real write comes on top (see docs/performance.md).

Run: ``python -m bench.endpoint_cost [--subscribers 1000] [--tokens 300] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import uvloop

from tokenwire.server import ServerConfig
from tokenwire.server.http_stream import EventStreamEndpoint, SSECodec
from tokenwire.stream import Hub, HubConfig


async def measure(subscribers: int, tokens: int, every: int = 1) -> tuple[int, float]:
    """(writes, CPU-seconds) for one run."""
    config = ServerConfig(hub=HubConfig(grace_s=float("inf")))
    hub = Hub(config=config.hub)
    endpoint = EventStreamEndpoint(hub, config, SSECodec(config), lambda exc: None)
    gate = asyncio.Event()
    gone = asyncio.Event()
    writes = 0

    async def producer() -> AsyncIterator[str]:
        await gate.wait()
        for i in range(tokens):
            yield f"{time.time_ns()} "
            if i % every == every - 1:
                await asyncio.sleep(0)

    async def send(message: Any) -> None:
        nonlocal writes
        writes += 1

    async def receive() -> dict[str, Any]:
        await gone.wait()
        return {"type": "http.disconnect"}

    stream = await hub.start(producer())
    scope = {"headers": [], "path_params": {"stream_id": stream.id}, "query_string": b""}
    tasks = [asyncio.ensure_future(endpoint(scope, receive, send)) for _ in range(subscribers)]
    for _ in range(1000):  # every endpoint attaches on its first step
        if stream.subscribers == subscribers:
            break
        await asyncio.sleep(0.01)
    writes = 0
    cpu0 = time.process_time()
    gate.set()
    await asyncio.gather(*tasks)
    cpu = time.process_time() - cpu0
    gone.set()
    await hub.aclose()
    return writes, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--tokens", type=int, default=300)
    parser.add_argument(
        "--every", type=int, default=1, help="tokens per producer step (64: a catch-up burst)"
    )
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    for _ in range(args.repeat):
        writes, cpu = uvloop.run(measure(args.subscribers, args.tokens, args.every))
        print(
            f"N={args.subscribers} M={args.tokens} every={args.every}: {writes} writes, "
            f"{cpu:.2f} CPU-s, {cpu / writes * 1e6:.2f} us per write, "
            f"{cpu / (args.subscribers * args.tokens) * 1e6:.2f} us per delivered token"
        )


if __name__ == "__main__":
    main()
