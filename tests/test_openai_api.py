"""The OpenAI-compatible API against a real server, read with the official ``openai`` client."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
from httpx_sse import aconnect_sse
from openai import AsyncOpenAI

from tests.conftest import ServerFactory, ServerProcess
from tokenwire.events import loads
from tokenwire.models.scripted import scripted_token

pytestmark = pytest.mark.slow

HELLO = [{"role": "user", "content": "say hello"}]


def expected(n: int) -> str:
    return "".join(scripted_token(i) for i in range(n))


@pytest.fixture(scope="module")
def short(start_server: ServerFactory) -> ServerProcess:
    """A server with a 1 s grace period and a 0.5 s producer idle timeout."""
    return start_server(TOKENWIRE_GRACE_S="1", TOKENWIRE_IDLE_TIMEOUT_S="0.5")


@pytest.fixture
async def client(server: ServerProcess) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0) as c:
        yield c


async def sse_events(base: str, sid: str, after: int = 0) -> list[dict[str, Any]]:
    """Every event of stream ``sid`` after ``after``, read on tokenwire's own SSE."""
    events: list[dict[str, Any]] = []
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        headers = {"Last-Event-ID": str(after)}
        async with aconnect_sse(http, "GET", f"/v1/streams/{sid}/events", headers=headers) as es:
            async for sse in es.aiter_sse():
                if sse.event == "tw-open":
                    continue
                events.append(loads(sse.data))
                if sse.event in ("done", "error", "cancelled"):
                    break
    return events


async def status(base: str, sid: str) -> str:
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        return str((await http.get(f"/v1/streams/{sid}")).json()["status"])


async def wait_status(base: str, sid: str, want: str) -> None:
    for _ in range(200):
        if await status(base, sid) == want:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{sid} never became {want}")


async def test_streamed_chunks_usage_and_done(client: AsyncOpenAI, server: ServerProcess) -> None:
    stream = await client.chat.completions.create(
        model="scripted",
        messages=HELLO,  # type: ignore[arg-type]
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    first, *middle, finish, used = chunks
    assert first.choices[0].delta.role == "assistant" and first.choices[0].delta.content == ""
    assert "".join(c.choices[0].delta.content or "" for c in middle) == expected(12)
    assert len(middle) == 12 and all(c.choices[0].finish_reason is None for c in middle)
    assert finish.choices[0].finish_reason == "length" and finish.choices[0].delta.content is None
    assert used.choices == [] and used.usage is not None
    assert used.usage.model_dump(exclude_none=True) == {
        "prompt_tokens": 2,
        "completion_tokens": 12,
        "total_tokens": 14,
    }
    assert all(c.usage is None for c in chunks[:-1])
    assert {c.id for c in chunks} == {first.id} and first.id.startswith("chatcmpl-")
    assert {(c.object, c.model, c.created) for c in chunks} == {
        ("chat.completion.chunk", "scripted", first.created)
    }


async def test_streamed_wire_format_is_openai_s(server: ServerProcess) -> None:
    """Byte-level: data lines of chunk objects, no usage key unless asked, then [DONE]."""
    body = {"model": "scripted", "messages": HELLO, "max_tokens": 2, "stream": True}
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=10) as http,
        http.stream("POST", "/v1/chat/completions", json=body) as r,
    ):
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-accel-buffering"] == "no"
        sid = r.headers["x-tokenwire-stream"]
        text = (await r.aread()).decode()
    frames = [f for f in text.split("\n\n") if f]
    assert frames[-1] == "data: [DONE]"
    chunks = [loads(f.split("data: ", 1)[1].split("\n", 1)[0]) for f in frames[:-1]]
    head = {
        "id": "chatcmpl-" + sid.removeprefix("st_"),
        "object": "chat.completion.chunk",
        "created": chunks[0]["created"],
        "model": "scripted",
    }

    def choice(delta: dict[str, str], finish: str | None = None) -> dict[str, Any]:
        return {
            **head,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    assert chunks == [
        choice({"role": "assistant", "content": ""}),
        choice({"content": scripted_token(0)}),
        choice({"content": scripted_token(1)}),
        choice({}, "length"),
    ]
    # Each chunk made from an event carries the event's seq as its SSE id, last.
    assert [f.split("\n")[-1] for f in frames[1:4]] == ["id: 1", "id: 2", "id: 4"]


async def test_not_streamed_completion_with_usage_and_header(
    client: AsyncOpenAI, server: ServerProcess
) -> None:
    raw = await client.chat.completions.with_raw_response.create(
        model="scripted",
        messages=[{"role": "system", "content": "be brief"}, *HELLO],  # type: ignore[list-item]
        max_completion_tokens=7,
    )
    sid = raw.headers["x-tokenwire-stream"]
    completion = raw.parse()
    assert completion.object == "chat.completion" and completion.model == "scripted"
    assert completion.id == "chatcmpl-" + sid.removeprefix("st_")
    [choice] = completion.choices
    assert choice.message.role == "assistant" and choice.message.content == expected(7)
    assert choice.finish_reason == "length"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (4, 7)
    assert completion.usage.total_tokens == 11
    events = await sse_events(server.url, sid)  # the same stream, on tokenwire's SSE
    assert "".join(e.get("text", "") for e in events) == expected(7)


async def test_content_parts_developer_role_and_unknown_fields(client: AsyncOpenAI) -> None:
    completion = await client.chat.completions.create(
        model="scripted",
        messages=[
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "one two"}]},
        ],
        max_tokens=3,
        temperature=0.2,
        top_p=0.9,
        seed=7,
        stop=["\n\n"],
        n=1,
        user="someone",
        extra_body={"made_up_field": {"x": 1}},
    )
    assert completion.choices[0].message.content == expected(3)
    assert completion.usage is not None and completion.usage.prompt_tokens == 4


