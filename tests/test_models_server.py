"""The embedded model through the real HTTP server (uvicorn in this process, so its
worker pool can be watched): SSE token events, metrics, DELETE, grace expiry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn

from tests.conftest import free_port
from tokenwire import Hub, HubConfig
from tokenwire.events import loads
from tokenwire.models import ModelManager, default_manager
from tokenwire.server.app import create_app
from tokenwire.server.config import ServerConfig
from tokenwire.sse import SSEParser
from tokenwire.workers import WorkerBackend


@dataclass
class Running:
    url: str
    hub: Hub
    models: ModelManager

    @property
    def backend(self) -> WorkerBackend:
        backend = self.models.get("smollm2")
        assert isinstance(backend, WorkerBackend)
        return backend

    async def worker_goes_idle(self, timeout: float = 2.0) -> None:
        """The worker stopped generating: ready for the next request."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.backend.describe()["state"] != "ready":
            assert loop.time() < deadline, self.backend.describe()
            await asyncio.sleep(0.01)


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    models = default_manager(env={})
    hub = Hub(config=HubConfig(grace_s=0.3))
    app = create_app(hub=hub, config=ServerConfig.from_env({}), models=models)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn offers no event to wait on
        await asyncio.sleep(0.01)
    yield Running(f"http://127.0.0.1:{port}", hub, models)
    server.should_exit = True
    await task
    await hub.aclose()


async def start(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    resp = await client.post("/v1/streams", json={"model": "smollm2", "temperature": 0, **body})
    assert resp.status_code == 201, resp.text
    created: dict[str, Any] = resp.json()
    return created


async def events(
    client: httpx.AsyncClient, path: str, stop_after_tokens: int | None = None
) -> AsyncIterator[dict[str, Any]]:
    parser = SSEParser()
    tokens = 0
    async with client.stream("GET", path) as resp:
        async for chunk in resp.aiter_bytes():
            for msg in parser.feed(chunk):
                if msg.event in ("tw-open", "open", "heartbeat") or not msg.data:
                    continue
                ev: dict[str, Any] = loads(msg.data)
                yield ev
                if ev["kind"] == "token":
                    tokens += 1
                    if stop_after_tokens is not None and tokens >= stop_after_tokens:
                        return
                if ev["kind"] in ("done", "error", "cancelled"):
                    return


async def test_tokens_arrive_as_separate_sse_events_then_metrics_and_done(running: Running) -> None:
    async with httpx.AsyncClient(base_url=running.url, timeout=60) as client:
        created = await start(client, prompt="Say hello.", max_tokens=10)
        got = [ev async for ev in events(client, created["events_url"])]
    kinds = [ev["kind"] for ev in got]
    assert kinds[-2:] == ["metrics", "done"] and set(kinds[:-2]) == {"token"}
    assert len(kinds) - 2 >= 2
    assert [ev["seq"] for ev in got] == list(range(1, len(got) + 1))
    assert got[-2]["ttft_ms"] > 0
    usage = got[-1]["usage"]
    assert usage["prompt_tokens"] > 0 and 0 < usage["completion_tokens"] <= 10


async def test_delete_mid_way_cancels_and_frees_the_worker(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The stop counts from when the server takes the DELETE, not from when the client
    # sent it: on a loaded machine the model goes on generating while the request is
    # on its way (a loop stall of 0.8 s is a few tokens).
    at_stop: list[int] = []
    cancel = running.hub.cancel

    async def noted(stream_id: str, reason: str = "stopped") -> Any:
        at_stop.append(running.hub.get(stream_id).last_seq)
        return await cancel(stream_id, reason)

    monkeypatch.setattr(running.hub, "cancel", noted)
    async with httpx.AsyncClient(base_url=running.url, timeout=60) as client:
        created = await start(client, prompt="Write a long story about a ship.", max_tokens=1000)
        async for _ in events(client, created["events_url"], stop_after_tokens=3):
            pass
        assert running.backend.describe()["state"] == "busy"
        resp = await client.delete(created["status_url"])
        assert resp.status_code == 200 and resp.json()["status"] == "cancelled"
        assert len(at_stop) == 1
        rest = [ev async for ev in events(client, f"{created['events_url']}?after={at_stop[0]}")]
    assert rest[-1]["kind"] == "cancelled" and rest[-1]["reason"] == "stopped"
    assert sum(ev["kind"] == "token" for ev in rest) <= 1  # within a token of the stop
    await running.worker_goes_idle()


async def test_consumer_leaving_past_the_grace_period_cancels(running: Running) -> None:
    async with httpx.AsyncClient(base_url=running.url, timeout=60) as client:
        created = await start(client, prompt="Write a long story about a ship.", max_tokens=1000)
        async for _ in events(client, created["events_url"], stop_after_tokens=2):
            pass  # the only consumer leaves
        stream = running.hub.get(created["id"])
        terminal = await asyncio.wait_for(stream.wait(), 10)
        assert terminal.kind == "cancelled" and terminal.fields["reason"] == "no_subscribers"
        status = (await client.get(created["status_url"])).json()
        assert status["status"] == "cancelled"
    await running.worker_goes_idle()


async def test_two_concurrent_generations_through_the_server(running: Running) -> None:
    prompts = ["What is the capital of France?", "Write a haiku about snow."]
    async with httpx.AsyncClient(base_url=running.url, timeout=60) as client:

        async def answer(prompt: str) -> str:
            created = await start(client, prompt=prompt, max_tokens=8)
            got = [ev async for ev in events(client, created["events_url"])]
            return "".join(ev["text"] for ev in got if ev["kind"] == "token")

        alone = [await answer(p) for p in prompts]
        together = await asyncio.gather(*(answer(p) for p in prompts))
    assert list(together) == alone and alone[0] != alone[1]
