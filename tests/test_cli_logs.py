"""One log format (issue 13, deliverable 7): ``--log-format json`` makes every line
the server writes a JSON object (uvicorn's too), with an access line per request
(method, path, status, duration, stream id) and the terminal status and reason on
each stream's end line."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import httpx
from websockets.sync.client import connect

from tests.conftest import ServerFactory, ServerProcess


def lines_of(server: ServerProcess) -> list[dict[str, Any]]:
    out = []
    for line in server.log().splitlines():
        if line.strip():
            out.append(json.loads(line))  # every line, or this raises
    return out


def wait_for(server: ServerProcess, ok: Any, timeout: float = 20.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        lines = lines_of(server)
        if ok(lines) or time.monotonic() > deadline:
            return lines
        time.sleep(0.1)


def test_json_lines_with_access_lines_and_end_status(start_server: ServerFactory) -> None:
    server = start_server("--log-format", "json")
    with httpx.Client(base_url=server.url, timeout=30) as client:
        sid = client.post("/v1/streams", json={"prompt": "hi", "max_tokens": 3}).json()["id"]
        body = client.get(f"/v1/streams/{sid}/events").text
        assert "event: done" in body
        other = client.post("/v1/streams", json={"prompt": "x", "max_tokens": 500, "delay_ms": 50})
        stopped = other.json()["id"]
        assert client.delete(f"/v1/streams/{stopped}").status_code == 200
        assert client.get("/v1/streams/st_nope").status_code == 404
    with connect(server.url.replace("http", "ws", 1) + "/v1/ws") as ws:
        ws.send(json.dumps({"op": "subscribe", "stream": sid, "after": 0}))
        assert json.loads(ws.recv(timeout=10))["type"] == "open"

    def complete(lines: list[dict[str, Any]]) -> bool:
        # The WebSocket's line comes when it closes, the last of ours; the freeze
        # detector's GET /healthz lines come any time, so count only this test's.
        return any(x.get("logger") == "tokenwire.access" and x.get("method") == "WS" for x in lines)

    lines = wait_for(server, complete)
    access = [x for x in lines if x.get("logger") == "tokenwire.access"]
    by_request = {(x["method"], x["path"]): x for x in access}
    created = by_request[("POST", "/v1/streams")]
    assert created["status"] == "201" and created["stream"] in (sid, stopped)
    sse = by_request[("GET", f"/v1/streams/{sid}/events")]
    assert sse["status"] == "200" and sse["stream"] == sid
    assert float(sse["duration_ms"]) >= 0
    assert by_request[("DELETE", f"/v1/streams/{stopped}")]["stream"] == stopped
    assert by_request[("GET", "/v1/streams/st_nope")]["status"] == "404"
    assert by_request[("WS", "/v1/ws")]["status"] == "101"
    # uvicorn's own start-up line went through the same formatter
    assert any(x.get("logger", "").startswith("uvicorn") for x in lines)
    ends = {x["stream"]: x for x in lines if x.get("event") in ("close", "cancel", "error")}
    assert ends[sid]["event"] == "close" and ends[sid]["status"] == "done"
    assert ends[sid]["reason"] == "length"
    assert ends[stopped]["status"] == "cancelled" and ends[stopped]["reason"] == "stopped"


def test_text_is_the_default_format(start_server: ServerFactory) -> None:
    server = start_server()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.get("/healthz").status_code == 200
    deadline = time.monotonic() + 10
    while "path=/healthz" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    line = next(x for x in server.log().splitlines() if "path=/healthz" in x)
    assert re.search(
        r" INFO tokenwire\.access method=GET path=/healthz status=200 duration_ms=\d", line
    )