async def test_models_list_and_retrieve(client: AsyncOpenAI) -> None:
    page = await client.models.list()
    ids = [m.id for m in page.data]
    assert "scripted" in ids and "smollm2" in ids
    assert all(m.object == "model" and m.owned_by == "tokenwire" for m in page.data)
    assert (await client.models.retrieve("scripted")).id == "scripted"
    with pytest.raises(openai.NotFoundError) as info:
        await client.models.retrieve("nope")
    assert info.value.code == "model_not_found"


BAD_FIELDS: list[tuple[dict[str, Any], str | None, str]] = [
    ({"n": 2}, "n", "invalid_value"),
    ({"max_tokens": "9"}, "max_tokens", "invalid_type"),
    ({"max_tokens": 0}, "max_tokens", "invalid_value"),
    ({"max_completion_tokens": 10**9}, "max_completion_tokens", "invalid_value"),
    ({"temperature": 5}, "temperature", "invalid_value"),
    ({"top_p": "high"}, "top_p", "invalid_type"),
    ({"stop": 3}, "stop", "invalid_type"),
    ({"seed": 1.5}, "seed", "invalid_type"),
    ({"stream": "yes"}, "stream", "invalid_type"),
    ({"stream_options": {"include_usage": "yes"}}, "stream_options.include_usage", "invalid_type"),
    ({"messages": []}, "messages", "invalid_value"),
    ({"messages": "hi"}, "messages", "invalid_type"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role", "invalid_value"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content", "invalid_type"),
    (
        {"messages": [{"role": "user", "content": [{"type": "image_url", "text": "x"}]}]},
        "messages[0].content[0].type",
        "invalid_value",
    ),
    ({"model": ""}, "model", "invalid_type"),
    ({"delay_ms": -1}, None, "invalid_value"),
]


