"""Model workers in their own processes, with real servers and the crashing test backend
(tests/crashing_backend.py): a crash ends only its own streams, a crash loop makes only
that model unavailable, the queue bound still answers 503, and a failed start-up
self-check stops ``tokenwire serve`` with one paragraph."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import ROOT, ServerFactory, ServerProcess, free_port

MODULES = {"TOKENWIRE_BACKEND_MODULES": "tests.crashing_backend"}
MODELS = ",".join(
    [
        "crashy=crash:?after=3&how=abort",
        "segv=crash:?after=2&how=segv",
        "steady=crash:?after=1000000",
        "loop=crash:?after=0",
        "tight=crash:?after=1000000&max_queue=1",
    ]
)


@pytest.fixture(scope="module")
def server(start_server: ServerFactory) -> ServerProcess:
    return start_server("--models", MODELS, **MODULES)


def start(server: ServerProcess, **body: Any) -> httpx.Response:
    body.setdefault("prompt", "hi")
    return httpx.post(server.url + "/v1/streams", json=body, timeout=10)


def events(server: ServerProcess, stream_id: str) -> list[tuple[float, dict[str, Any]]]:
    """Every event of a stream (NDJSON) with the time it arrived."""
    out: list[tuple[float, dict[str, Any]]] = []
    url = f"{server.url}/v1/streams/{stream_id}/ndjson"
    with httpx.stream("GET", url, timeout=httpx.Timeout(30.0)) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():
            if not line:
                continue
            ev = orjson.loads(line)
            if "kind" not in ev or ev["kind"] in ("open", "heartbeat"):
                continue
            out.append((time.monotonic(), ev))
            if ev["kind"] in ("done", "error", "cancelled"):
                break
    return out


def workers(server: ServerProcess) -> dict[str, Any]:
    resp = httpx.get(server.url + "/healthz", timeout=5)
    assert resp.status_code == 200
    state: dict[str, Any] = resp.json()["workers"]
    return state


def wait_for(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_a_crash_ends_only_its_stream_with_model_crashed(server: ServerProcess) -> None:
    beside = start(server, model="scripted", max_tokens=40, delay_ms=50).json()
    created = start(server, model="crashy", max_tokens=50, delay_ms=30)
    assert created.status_code == 201, created.text
    got = events(server, created.json()["id"])
    kinds = [ev["kind"] for _, ev in got]
    assert kinds == ["token"] * 3 + ["error"]
    error = got[-1][1]
    assert error["code"] == "model_crashed"
    assert "SIGABRT" in error["message"]
    assert got[-1][0] - got[-2][0] < 2.0  # the crash ends the stream within 2 s
    # The server and the stream beside it carry on.
    rest = events(server, beside["id"])
    assert [ev["kind"] for _, ev in rest][-1] == "done"
    # A reader that comes late gets its backlog merged: count what the frames cover.
    covered = sum(
        ev["seq"] - ev.get("from_seq", ev["seq"]) + 1 for _, ev in rest if ev["kind"] == "token"
    )
    assert covered == 40
    # The worker restarts, and the next request is answered.
    wait_for(lambda: workers(server)["crashy"]["state"] == "ready")
    [worker] = workers(server)["crashy"]["workers"]
    assert worker["restarts"] == 1 and "SIGABRT" in worker["last_exit"]
    again = events(server, start(server, model="crashy", max_tokens=2).json()["id"])
    assert [ev["kind"] for _, ev in again] == ["token", "token", "metrics", "done"]


def test_a_segfault_in_a_worker_is_reported_as_a_crash(server: ServerProcess) -> None:
    before = workers(server)["segv"]
    got = events(server, start(server, model="segv", max_tokens=10).json()["id"])
    assert [ev["kind"] for _, ev in got] == ["token", "token", "error"]
    assert got[-1][1]["code"] == "model_crashed"
    assert "SIGSEGV" in got[-1][1]["message"]
    assert before["state"] == "not_started"  # non-default models start on first use
    wait_for(lambda: workers(server)["segv"]["state"] == "ready")


def test_a_crash_loop_makes_only_that_model_unavailable(server: ServerProcess) -> None:
    first = start(server, model="loop", max_tokens=5)
    assert first.status_code == 201  # not known to be broken yet: it waits for a worker
    got = events(server, first.json()["id"])
    assert got[-1][1]["kind"] == "error"
    assert got[-1][1]["code"] == "model_unavailable"
    state = workers(server)["loop"]
    assert state["state"] == "unavailable" and "3 times" in state["reason"]
    refused = start(server, model="loop")
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "model_unavailable"
    openai = httpx.post(
        server.url + "/v1/chat/completions",
        json={"model": "loop", "messages": [{"role": "user", "content": "hi"}]},
        timeout=10,
    )
    assert openai.status_code == 503
    # Other models, in workers or not, keep working.
    for model in ("steady", "scripted"):
        ok = events(server, start(server, model=model, max_tokens=3).json()["id"])
        assert ok[-1][1]["kind"] == "done", model
    assert httpx.get(server.url + "/readyz", timeout=5).status_code == 200  # the default is fine


def test_a_full_queue_still_answers_model_busy(server: ServerProcess) -> None:
    running = start(server, model="tight", max_tokens=1000, delay_ms=20)
    assert running.status_code == 201
    wait_for(lambda: workers(server)["tight"]["state"] == "busy")
    queued = start(server, model="tight", max_tokens=1000, delay_ms=20)
    assert queued.status_code == 201
    wait_for(lambda: workers(server)["tight"]["waiting"] == 1)
    refused = start(server, model="tight", max_tokens=5)
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "model_busy"
    for created in (queued, running):
        httpx.delete(f"{server.url}/v1/streams/{created.json()['id']}", timeout=5)
    wait_for(lambda: workers(server)["tight"]["state"] == "ready")
    ok = events(server, start(server, model="tight", max_tokens=2).json()["id"])
    assert ok[-1][1]["kind"] == "done"


def serve_until_exit(
    *args: str, modules: str = MODULES["TOKENWIRE_BACKEND_MODULES"], timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TOKENWIRE_BACKEND_MODULES": modules, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "tokenwire", "serve", "--port", str(free_port()), *args]
    return subprocess.run(
        cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


def paragraph(stderr: str) -> str:
    [line] = [line for line in stderr.splitlines() if "self-check failed" in line]
    return line


def test_a_missing_model_file_fails_the_self_check_with_one_paragraph() -> None:
    done = serve_until_exit(
        "--models", "broken=llamacpp:///nonexistent/model.gguf", "--model", "broken"
    )
    assert done.returncode == 1
    text = paragraph(done.stderr)
    assert "'broken'" in text and "/nonexistent/model.gguf does not exist" in text
    assert "model file is missing" in text


def test_a_crash_in_the_self_check_names_the_signal() -> None:
    done = serve_until_exit("--models", "fault=crash:?at=load&how=abort", "--model", "fault")
    assert done.returncode == 1
    text = paragraph(done.stderr)
    assert "'fault'" in text and "SIGABRT" in text
    assert "Fatal Python error: Aborted" in text


def test_a_llama_build_that_crashes_is_named_with_its_fix() -> None:
    done = serve_until_exit("--model", "smollm2", modules="tests.crashing_llama")
    assert done.returncode == 1
    text = paragraph(done.stderr)
    assert "'smollm2' (llamacpp:)" in text and "SIGSEGV" in text
    assert "Fatal Python error: Segmentation fault" in text
    assert "native crash in llama.cpp" in text and "TOKENWIRE_BUILD" in text
    assert "bash scripts/llama_build.sh" in text


def test_readyz_is_503_until_the_default_model_is_ready(start_server: ServerFactory) -> None:
    slow = start_server(
        "--models", "slow=crash:?after=1000000&load_ms=2500", "--model", "slow", **MODULES
    )
    early = httpx.get(slow.url + "/readyz", timeout=5)
    assert early.status_code == 503
    assert early.json()["status"] == "starting"
    assert httpx.get(slow.url + "/healthz", timeout=5).status_code == 200
    wait_for(lambda: httpx.get(slow.url + "/readyz", timeout=5).status_code == 200)
    assert workers(slow)["slow"]["state"] == "ready"
