"""The client through a fault-injecting proxy, against a real server: over 200 random
cuts per transport, silent stalls and refused reconnects, every event arrives exactly
once, in order, and the terminal event ends the iteration."""

from __future__ import annotations

import asyncio
import random
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import ServerProcess
from tests.faultproxy import FaultProxy, random_plan
from tokenwire.client import (
    Client,
    HeartbeatTimeoutError,
    ReconnectPolicy,
    StateEvent,
    StreamHandle,
)
from tokenwire.events import Event
from tokenwire.models.scripted import scripted_token

pytestmark = pytest.mark.slow

TOKENS = 2000
CUTS = 200


async def http_start(server: ServerProcess, **body: Any) -> str:
    body.setdefault("model", "scripted")
    body.setdefault("prompt", "hello")
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        r = await client.post("/v1/streams", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def assert_exactly_once(events: list[Event], tokens: int) -> None:
    """Every seq covered once, in order (merged frames expanded), the scripted text
    whole, and the terminal event last."""
    covered: list[int] = []
    for event in events:
        first = event.fields.get("from_seq", event.seq)
        covered.extend(range(first, event.seq + 1))
    assert covered == list(range(1, len(covered) + 1))
    text = "".join(e.fields["text"] for e in events if e.kind == "token")
    assert text == "".join(scripted_token(i) for i in range(tokens))
    assert events[-1].kind == "done"
    assert [e for e in events if e.terminal] == [events[-1]]


async def collect(handle: StreamHandle) -> list[Event]:
    return [event async for event in handle]


async def run_under_faults(server: ServerProcess, transport: str, seed: int) -> None:
    rng = random.Random(seed)
    # A few stalls (each costs two heartbeat intervals); every connection else is cut.
    proxy = await FaultProxy(
        "127.0.0.1",
        int(urlsplit(server.url).port or 80),
        plan=random_plan(rng, stall_every=60 if transport != "ws" else 25),
        seed=seed,
    ).start()
    policy = ReconnectPolicy(
        base_s=0.005,
        cap_s=0.1,
        max_attempts=None,
        honor_retry=False,  # the server asks for 2 s; the test wants many cuts quickly
        breaker_threshold=8,
        breaker_cooldown_s=0.05,
        connect_timeout_s=5.0,
        rng=random.Random(seed),
    )
    heartbeat_timeouts = 0

    def on_state(change: StateEvent) -> None:
        nonlocal heartbeat_timeouts
        if isinstance(change.error, HeartbeatTimeoutError):
            heartbeat_timeouts += 1

    parallel = 3 if transport == "ws" else 2
    streams = 0
    try:
        async with Client(proxy.url, transport, heartbeat_s=1.0, reconnect=policy) as client:
            outages = 0
            while proxy.stats.cuts < CUTS:
                sids = [
                    await http_start(server, max_tokens=TOKENS, delay_ms=1) for _ in range(parallel)
                ]
                handles = [client.subscribe(sid, on_state=on_state) for sid in sids]
                tasks = [asyncio.create_task(collect(h)) for h in handles]
                if outages < 2:
                    # Refused reconnects for a while, in the middle of a pass.
                    await asyncio.sleep(0.3)
                    await proxy.outage(0.4)
                    outages += 1
                for events in await asyncio.gather(*tasks):
                    assert_exactly_once(events, TOKENS)
                streams += parallel
            metrics = client.metrics()
    finally:
        await proxy.aclose()
    stats = proxy.stats
    assert stats.cuts >= CUTS
    assert stats.stalls >= 1 and heartbeat_timeouts >= 1  # stalls end by the heartbeat
    assert stats.refused_windows == 2
    assert metrics["reconnects"] >= CUTS / 2
    print(
        f"{transport}: {streams} streams, {stats.connections} connections, {stats.cuts} cuts "
        f"({stats.resets} RST), {stats.stalls} stalls, {heartbeat_timeouts} heartbeat timeouts, "
        f"{metrics['reconnects']} reconnects, {metrics['duplicates']} duplicates dropped"
    )


@pytest.mark.parametrize("transport", ["sse", "ndjson", "ws"])
async def test_exactly_once_through_cuts_stalls_and_outages(
    server: ServerProcess, transport: str
) -> None:
    await run_under_faults(server, transport, seed={"sse": 1, "ndjson": 2, "ws": 3}[transport])
