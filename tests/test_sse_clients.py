"""Popular SSE clients against a real server through a proxy that cuts every
connection at a random byte offset (seeded): each sees every event exactly once.

The clients: native ``EventSource`` in Chromium, npm ``eventsource``,
``@microsoft/fetch-event-source`` (node, ``tests/node``), ``httpx-sse`` with
the reconnect loop its users write, and tokenwire's own clients: Python, JS
under node (fetch) and JS in Chromium on its ``eventsource`` transport.
Each reads a 200-token stream while it is produced and after it ended (its
reconnects catch up, in merged frames). The EventSource clients never call
``close()``: the 204 answering their reconnect after ``done`` must stop them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import SSEError, aconnect_sse

from tests.conftest import ServerFactory, ServerProcess
from tests.faultproxy import FaultProxy, random_plan
from tokenwire.client import Client
from tokenwire.client.errors import ProtocolError
from tokenwire.client.machine import (
    CLOSED,
    CONNECTED,
    CONNECTING,
    ERROR,
    Disconnect,
    ResumeMachine,
    StateChanged,
)
from tokenwire.models.scripted import scripted_token

pytestmark = pytest.mark.slow

NODE_DIR = Path(__file__).resolve().parent / "node"
JS_CLIENT = (Path(__file__).resolve().parent.parent / "clients" / "js" / "src").resolve()
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]
TOKENS = 200
LAST = TOKENS + 2  # the tokens, one metrics event, then done
TERMINAL = ("done", "error", "cancelled")
CLIENT_TIMEOUT_S = 25.0

Reader = Callable[[str, str], Awaitable[dict[str, Any]]]


@pytest.fixture(scope="module")
def sse_server(start_server: ServerFactory) -> ServerProcess:
    # retry: 100 ms, so the EventSource clients reconnect quickly after each cut.
    return start_server(TOKENWIRE_RETRY_MS="100")


async def start_stream(server: ServerProcess, tokens: int = TOKENS, delay_ms: int = 20) -> str:
    # 20 ms a token: the readers are mostly live, and catch up after each cut.
    body = {"model": "scripted", "prompt": "hi", "max_tokens": tokens, "delay_ms": delay_ms}
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        r = await http.post("/v1/streams", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


# -- the clients ----------------------------------------------------------------------


async def read_node(kind: str, base: str, stream_id: str) -> dict[str, Any]:
    assert (NODE_DIR / "node_modules" / "eventsource").is_dir(), "run scripts/setup.sh --dev"
    node = shutil.which("node")
    assert node is not None, "node missing: run scripts/setup.sh --dev"
    proc = await asyncio.create_subprocess_exec(
        node,
        str(NODE_DIR / "sse_clients.mjs"),
        kind,
        base,
        stream_id,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), CLIENT_TIMEOUT_S)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


async def read_httpx_sse(base: str, stream_id: str) -> dict[str, Any]:
    """httpx-sse has no reconnect of its own: the loop its users write, resuming
    with Last-Event-ID = the id of the last event dispatched."""
    seen: dict[str, Any] = {"events": [], "opens": 0, "errors": 0}
    last_id: str | None = None
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        while True:
            headers = {"Last-Event-ID": last_id} if last_id else {}
            try:
                async with aconnect_sse(
                    http, "GET", f"/v1/streams/{stream_id}/events", headers=headers
                ) as source:
                    if source.response.status_code == 204:
                        seen["ended_by_204"] = True
                        return seen
                    async for sse in source.aiter_sse():
                        if sse.event == "tw-open":
                            seen["opens"] += 1
                            continue
                        seen["events"].append({"event": sse.event, "data": sse.data, "id": sse.id})
                        last_id = sse.id or last_id
                        if sse.event in TERMINAL:
                            return seen
            except (httpx.TransportError, SSEError):
                seen["errors"] += 1
            await asyncio.sleep(0.1)


async def read_python_client(base: str, stream_id: str) -> dict[str, Any]:
    seen: dict[str, Any] = {"events": []}  # open frames stay inside the client
    async with Client(base, transport="sse") as client:
        handle = client.subscribe(stream_id)
        async for event in handle:
            data = {"seq": event.seq, "kind": event.kind, **event.fields}
            seen["events"].append({"event": event.kind, "data": json.dumps(data), "id": ""})
        seen["reconnects"] = handle.reconnects
    return seen


BROWSER_READER = """
(url) => new Promise((resolve) => {
  const kinds = ['token', 'progress', 'metrics', 'data', 'done', 'error', 'cancelled'];
  const seen = { events: [], opens: 0, errors: 0, nativeOpens: 0, nativeOpensWithData: 0 };
  const es = new EventSource(url);
  let ended = false;
  es.addEventListener('open', (e) => {
    seen.nativeOpens += 1;
    if (e.data !== undefined) seen.nativeOpensWithData += 1;
  });
  es.addEventListener('tw-open', () => (seen.opens += 1));
  for (const k of kinds) {
    es.addEventListener(k, (e) => {
      if (typeof e.data !== 'string') return;
      seen.events.push({ event: e.type, data: e.data, id: e.lastEventId });
      if (k === 'done' || k === 'error' || k === 'cancelled') ended = true;
    });
  }
  es.addEventListener('error', (e) => {
    if (typeof e.data !== 'string') seen.errors += 1;
  });
  // No close() on done, as a page that forgets it: the 204 must stop EventSource.
  const poll = setInterval(() => {
    if (ended && es.readyState === EventSource.CLOSED) {
      clearInterval(poll);
      resolve({ ...seen, closedBy204: true });
    }
  }, 20);
  setTimeout(() => {
    clearInterval(poll);
    resolve({ ...seen, timedOut: true, readyState: es.readyState });
  }, 20000);
})
"""


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    """Chromium, launched before the stream starts: a reader that joins seconds
    late would start with one large merged catch-up frame."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()


