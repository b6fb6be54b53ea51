"""The embedded model in its worker process, through a real server: the start-up
self-check, ``kill -9`` mid-answer, and a stop that crosses the process boundary."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import ServerFactory, ServerProcess

LONG = "Write a long story about a lighthouse keeper and the sea."


@pytest.fixture(scope="module")
def server(start_server: ServerFactory) -> ServerProcess:
    return start_server(TOKENWIRE_MODEL="smollm2")  # the default model: checked at start


def healthz(server: ServerProcess) -> dict[str, Any]:
    resp = httpx.get(server.url + "/healthz", timeout=5)
    assert resp.status_code == 200
    body: dict[str, Any] = resp.json()
    return body


def worker(server: ServerProcess) -> dict[str, Any]:
    [one] = healthz(server)["workers"]["smollm2"]["workers"]
    state: dict[str, Any] = one
    return state


def wait_for(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def start(server: ServerProcess, **body: Any) -> str:
    resp = httpx.post(server.url + "/v1/streams", json={"model": "smollm2", **body}, timeout=10)
    assert resp.status_code == 201, resp.text
    stream_id: str = resp.json()["id"]
    return stream_id


def ndjson(server: ServerProcess, stream_id: str) -> Iterator[dict[str, Any]]:
    url = f"{server.url}/v1/streams/{stream_id}/ndjson"
    with httpx.stream("GET", url, timeout=httpx.Timeout(60.0)) as resp:
        for line in resp.iter_lines():
            ev = orjson.loads(line) if line else {}
            if ev.get("kind") in (None, "open", "heartbeat"):
                continue
            yield ev
            if ev["kind"] in ("done", "error", "cancelled"):
                return


def test_the_default_model_passes_its_self_check_in_a_worker(server: ServerProcess) -> None:
    wait_for(lambda: httpx.get(server.url + "/readyz", timeout=5).status_code == 200)
    state = worker(server)
    assert state["state"] == "ready" and state["pid"] not in (None, server.pid)
    events = list(ndjson(server, start(server, prompt="Say hello.", max_tokens=8, temperature=0)))
    assert [e["kind"] for e in events][-2:] == ["metrics", "done"]
    assert "".join(e["text"] for e in events if e["kind"] == "token").strip()
    # Inference never runs in the server process: llama.cpp is not even loaded there.
    with open(f"/proc/{server.pid}/maps") as f:
        assert "libllama" not in f.read()
    with open(f"/proc/{state['pid']}/maps") as f:
        assert "libllama" in f.read()


def test_kill_9_mid_answer_ends_the_stream_with_model_crashed(server: ServerProcess) -> None:
    wait_for(lambda: worker(server)["state"] == "ready")
    pid = worker(server)["pid"]
    killed_at = None
    events = []
    for ev in ndjson(server, start(server, prompt=LONG, max_tokens=2000)):
        events.append(ev)
        if ev["kind"] == "token" and killed_at is None and len(events) == 5:
            os.kill(pid, signal.SIGKILL)
            killed_at = time.monotonic()
    assert killed_at is not None
    assert time.monotonic() - killed_at < 2.0
    assert events[-1]["kind"] == "error" and events[-1]["code"] == "model_crashed"
    assert "SIGKILL" in events[-1]["message"]
    assert healthz(server)["status"] == "ok"
    # The next request is answered, by a new worker.
    answer = list(ndjson(server, start(server, prompt="Hi", max_tokens=4, temperature=0)))
    assert answer[-1]["kind"] == "done"
    assert worker(server)["pid"] != pid and worker(server)["restarts"] == 1


def test_stop_reaches_the_worker_within_one_token(server: ServerProcess) -> None:
    wait_for(lambda: worker(server)["state"] == "ready")
    stream_id = start(server, prompt=LONG, max_tokens=2000)
    tokens = 0
    terminal: dict[str, Any] = {}
    at_stop = None
    for ev in ndjson(server, stream_id):
        if ev["kind"] == "token":
            tokens += 1
            if tokens == 5:
                stopped = httpx.delete(f"{server.url}/v1/streams/{stream_id}", timeout=5)
                assert stopped.status_code == 200
                at_stop = httpx.get(f"{server.url}/v1/streams/{stream_id}", timeout=5).json()
        terminal = ev
    assert at_stop is not None and terminal["kind"] == "cancelled"
    assert terminal["seq"] - at_stop["last_seq"] <= 1
    # The worker itself stopped: free again long before 2000 tokens could be made, and
    # at most one token crossed the pipe after the cancel did.
    wait_for(lambda: worker(server)["state"] == "ready", timeout=2.0)
    last_cancel = worker(server)["last_cancel"]
    assert last_cancel["tokens_after"] <= 1
    assert last_cancel["ms"] < 2000
