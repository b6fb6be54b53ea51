"""One producer contract (issue 12, deliverable 4, fuzzed): whatever a producer
yields (strings, events, dicts with a kind, other JSON values, arrays, things
that are none of these), ``Hub.start`` and ``event_stream_response`` turn it into
the same events, in the same order, with the same terminal event.

Bounded by ``tests/fuzz_settings.py``; ``tokenwire bench fuzz`` runs it longer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tests.fuzz_settings import fuzz
from tokenwire import Event, Hub, HubConfig, event_stream_response, sse
from tokenwire.events import loads

text = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=6,
)
items = st.lists(
    text
    | st.builds(Event.token, text)
    | st.builds(Event.progress, text, st.floats(0, 1))
    | st.fixed_dictionaries({"kind": st.sampled_from(["progress", "data", "metrics"])})
    | st.builds(lambda s: {"kind": "token", "text": s, "seq": 99}, text)
    | json_values.filter(lambda v: not (isinstance(v, dict) and "kind" in v))
    | hnp.arrays(st.sampled_from([np.float32, np.int16, np.uint8]), hnp.array_shapes(max_dims=2))
    | st.sampled_from([b"bytes", object(), {"kind": 3}, {"kind": "no-such-kind"}]),
    max_size=6,
)


async def _source(values: list[Any]) -> AsyncIterator[Any]:
    for value in values:
        yield value


def _normal(obj: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """An event as both paths can be compared: no seq, no timing, tensor ids numbered."""
    fields = {k: v for k, v in obj.items() if k not in ("seq", "kind", "ts", "message")}
    if "tensor_id" in fields:
        fields["tensor_id"] = "t"
    return obj["kind"], fields


async def through_hub(values: list[Any]) -> list[tuple[str, dict[str, Any]]]:
    hub = Hub(config=HubConfig(grace_s=5))
    try:
        stream = await hub.start(_source(values))
        await stream.wait()
        return [_normal(loads(e.json())) async for e in hub.subscribe(stream.id, 0)]
    finally:
        await hub.aclose()


async def through_response(values: list[Any]) -> list[tuple[str, dict[str, Any]]]:
    app = event_stream_response(_source(values), heartbeat_s=30)
    body = bytearray()
    never = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await never.wait()  # the client stays until the stream ends
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            body.extend(message.get("body", b""))

    await asyncio.wait_for(app({"type": "http"}, receive, send), 30)
    parser = sse.SSEParser()
    messages = parser.feed(bytes(body)) + parser.close()
    return [_normal(loads(m.data)) for m in messages if m.data.startswith("{")]


@fuzz(40)
@given(values=items)
def test_a_producer_gives_the_same_events_under_hub_start_and_event_stream_response(
    values: list[Any],
) -> None:
    hub_events = asyncio.run(through_hub(values))
    response_events = asyncio.run(through_response(values))
    assert [kind for kind, _ in hub_events] == [kind for kind, _ in response_events]
    assert hub_events[-1][0] in ("done", "error")
    for (kind, fields), (_, other) in zip(hub_events, response_events, strict=True):
        if kind != "error":  # the message names where it failed
            assert fields == other
