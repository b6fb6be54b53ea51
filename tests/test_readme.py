"""The README runs as written (issue 13, deliverable 5): its shell and Python
snippets, pasted as they are, against a real ``tokenwire serve`` on the embedded
model. Only the address changes (the server runs on a free port) and the blocks
that set up the machine (``bash scripts/…``) are not run."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerFactory, ServerProcess, free_port, wait_http

README = Path(__file__).resolve().parents[1] / "README.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.M | re.S)
MARK = "@@@ part "


def blocks(lang: str) -> list[str]:
    found = [body for kind, body in FENCE.findall(README.read_text()) if kind == lang]
    return [b for b in found if not b.lstrip().startswith("bash scripts/")]


def at(server: ServerProcess, text: str) -> str:
    address = server.url.removeprefix("http://")
    return text.replace("localhost:8000", address).replace("127.0.0.1:8000", address)


def run_sh(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=240,
    )


def sse_data(text: str) -> list[dict[str, object]]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]


@pytest.fixture(scope="module")
def embedded(start_server: ServerFactory) -> ServerProcess:
    return start_server(TOKENWIRE_MODEL="smollm2")


def test_the_tour_runs_as_written(embedded: ServerProcess, tmp_path: Path) -> None:
    tour = next(b for b in blocks("sh") if "SID=$(" in b)
    # each paragraph of the block is one step; a marker line between them tells
    # their outputs apart
    parts = [p for p in tour.split("\n\n") if p.strip()]
    script = "\n".join(f"echo '{MARK}{i}'\n{p}" for i, p in enumerate(parts))
    done = run_sh(at(embedded, script), tmp_path)
    assert done.returncode == 0, done.stderr
    out = dict(enumerate(re.split(rf"^{MARK}\d+\n", done.stdout, flags=re.M)[1:]))
    assert len(out) == 5, done.stdout

    sid = out[0].strip()
    assert re.fullmatch(r"st_[A-Za-z0-9_-]{20,}", sid)

    live = sse_data(out[1])
    assert live[0]["status"] == "running", "the stream had ended before the viewer attached"
    events = live[1:]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["kind"] == "done" and len(events) > 20

    resumed = sse_data(out[2])[1:]
    first = resumed[0]
    assert first["kind"] == "token"
    assert first.get("from_seq", first["seq"]) == 11  # merged or not, it starts at 11
    assert all(int(str(e["seq"])) > 10 for e in resumed)
    assert resumed[-1] == events[-1]
    text = "".join(str(e["text"]) for e in events if e["kind"] == "token")
    tail = "".join(str(e["text"]) for e in events[10:] if e["kind"] == "token")
    assert "".join(str(e["text"]) for e in resumed if e["kind"] == "token") == tail
    assert text.strip()

    lines = [json.loads(line) for line in out[3].splitlines() if line.strip()]
    assert lines[0]["status"] == "done" and lines[-1]["kind"] == "done"

    stopped = json.loads(out[4])
    assert stopped["status"] == "cancelled" and stopped["id"] != sid


def test_the_python_scripts_run_as_written(embedded: ServerProcess, tmp_path: Path) -> None:
    scripts = [b for b in blocks("python") if "asyncio.run(main())" in b or "OpenAI(" in b]
    assert len(scripts) == 3
    outputs = []
    for i, body in enumerate(scripts):
        path = tmp_path / f"snippet{i}.py"
        path.write_text(at(embedded, body))
        done = subprocess.run(
            [sys.executable, str(path)], capture_output=True, text=True, timeout=120, cwd=tmp_path
        )
        assert done.returncode == 0, f"{body}\n{done.stderr}"
        outputs.append(done.stdout)
    hub, tensors, openai = outputs
    assert hub.splitlines() == [
        "1 progress {'stage': 'thinking', 'progress': 0.5}",
        "2 token {'text': 'Hello'}",
        "3 token {'text': ','}",
        "4 token {'text': ' world'}",
        "5 done {'finish_reason': 'stop', 'usage': None}",
    ]
    assert tensors.strip() == "(256, 256, 3) uint8"
    assert len(openai.strip()) > 5  # the embedded model's answer, streamed


def test_the_starlette_route_serves_as_written(tmp_path: Path) -> None:
    app = next(b for b in blocks("python") if "event_stream_response" in b and "app = " in b)
    (tmp_path / "hello.py").write_text(app)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "hello:app", "--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/hello", proc=proc)
        body = httpx.get(f"http://127.0.0.1:{port}/hello", timeout=30).text
    finally:
        proc.terminate()
        proc.wait(10)
    events = sse_data(body)
    texts = [e.get("text") for e in events if e.get("kind") == "token"]
    assert texts == ["Hello", ",", " world"]
    assert events[-1]["kind"] == "done"


def test_the_tensor_commands_run_as_written(embedded: ServerProcess, tmp_path: Path) -> None:
    denoise = next(b for b in blocks("sh") if "tokenwire.examples.denoise" in b)
    script = at(embedded, denoise.replace("python -m", f"{sys.executable} -m"))
    done = run_sh(script, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "equals the target" in done.stdout
    assert (tmp_path / "out.png").read_bytes().startswith(b"\x89PNG")
    created = json.loads(done.stdout.strip().splitlines()[-1])
    assert created["status"] in ("running", "done") and created["id"].startswith("st_")


def test_the_docs_cite_only_what_the_repository_has() -> None:
    root = README.parent
    for path in [README, *sorted((root / "docs").glob("*.md"))]:
        text = path.read_text()
        assert "design.md" not in text and "seed 00" not in text, path
        for target in re.findall(r"\]\(((?:docs/)?[\w./-]+\.md)(?:#[\w-]+)?\)", text):
            assert (path.parent / target).is_file(), (path, target)


def test_the_scale_out_commands_run_as_written(tmp_path: Path) -> None:
    """redis-server, two pure gateways and a worker, as the README starts them (only
    the ports change): a generation started through one gateway runs on the worker
    and is read to its end through the other."""
    block = next(b for b in blocks("sh") if "tokenwire worker" in b)
    script = block
    ports = {old: free_port() for old in (6379, 8001, 8002)}
    for old, new in ports.items():
        script = script.replace(str(old), str(new))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENWIRE_")}
    with open(tmp_path / "out.log", "wb") as log:
        proc = subprocess.Popen(
            ["bash", "-c", script + "wait\n"],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # one group: every process the block starts
        )
    one, two = (f"http://127.0.0.1:{ports[p]}" for p in (8001, 8002))
    try:
        wait_http(one + "/healthz", timeout=60, proc=proc)
        wait_http(two + "/healthz", timeout=60, proc=proc)
        with httpx.Client(timeout=30) as client:
            body = {"prompt": "Say hi", "max_tokens": 8}
            started = client.post(one + "/v1/streams", json=body)
            for _ in range(600):  # the worker registers once its model is loaded
                if started.status_code != 503:
                    break
                time.sleep(0.1)
                started = client.post(one + "/v1/streams", json=body)
            assert started.status_code == 201, started.text
            sid = started.json()["id"]
            events = sse_data(client.get(f"{two}/v1/streams/{sid}/events").text)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    kinds = [e.get("kind") for e in events]
    assert "token" in kinds and kinds[-1] == "done", (kinds, (tmp_path / "out.log").read_text())
