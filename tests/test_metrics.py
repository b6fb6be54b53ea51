"""/metrics on prometheus_client (issue 13, deliverable 7): it parses with the
Prometheus text parser, has ``model``, ``transport`` and ``status`` labels, shows
every counter from the first scrape, and no name collides with prometheus_client's
own ``process_*`` collector."""

from __future__ import annotations

import asyncio

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ServerFactory
from tokenwire.metrics import Metrics, count_end
from tokenwire.stream import Hub

TIMEOUT = 30.0


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition, parsed by prometheus_client's own parser."""
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in out, f"duplicate series {key}"
            out[key] = s.value
    return out


def value(
    parsed: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return parsed[(name, frozenset(labels.items()))]


async def test_metrics_parse_with_labels_from_the_start_and_count_streams(
    start_server: ServerFactory,
) -> None:
    server = start_server()
    async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as client:
        first = samples((await client.get("/metrics")).text)
        for model in ("scripted", "smollm2"):
            assert value(first, "tokenwire_model_errors_total", model=model) == 0
            for status in ("done", "error", "cancelled"):
                assert (
                    value(first, "tokenwire_streams_ended_total", model=model, status=status) == 0
                )
        for transport in ("sse", "ndjson", "ws", "socketio", "openai", "ai_sdk"):
            assert value(first, "tokenwire_events_delivered_total", transport=transport) == 0
        assert value(first, "tokenwire_streams_started_total") == 0
        # prometheus_client's process collector owns these names; each appears once
        assert value(first, "process_resident_memory_bytes") > 1_000_000
        assert value(first, "process_open_fds") > 3

        created = await client.post(
            "/v1/streams", json={"model": "scripted", "prompt": "hi", "max_tokens": 4}
        )
        assert created.status_code == 201
        sid = created.json()["id"]
        body = (await client.get(f"/v1/streams/{sid}/events")).text
        assert "event: done" in body
        stopped = await client.post(
            "/v1/streams",
            json={"model": "scripted", "prompt": "x", "max_tokens": 500, "delay_ms": 50},
        )
        await client.delete(f"/v1/streams/{stopped.json()['id']}")

        after = samples((await client.get("/metrics")).text)
    assert value(after, "tokenwire_streams_started_total") == 2
    assert value(after, "tokenwire_streams_ended_total", model="scripted", status="done") == 1
    assert value(after, "tokenwire_streams_ended_total", model="scripted", status="cancelled") == 1
    assert value(after, "tokenwire_model_generations_total", model="scripted") == 1
    assert value(after, "tokenwire_model_tokens_total", model="scripted") == 4
    assert (
        value(after, "tokenwire_events_delivered_total", transport="sse") >= 6
    )  # 4 tokens, metrics, done
    assert value(after, "tokenwire_bytes_delivered_total", transport="sse") > len(body) / 2
    assert value(after, "tokenwire_model_ttft_seconds_count") == 1


def test_a_model_view_counts_into_the_same_registry() -> None:
    metrics = Metrics()
    metrics.for_model("m1").inc("tokenwire_model_errors_total")
    metrics.inc("tokenwire_events_delivered_total", 3, "ws")
    parsed = samples(metrics.render())
    assert value(parsed, "tokenwire_model_errors_total", model="m1") == 1
    assert value(parsed, "tokenwire_events_delivered_total", transport="ws") == 3
    assert metrics.value("tokenwire_model_errors_total", model="m1") == 1


async def test_count_end_labels_a_stream_by_its_terminal_status() -> None:
    hub = Hub()

    async def fails():  # type: ignore[no-untyped-def]
        yield "a"
        raise RuntimeError("boom")

    stream = await hub.start(fails(), model="m")
    count_end(stream, hub.metrics)
    await stream.wait()
    await hub.aclose()
    await asyncio.sleep(0)  # the task's done callbacks run on the next loop turn
    assert hub.metrics.value("tokenwire_streams_ended_total", model="m", status="error") == 1
