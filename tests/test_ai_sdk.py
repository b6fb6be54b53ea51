"""The Vercel AI SDK UI message stream against a real server, read by the ``ai``
package itself under node (``tests/node/ai-sdk``): its stream parser and message
reducer, and the ``AbstractChat`` engine that ``useChat`` runs."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import aconnect_sse

from tests.conftest import ServerFactory, ServerProcess
from tokenwire.events import Event, loads
from tokenwire.models.scripted import scripted_token
from tokenwire.server.ai_sdk import UIMessageFrames

pytestmark = pytest.mark.slow

NODE_DIR = Path(__file__).resolve().parent / "node" / "ai-sdk"
USER = {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "say hello"}]}


def expected(n: int) -> str:
    return "".join(scripted_token(i) for i in range(n))


@pytest.fixture(scope="session")
def node() -> str:
    exe = shutil.which("node")
    assert exe is not None, "node missing: run scripts/setup.sh --dev"
    if not (NODE_DIR / "node_modules" / "ai").is_dir():
        done = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, f"npm ci failed:\n{done.stdout}\n{done.stderr}"
    return exe


async def run_node(
    node: str, script: str, url: str, options: Any = None, stdin: bytes = b""
) -> Any:
    """Run a script under tests/node/ai-sdk and return the JSON it prints."""
    proc = await asyncio.create_subprocess_exec(
        node,
        str(NODE_DIR / script),
        url,
        json.dumps(options or {}),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), 60)
    assert proc.returncode == 0, err.decode()
    return json.loads(out)


@pytest.fixture(scope="module")
def short(start_server: ServerFactory) -> ServerProcess:
    """A server with a 0.5 s producer idle timeout (to make a stream fail)."""
    return start_server(TOKENWIRE_IDLE_TIMEOUT_S="0.5")


def chat_body(**fields: Any) -> dict[str, Any]:
    return {"id": "chat-x", "messages": [USER], "trigger": "submit-message", **fields}


async def test_read_stream_text_part_order_headers_and_metadata(
    node: str, server: ServerProcess
) -> None:
    body = chat_body(model="scripted", max_tokens=8)
    out = await run_node(node, "read-stream.mjs", server.url, {"body": body})
    assert out["status"] == 200 and out["invalid"] == [] and out["errors"] == []
    assert out["headers"]["x-vercel-ai-ui-message-stream"] == "v1"
    assert out["headers"]["content-type"] == "text/event-stream"
    sid = out["headers"]["x-tokenwire-stream"]
    assert out["types"] == [
        "start",
        "start-step",
        "text-start",
        *["text-delta"] * 8,
        "data-metrics",
        "text-end",
        "finish-step",
        "finish",
    ]
    assert out["text"] == expected(8)
    start, finish = out["chunks"][0], out["chunks"][-1]
    assert start["messageId"] == sid
    assert start["messageMetadata"] == {"tokenwire": {"stream": sid, "model": "scripted"}}
    assert finish["finishReason"] == "length"
    message = out["message"]
    assert message["id"] == sid and message["role"] == "assistant"
    assert message["metadata"]["tokenwire"] == {
        "stream": sid,
        "model": "scripted",
        "finish_reason": "length",
        "usage": {"prompt_tokens": 2, "completion_tokens": 8, "total_tokens": 10},
    }
    assert [p["type"] for p in message["parts"]] == ["step-start", "text", "data-metrics"]
    assert message["parts"][1]["state"] == "done"
    assert message["parts"][2]["data"]["tokens"] == 8


async def test_use_chat_round_trip(node: str, server: ServerProcess) -> None:
    options = {"text": "hi there", "body": {"model": "scripted", "max_tokens": 6}}
    out = await run_node(node, "use-chat.mjs", server.url, options)
    assert out["status"] == "ready" and out["error"] is None and out["errors"] == []
    assert out["assistantTexts"] == [expected(6)]
    [request] = out["requests"]
    sent = request["requestBody"]  # what useChat posts, as the server received it
    assert sent["id"] == out["chatId"] and sent["trigger"] == "submit-message"
    assert sent["messages"][0]["parts"] == [{"type": "text", "text": "hi there"}]
    assert request["headers"]["x-tokenwire-stream"] == out["messages"][1]["id"]
    assert out["finishes"][0]["finishReason"] == "length"
    assert [d["type"] for d in out["data"]] == ["data-metrics"]


async def test_use_chat_stop_then_resume_replays_exactly_once(
    node: str, server: ServerProcess
) -> None:
    options = {
        "chatId": "chat-stop-resume",
        "body": {"model": "scripted", "max_tokens": 80, "delay_ms": 10},
        "stopAfterDeltas": 5,
        "resume": True,
    }
    out = await run_node(node, "use-chat.mjs", server.url, options)
    assert out["status"] == "ready" and out["errors"] == []
    post, resume = out["requests"]
    assert post["deltas"] == 5 and "finish" not in post["types"]  # cut by chat.stop()
    assert resume["method"] == "GET"
    assert resume["url"] == server.url + "/v1/ai-sdk/chat/chat-stop-resume/stream"
    assert resume["status"] == 200 and resume["types"][-1] == "finish"
    # One assistant message, the whole text once: the replay rebuilt the cut one.
    assert out["assistantTexts"] == [expected(80)]
    assert [f["isAbort"] for f in out["finishes"]] == [True, False]
    # The stream ran on while nobody listened: stop() in useChat is a leave.
    sid = post["headers"]["x-tokenwire-stream"]
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        assert (await http.get(f"/v1/streams/{sid}")).json()["status"] == "done"


async def test_resume_url_answers_204_when_nothing_runs(node: str, server: ServerProcess) -> None:
    path = "/v1/ai-sdk/chat/never-seen/stream"
    out = await run_node(node, "read-stream.mjs", server.url, {"path": path})
    assert out["status"] == 204
    body = chat_body(id="chat-finished", model="scripted", max_tokens=2)
    await run_node(node, "read-stream.mjs", server.url, {"body": body})
    path = "/v1/ai-sdk/chat/chat-finished/stream"
    assert (await run_node(node, "read-stream.mjs", server.url, {"path": path}))["status"] == 204


async def test_cut_then_resume_on_tokenwire_sse_exactly_once(server: ServerProcess) -> None:
    body = chat_body(model="scripted", max_tokens=50, delay_ms=5)
    seen, last_id = "", 0
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        async with aconnect_sse(http, "POST", "/v1/ai-sdk/chat", json=body) as es:
            sid = es.response.headers["x-tokenwire-stream"]
            async for sse in es.aiter_sse():
                part = loads(sse.data)
                if part["type"] == "text-delta":
                    seen += part["delta"]
                    last_id = int(sse.id)
                    if last_id == 7:
                        break
        rest = ""
        headers = {"Last-Event-ID": str(last_id)}
        async with aconnect_sse(http, "GET", f"/v1/streams/{sid}/events", headers=headers) as es:
            async for sse in es.aiter_sse():
                if sse.event == "token":
                    rest += loads(sse.data)["text"]
                if sse.event == "done":
                    break
    assert seen + rest == expected(50)


async def test_error_and_abort(node: str, short: ServerProcess) -> None:
    body = chat_body(model="scripted", max_tokens=3, delay_ms=5000)
    out = await run_node(node, "read-stream.mjs", short.url, {"body": body})
    assert out["types"] == ["start", "start-step", "error", "finish-step", "finish"]
    assert out["chunks"][2]["errorText"].startswith("timeout: ")
    assert out["chunks"][-1]["finishReason"] == "error"
    assert out["errors"] == ["Error: " + out["chunks"][2]["errorText"]]
    # useChat surfaces the error part as the chat's error.
    options = {"body": {"model": "scripted", "max_tokens": 3, "delay_ms": 5000}}
    chat = await run_node(node, "use-chat.mjs", short.url, options)
    assert chat["status"] == "error" and chat["error"].startswith("timeout: ")
    # A stop (DELETE) ends the message with text-end, finish-step and abort.
    body = chat_body(model="scripted", max_tokens=5000, delay_ms=5)
    types: list[str] = []
    async with httpx.AsyncClient(base_url=short.url, timeout=10) as http:
        async with http.stream("POST", "/v1/ai-sdk/chat", json=body) as r:
            sid = r.headers["x-tokenwire-stream"]
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    types.append("[DONE]")
                    continue
                part = loads(line[6:])
                types.append(part["type"])
                if types.count("text-delta") == 3:
                    await http.delete(f"/v1/streams/{sid}")
                if part["type"] == "abort":
                    assert part["reason"] == "stopped"
    assert types[:3] == ["start", "start-step", "text-start"]
    assert types[-4:] == ["text-end", "finish-step", "abort", "[DONE]"]


async def test_every_part_we_emit_passes_the_sdk_schema(node: str) -> None:
    """Pure: frames for every event kind, checked by the AI SDK's parser and reducer."""
    frames = UIMessageFrames("st_x", "m")
    events = [
        Event.progress("loading", 0.5, "weights"),
        Event.token("Hello"),
        Event.data({"answer": 42}),
        Event.token(" world"),
        Event(kind="tensor.header", fields={"tensor_id": "t"}),
        Event.metrics(tokens=2),
    ]
    for seq, event in enumerate(events, 1):
        event.seq = seq
    recorded = frames.prelude() + frames.events(events)
    for terminal in (
        Event.done("stop"),
        Event.error("boom", "it broke"),
        Event.cancelled("stopped"),
    ):
        terminal.seq = 7
        copy = UIMessageFrames("st_x", "m")
        copy.text_open = True
        out = await run_node(node, "read-stream.mjs", "-", stdin=recorded + copy.events([terminal]))
        assert out["invalid"] == [], out["invalid"]
        assert out["text"] == "Hello world"
        types = out["types"]
        assert types[:8] == [
            "start",
            "start-step",
            "data-progress",
            "text-start",
            "text-delta",
            "data-app",
            "text-delta",
            "data-metrics",
        ]
        assert (
            types[8:]
            == {
                "done": ["text-end", "finish-step", "finish"],
                "error": ["text-end", "error", "finish-step", "finish"],
                "cancelled": ["text-end", "finish-step", "abort"],
            }[terminal.kind]
        )
        parts = [p["type"] for p in out["message"]["parts"]]
        assert parts == ["step-start", "text", "data-app", "data-metrics"]  # progress is transient
    # SSE id = the event's seq, written last
    assert re.search(rb'data: \{"type":"text-delta"[^\n]*\nid: 4\n\n', recorded)