async def test_errors_are_openai_shaped_and_typed(
    client: AsyncOpenAI, server: ServerProcess
) -> None:
    live = await client.chat.completions.create(
        model="scripted", messages=HELLO, max_tokens=150, stream=True, extra_body={"delay_ms": 2}
    )
    with pytest.raises(openai.NotFoundError) as missing:
        await client.chat.completions.create(model="nope", messages=HELLO)  # type: ignore[arg-type]
    assert missing.value.code == "model_not_found" and missing.value.param == "model"
    assert "nope" in missing.value.message
    for fields, param, code in BAD_FIELDS:
        body = {"model": "scripted", "messages": HELLO, **fields}
        with pytest.raises(openai.BadRequestError) as bad:
            await client.post("/chat/completions", body=body, cast_to=httpx.Response)
        assert (bad.value.param, bad.value.code) == (param, code), fields
        assert bad.value.type == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as missing_messages:
        await client.post("/chat/completions", body={"model": "scripted"}, cast_to=httpx.Response)
    assert missing_messages.value.code == "missing_required_parameter"
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        for content, status, code in (
            (b"{not json", 400, "invalid_json"),
            (b"", 400, "invalid_json"),
            (b"[]", 400, "invalid_type"),
            (b"[" * 2_000_000, 413, "body_too_large"),
        ):
            r = await http.post("/v1/chat/completions", content=content)
            assert r.status_code == status, content[:10]
            error = r.json()["error"]
            assert error["code"] == code and error["message"] and error["type"]
            assert set(error) == {"message", "type", "param", "code"}
        r = await http.get("/v1/chat/completions")
        assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    text = "".join([c.choices[0].delta.content or "" async for c in live if c.choices])
    assert text == expected(150)  # the stream that was running meanwhile lost nothing


async def test_cut_mid_stream_then_resume_on_sse_exactly_once(
    client: AsyncOpenAI, server: ServerProcess
) -> None:
    raw = await client.chat.completions.with_raw_response.create(
        model="scripted",
        messages=HELLO,
        max_tokens=60,
        stream=True,
        extra_body={"delay_ms": 5},
    )
    sid = raw.headers["x-tokenwire-stream"]
    stream = raw.parse()
    seen = ""
    deltas = 0
    async for chunk in stream:
        content = chunk.choices[0].delta.content
        if content:
            seen += content
            deltas += 1
            if deltas == 9:
                break
    await stream.close()  # a dropped connection: the stream keeps running (leave)
    # Content chunk k of a model stream is token seq k (the SSE ids say so too).
    rest = await sse_events(server.url, sid, after=deltas)
    # a resume that finds a backlog gets it as one merged catch-up frame from deltas+1
    assert rest[0].get("from_seq", rest[0]["seq"]) == deltas + 1
    assert seen + "".join(e.get("text", "") for e in rest) == expected(60)
    assert rest[-1]["kind"] == "done"
    replay = await sse_events(server.url, sid)  # or simply replay it all
    assert "".join(e.get("text", "") for e in replay) == expected(60)


async def test_disconnect_is_a_leave_then_grace_expiry_cancels(short: ServerProcess) -> None:
    async with AsyncOpenAI(base_url=short.url + "/v1", api_key="x", max_retries=0) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="scripted",
            messages=HELLO,
            max_tokens=5000,
            stream=True,
            extra_body={"delay_ms": 10},
        )
        sid = raw.headers["x-tokenwire-stream"]
        stream = raw.parse()
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                break
        await stream.close()
        assert await status(short.url, sid) == "running"  # left, not stopped
        await wait_status(short.url, sid, "cancelled")
    events = await sse_events(short.url, sid)
    assert events[-1]["kind"] == "cancelled" and events[-1]["reason"] == "no_subscribers"
    assert f"event=grace_expired stream={sid}" in short.log()