JS_CLIENT_READER = """
async ([streamId]) => {
  const { TokenwireClient } = await import('/js/tokenwire.js');
  // EventSource hides `retry:` from scripts: the backoff the others take from it.
  const backoff = { baseMs: 100, capMs: 1000 };
  const client = new TokenwireClient({ transport: 'eventsource', checkpoint: false, backoff });
  const handle = client.subscribe(streamId);
  const seen = { events: [], opens: 0 };
  for await (const ev of handle) {
    if (ev.kind === 'open') {
      seen.opens += 1;
      continue;
    }
    const { kind, ...rest } = ev;
    seen.events.push({ event: kind, data: JSON.stringify({ kind, ...rest }), id: String(ev.seq) });
  }
  return { ...seen, status: handle.status, error: handle.error ? String(handle.error) : null };
}
"""


async def serve_blank_page(route: Any) -> None:
    await route.fulfill(status=200, content_type="text/html", body="<!doctype html><p>sse")


async def serve_js_client(route: Any) -> None:
    """``/js/…``: the JS client's sources, served by playwright (not through the proxy)."""
    name = route.request.url.split("/js/", 1)[1].split("?", 1)[0]
    path = (JS_CLIENT / name).resolve()
    assert path.is_relative_to(JS_CLIENT) and path.is_file(), name
    await route.fulfill(status=200, content_type="text/javascript", body=path.read_text())


async def open_page(browser: Any, base: str) -> Any:
    """A page at ``base``'s origin (the reader's proxy), served by playwright, so
    the EventSource is same-origin and only its requests cross the proxy."""
    page = await browser.new_page()
    await page.route(f"{base}/page", serve_blank_page)
    await page.route(f"{base}/js/**", serve_js_client)
    await page.goto(f"{base}/page")
    return page