MALFORMED: list[tuple[Any, int, str]] = [
    ("{not json", 422, "invalid_request"),
    ([], 422, "invalid_request"),
    ({"messages": []}, 422, "invalid_request"),
    ({"messages": [{"role": "user", "parts": "hi"}]}, 422, "invalid_request"),
    ({"messages": [{"role": "robot", "parts": []}]}, 422, "invalid_request"),
    (
        {"messages": [{"role": "user", "parts": [{"type": "text", "text": 5}]}]},
        422,
        "invalid_request",
    ),
    ({"messages": [USER], "id": 5}, 422, "invalid_request"),
    ({"messages": [USER], "max_tokens": "many"}, 422, "invalid_request"),
    ({"messages": [USER], "model": "nope"}, 422, "model_not_found"),
]


async def test_malformed_bodies_get_json_errors_and_others_stream_on(
    node: str, server: ServerProcess
) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        live = await http.post(
            "/v1/streams", json={"prompt": "x", "max_tokens": 100, "delay_ms": 3}
        )
        sid = live.json()["id"]
        for body, status, code in MALFORMED:
            content = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            r = await http.post("/v1/ai-sdk/chat", content=content)
            assert r.status_code == status, body
            assert r.json()["error"]["code"] == code and r.json()["error"]["message"]
        for body, status, code in MALFORMED[:1] + MALFORMED[-1:]:  # as the SDK's fetch sees it
            out = await run_node(node, "read-stream.mjs", server.url, {"body": body})
            assert out["status"] == status and out["body"]["error"]["code"] == code
        r = await http.post("/v1/ai-sdk/chat", content=b"x" * 2_000_000)
        assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
        text = ""
        async with aconnect_sse(http, "GET", f"/v1/streams/{sid}/events") as es:
            async for sse in es.aiter_sse():
                if sse.event == "token":
                    text += loads(sse.data)["text"]
                if sse.event == "done":
                    break
    assert text == expected(100)
    # UI messages of other part kinds are read for their text parts only.
    body = chat_body(
        model="scripted",
        max_tokens=2,
        messages=[
            {"id": "s", "role": "system", "parts": [{"type": "text", "text": "be brief"}]},
            {
                "id": "u",
                "role": "user",
                "parts": [
                    {"type": "file", "mediaType": "image/png", "url": "data:,"},
                    {"type": "text", "text": "hello"},
                ],
            },
            {
                "id": "a",
                "role": "assistant",
                "parts": [{"type": "step-start"}, {"type": "reasoning", "text": "hm"}],
            },
        ],
    )
    out = await run_node(node, "read-stream.mjs", server.url, {"body": body})
    assert out["text"] == expected(2)
    assert out["chunks"][-1]["messageMetadata"]["tokenwire"]["usage"]["prompt_tokens"] == 3