async def test_abandoned_not_streamed_request_is_a_leave(short: ServerProcess) -> None:
    opened = re.compile(r"event=open stream=(st_\S+) transport=producer")
    before = len(opened.findall(short.log()))
    async with httpx.AsyncClient(base_url=short.url, timeout=10) as http:
        body = {"model": "scripted", "messages": HELLO, "max_tokens": 5000, "delay_ms": 10}
        with pytest.raises(httpx.ReadTimeout):  # the answer only comes at the end
            await http.post("/v1/chat/completions", json=body, timeout=0.5)
    for _ in range(200):
        started = opened.findall(short.log())[before:]
        if started:
            break
        await asyncio.sleep(0.05)
    [sid] = started
    assert await status(short.url, sid) == "running"
    await wait_status(short.url, sid, "cancelled")
    events = await sse_events(short.url, sid)
    assert events[-1]["kind"] == "cancelled" and events[-1]["reason"] == "no_subscribers"


async def test_stopped_stream_finishes_with_stop_and_counted_usage(
    client: AsyncOpenAI, server: ServerProcess
) -> None:
    raw = await client.chat.completions.with_raw_response.create(
        model="scripted",
        messages=HELLO,
        max_tokens=5000,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"delay_ms": 5},
    )
    sid = raw.headers["x-tokenwire-stream"]
    chunks = []
    async for chunk in raw.parse():
        chunks.append(chunk)
        if len(chunks) == 4:
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
                assert (await http.delete(f"/v1/streams/{sid}")).status_code == 200
    finish, used = chunks[-2:]
    assert finish.choices[0].finish_reason == "stop"
    content = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert used.usage is not None and used.usage.completion_tokens == len(content)
    text = "".join(c.choices[0].delta.content or "" for c in content)
    assert text == expected(len(content))


async def test_model_error_mid_stream_raises_api_error(short: ServerProcess) -> None:
    async with AsyncOpenAI(base_url=short.url + "/v1", api_key="x", max_retries=0) as client:
        stream = await client.chat.completions.create(
            model="scripted",
            messages=HELLO,
            max_tokens=3,
            stream=True,
            extra_body={"delay_ms": 5000},  # silent past the 0.5 s idle timeout
        )
        chunks = []
        with pytest.raises(openai.APIError) as streamed:
            async for chunk in stream:
                chunks.append(chunk)
        assert len(chunks) == 1  # the role chunk, then the error object
        assert isinstance(streamed.value.body, dict) and streamed.value.body["code"] == "timeout"
        assert "emitted nothing" in streamed.value.message
        with pytest.raises(openai.InternalServerError) as whole:
            await client.chat.completions.create(
                model="scripted", messages=HELLO, max_tokens=3, extra_body={"delay_ms": 5000}
            )
        assert whole.value.code == "timeout" and whole.value.type == "server_error"


def metric(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


async def test_cut_streams_leave_no_subscribers_or_tasks(
    client: AsyncOpenAI, server: ServerProcess
) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:

        async def cycle() -> None:
            raw = await client.chat.completions.with_raw_response.create(
                model="scripted",
                messages=HELLO,
                max_tokens=5000,
                stream=True,
                extra_body={"delay_ms": 5},
            )
            stream = raw.parse()
            async for _ in stream:
                break
            await stream.close()
            await http.delete(f"/v1/streams/{raw.headers['x-tokenwire-stream']}")

        async def settled() -> tuple[float, float]:
            text = (await http.get("/metrics")).text
            subs = metric(text, 'tokenwire_subscribers{transport="openai"}')
            return subs, metric(text, "tokenwire_asyncio_tasks")

        for _ in range(5):
            await cycle()
        tasks0 = (await settled())[1]
        assert tasks0 > 0
        for _ in range(4):
            await asyncio.gather(*(cycle() for _ in range(10)))
        for _ in range(100):
            subs, tasks = await settled()
            if subs == 0 and tasks <= tasks0:
                break
            await asyncio.sleep(0.05)
        assert (subs, tasks <= tasks0) == (0, True), (subs, tasks0, tasks)