def js_client_reader(page: Any) -> Reader:
    async def read(base: str, stream_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await page.evaluate(JS_CLIENT_READER, [stream_id])
        return result

    return read


def chromium_reader(page: Any) -> Reader:
    async def read(base: str, stream_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await page.evaluate(
            BROWSER_READER, f"{base}/v1/streams/{stream_id}/events"
        )
        return result

    return read


def node_reader(kind: str) -> Reader:
    async def read(base: str, stream_id: str) -> dict[str, Any]:
        return await read_node(kind, base, stream_id)

    return read


READERS: dict[str, Reader] = {
    # The two in Chromium are bound to their pages in the test.
    "chromium-eventsource": chromium_reader(None),
    "tokenwire-js-eventsource": js_client_reader(None),
    "npm-eventsource": node_reader("eventsource"),
    "fetch-event-source": node_reader("fetch-event-source"),
    "httpx-sse": read_httpx_sse,
    "tokenwire-python": read_python_client,
    "tokenwire-js": node_reader("tokenwire"),
}


# -- what exactly once means ----------------------------------------------------------


def covered(events: list[dict[str, Any]]) -> list[int]:
    """The seqs the events cover, in order (a merged frame covers from_seq..seq)."""
    out: list[int] = []
    for e in events:
        out.extend(range(e.get("from_seq", e["seq"]), e["seq"] + 1))
    return out


_ID_THEN_CUT = re.compile(rb"data: (\{[^\n]*\})\nid: (\d+)\n\Z")


def cut_after_id(tails: list[bytes]) -> set[int]:
    """The seqs of events whose connection was cut between their ``id:`` line and
    the blank line that dispatches them: the one offset per event where a client
    that records the id on reading the line (fetch-event-source) skips it."""
    lost: set[int] = set()
    for tail in tails:
        m = _ID_THEN_CUT.search(tail)
        if m:
            frame = json.loads(m.group(1))
            lost.update(range(frame.get("from_seq", frame["seq"]), frame["seq"] + 1))
    return lost


async def cutting_proxy(server: ServerProcess, name: str, seed: int) -> FaultProxy:
    """The proxy in front of ``server`` for reader ``name``: its own seeded plan."""
    host, port = "127.0.0.1", int(server.url.rsplit(":", 1)[1])
    rng = random.Random(seed * 1000 + sorted(READERS).index(name))
    # Budgets of 40..1200 bytes (a fifth up to 8 kB, so a merged catch-up frame
    # gets through too): cuts land in chunk sizes, field names, ids, data, and
    # (except for Chromium, below) in the HTTP response head.
    plan = random_plan(rng, small=(40, 1200), large=(1200, 8000), large_share=0.2)
    # Chromium takes a response head cut before its Content-Type for a whole
    # text/plain response, and EventSource then fails for good (readyState
    # CLOSED, "MIME type text/plain"). The head is one write of the server's;
    # nothing on the wire can change that, so its cuts start after the head.
    # (tokenwire-js-eventsource runs on the same EventSource with every cut: the
    # client reconnects itself when EventSource gives up.)
    spare_head = name == "chromium-eventsource"
    return await FaultProxy(host, port, plan=plan, seed=seed, spare_head=spare_head).start()


async def within(reading: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """What a reader saw, or that it did not finish in time."""
    try:
        return await asyncio.wait_for(reading, CLIENT_TIMEOUT_S + 5)
    except TimeoutError:
        return {"timedOut": True}


def problems(name: str, seen: dict[str, Any], proxy: FaultProxy) -> list[str]:
    """What is wrong with what ``name`` saw (nothing: exactly once, in order)."""
    stats = proxy.stats
    where = f"{name} ({stats.cuts} cuts, {stats.connections} connections)"
    if seen.get("timedOut") or seen.get("failed"):
        return [f"{where}: did not finish: {seen}"]
    out = []
    if stats.cuts < 3:
        out.append(f"{where}: too few cuts to mean anything")
    events = [json.loads(e["data"]) for e in seen["events"]]
    expected = list(range(1, LAST + 1))
    if name == "fetch-event-source":
        # Its remaining window with id: last is one byte offset per event (with
        # id: first it was the whole event: it lost an event at nearly every cut).
        lost = cut_after_id(stats.cut_tails)
        expected = [s for s in expected if s not in lost]
    seqs = covered(events)
    if seqs != expected:
        out.append(f"{where}: seqs {seqs}, expected {expected}")
    text = "".join(e.get("text", "") for e in events)
    if text != "".join(scripted_token(s - 1) for s in expected if s <= TOKENS):
        out.append(f"{where}: text {text!r}")
    if [e["kind"] for e in events if e["kind"] not in ("token", "metrics")] != ["done"]:
        out.append(f"{where}: kinds {[e['kind'] for e in events]}")
    if seen.get("opens", 1) < 1:
        out.append(f"{where}: no tw-open frame seen")
    if name in ("chromium-eventsource", "npm-eventsource") and not seen.get("closedBy204"):
        out.append(f"{where}: still open after done (no close() call): {seen}")
    if name == "chromium-eventsource" and not (
        seen["nativeOpens"] >= 1 and seen["nativeOpensWithData"] == 0
    ):
        # The tw-open frame must never reach an `open` listener: those are the
        # connection's own events, without data.
        out.append(f"{where}: open events {seen}")
    if name.startswith("tokenwire-js") and (seen["status"], seen["error"]) != ("done", None):
        out.append(f"{where}: handle ended {seen['status']} {seen['error']}")
    return out


async def test_every_client_sees_every_event_exactly_once_through_cuts(
    sse_server: ServerProcess,
) -> None:
    """All seven read one live stream at once, each through its own cutting proxy."""
    # Seeded: the same cut budgets every run (about 100 cuts over the seven readers;
    # seed 2 passed too when tried, in about the same time).
    proxies = {name: await cutting_proxy(sse_server, name, seed=1) for name in READERS}
    try:
        async with chromium() as browser:
            native = await open_page(browser, proxies["chromium-eventsource"].url)
            ours = await open_page(browser, proxies["tokenwire-js-eventsource"].url)
            readers = {
                **READERS,
                "chromium-eventsource": chromium_reader(native),
                "tokenwire-js-eventsource": js_client_reader(ours),
            }
            stream_id = await start_stream(sse_server)
            seen = await asyncio.gather(
                *(within(readers[name](proxy.url, stream_id)) for name, proxy in proxies.items())
            )
    finally:
        for proxy in proxies.values():
            await proxy.aclose()
    found = [
        p
        for (name, proxy), one in zip(proxies.items(), seen, strict=True)
        for p in problems(name, one, proxy)
    ]
    assert not found, "\n".join(found)


@pytest.mark.parametrize("transport", ["sse", "ndjson"])
async def test_python_client_resuming_at_the_end_ends_cleanly_on_204(
    sse_server: ServerProcess, transport: str
) -> None:
    """A resume at the terminal event is answered 204: the client's iteration ends,
    with no error and no reconnect."""
    stream_id = await start_stream(sse_server, tokens=3, delay_ms=0)
    async with Client(sse_server.url, transport=transport) as client:
        ended = await client.subscribe(stream_id).wait()
        assert ended.kind == "done"
        states: list[str] = []
        handle = client.subscribe(
            stream_id, after=ended.seq, on_state=lambda e: states.append(str(e.new))
        )
        assert [event async for event in handle] == []
        assert handle.reconnects == 0 and handle.terminal is None
        assert states[-1] == "closed" and "reconnecting" not in states


def test_machine_ends_cleanly_on_an_end_answer_and_only_while_dialing() -> None:
    """Pure: the 204 input closes an attempt without an error; outside an attempt it
    is a protocol error."""
    m = ResumeMachine("st_1", after=7)
    m.start(0.0)
    m.actions()
    m.receive_ended(0.1)
    assert m.actions() == [StateChanged(CONNECTING, CLOSED), Disconnect("done")]
    assert m.ended and m.terminal is None and m.last_error is None

    live = ResumeMachine("st_1")
    live.start(0.0)
    live.receive_open({"stream": "st_1", "epoch": "e", "recovered": True}, 0.1)
    live.actions()
    live.receive_ended(0.2)
    actions = live.actions()
    assert actions[-2:-1] == [StateChanged(CONNECTED, ERROR, live.last_error)]
    assert isinstance(live.last_error, ProtocolError) and not live.ended
