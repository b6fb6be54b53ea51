"""Fuzzing the wire parsers (issue 12, deliverable 5), pure code, no I/O:

- the SSE and NDJSON parsers, fed any bytes split anywhere, return messages or
  raise their one documented error (:class:`SSEProtocolError`,
  :class:`NDJSONProtocolError`), and what the encoders write parses back equal;
- the client's framings and WebSocket frame reader, fed any bytes, feed the
  resume machine or raise a :class:`ClientError` (never a ``KeyError``,
  ``TypeError``…);
- the server's offset and op-field validation answers any JSON value with a
  valid value or its typed 4xx error.

Bounded by ``tests/fuzz_settings.py``; ``tokenwire bench fuzz`` runs them longer.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from tests.fuzz_settings import fuzz
from tokenwire import ndjson, sse
from tokenwire.client.errors import ClientError
from tokenwire.client.machine import ResumeMachine
from tokenwire.client.policy import ReconnectPolicy
from tokenwire.client.wire import NDJSONFraming, SSEFraming, ws_message
from tokenwire.core.offsets import MAX_SEQ, seq_from_json
from tokenwire.core.ops import OPS, SOCKETIO, WEBSOCKET, BadOpError, Dialect, request_id
from tokenwire.errors import InvalidRequestError, TokenwireError
from tokenwire.events import dumps, loads, open_frame

# -- strategies ---------------------------------------------------------------------

# Text as the wire carries it: UTF-8 encodable (no lone surrogates).
wire_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
line_free = st.text(
    st.characters(exclude_categories=("Cs",), exclude_characters="\r\n"), max_size=20
)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | wire_text
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(wire_text, inner, max_size=4),
    max_leaves=8,
)
# Bytes that look like the wire now and then: SSE field names, JSON, line breaks.
wire_pieces = st.sampled_from(
    [
        b"data: ",
        b"event: ",
        b"id: ",
        b"retry: ",
        b": hb",
        b"\n",
        b"\r\n",
        b"\r",
        b"\n\n",
        b'{"seq":1,"kind":"token","text":"a"}',
        b'{"kind":"open","stream":"st_f","epoch":"e","recovered":true,"first_seq":1,'
        b'"last_seq":0,"status":"running"}',
        b"event: tw-open\n",
        b"\xef\xbb\xbf",
        b"\xff",
        b"{",
        b"}",
    ]
)
wire_bytes = st.lists(st.binary(max_size=24) | wire_pieces, max_size=24).map(b"".join)


def splits(data: bytes, rng: random.Random) -> list[bytes]:
    cuts = sorted(rng.sample(range(len(data) + 1), k=min(len(data) + 1, rng.randint(0, 6))))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


# -- SSE ------------------------------------------------------------------------------


@fuzz(80)
@given(data=wire_bytes, seed=st.integers(0, 2**16), max_line=st.integers(1, 64))
@example(data=b"data: " + b"x" * 80 + b"\n\n", seed=0, max_line=16)
def test_the_sse_parser_raises_only_its_error(data: bytes, seed: int, max_line: int) -> None:
    parser = sse.SSEParser(max_line_bytes=max_line, max_event_bytes=4 * max_line)
    messages: list[sse.SSEMessage] = []
    try:
        for chunk in splits(data, random.Random(seed)):
            messages += parser.feed(chunk)
        messages += parser.close()
    except sse.SSEProtocolError as exc:
        assert isinstance(exc, TokenwireError) and isinstance(exc, ValueError)
        return
    for msg in messages:
        assert isinstance(msg.data, str) and isinstance(msg.event, str)
        assert len(msg.data.encode()) <= 4 * max_line


@fuzz(50)
@given(data=wire_bytes, seed=st.integers(0, 2**16))
def test_the_sse_parser_does_not_depend_on_the_split(data: bytes, seed: int) -> None:
    whole = sse.SSEParser()
    expected = whole.feed(data) + whole.close()
    pieces = sse.SSEParser()
    got: list[sse.SSEMessage] = []
    for chunk in splits(data, random.Random(seed)):
        got += pieces.feed(chunk)
    assert got + pieces.close() == expected


@fuzz(50)
@given(
    data=wire_text,
    event=st.none() | line_free.filter(bool),
    id=st.none() | line_free.filter(lambda s: "\0" not in s and s != ""),
    retry=st.none() | st.integers(0, 10**9),
    seed=st.integers(0, 2**16),
)
def test_an_sse_frame_parses_back_equal(
    data: str, event: str | None, id: str | None, retry: int | None, seed: int
) -> None:
    # A data line break of any kind (CR, LF, CRLF) reads back as LF (WHATWG).
    body = sse.frame(data, event=event, id=id, retry=retry)
    parser = sse.SSEParser()
    messages: list[sse.SSEMessage] = []
    for chunk in splits(body, random.Random(seed)):
        messages += parser.feed(chunk)
    assert len(messages) == 1
    msg = messages[0]
    assert msg.data == data.replace("\r\n", "\n").replace("\r", "\n")
    assert msg.event == (event or "message")
    assert msg.id == id
    assert msg.retry == retry


# -- NDJSON ---------------------------------------------------------------------------


@fuzz(80)
@given(data=wire_bytes, seed=st.integers(0, 2**16), max_line=st.integers(1, 64))
def test_the_ndjson_parser_raises_only_its_error(data: bytes, seed: int, max_line: int) -> None:
    parser = ndjson.NDJSONParser(max_line_bytes=max_line)
    try:
        for chunk in splits(data, random.Random(seed)):
            parser.feed(chunk)
        parser.close()
    except ndjson.NDJSONProtocolError as exc:
        assert isinstance(exc, TokenwireError) and isinstance(exc, ValueError)
        assert exc.line is None or exc.line >= 1


@fuzz(40)
@given(values=st.lists(json_values, max_size=6), seed=st.integers(0, 2**16))
def test_ndjson_lines_parse_back_equal(values: list[Any], seed: int) -> None:
    body = b"".join(ndjson.line(v) for v in values)
    parser = ndjson.NDJSONParser()
    got: list[Any] = []
    for chunk in splits(body, random.Random(seed)):
        got += parser.feed(chunk)
    assert got + parser.close() == [loads(dumps(v)) for v in values]


# -- the client's framings ----------------------------------------------------------


def _machine() -> ResumeMachine:
    m = ResumeMachine("st_f", policy=ReconnectPolicy(rng=random.Random(1)))
    m.start(0.0)
    m.actions()
    return m


OPEN = open_frame("st_f", "e", recovered=True, first_seq=1, last_seq=0, status="running")


@fuzz(50)
@given(
    data=wire_bytes,
    objects=st.lists(json_values, max_size=4),
    seed=st.integers(0, 2**16),
    framing=st.sampled_from(["sse", "ndjson"]),
)
def test_the_client_framings_raise_only_client_errors(
    data: bytes, objects: list[Any], seed: int, framing: str
) -> None:
    machine = _machine()
    # Half the time the link is open first, so events reach the machine's checks.
    if seed % 2:
        opening = (
            sse.frame(dumps(OPEN), event=sse.OPEN_EVENT)
            if framing == "sse"
            else dumps({"kind": "open", **OPEN}) + b"\n"
        )
    else:
        opening = b""
    body = b"".join(sse.frame(dumps(o)) if framing == "sse" else dumps(o) + b"\n" for o in objects)
    reader = (
        SSEFraming(max_line_bytes=256) if framing == "sse" else NDJSONFraming(max_line_bytes=256)
    )
    try:
        for chunk in splits(opening + body + data, random.Random(seed)):
            reader.feed(chunk, machine, 1.0)
            machine.actions()
    except ClientError:
        pass


@fuzz(60)
@given(raw=wire_text | json_values.map(lambda v: dumps(v).decode()) | st.binary(max_size=40))
def test_the_websocket_frame_reader_raises_only_client_errors(raw: str | bytes) -> None:
    try:
        msg = ws_message(raw)
    except ClientError:
        return
    assert isinstance(msg, dict)


# -- the server's op and offset validation -------------------------------------------


@fuzz(60)
@given(value=json_values)
@example(value=True)
@example(value=2**63)
@example(value="12")
def test_an_offset_is_a_valid_seq_or_a_422(value: Any) -> None:
    try:
        seq = seq_from_json(value, "'after'")
    except InvalidRequestError as exc:
        assert exc.status == 422 and exc.message
        return
    assert isinstance(seq, int) and not isinstance(seq, bool) and 0 <= seq <= MAX_SEQ


@fuzz(50)
@given(
    msg=st.dictionaries(
        st.sampled_from(
            ["op", "stream", "jobId", "after", "lastSequence", "id", "token", "coalesce_ms"]
        )
        | wire_text,
        json_values,
        max_size=4,
    ),
    dialect=st.sampled_from([WEBSOCKET, SOCKETIO]),
)
def test_op_fields_are_valid_or_the_dialects_bad_op_error(
    msg: dict[str, Any], dialect: Dialect
) -> None:
    checks = (
        dialect.stream_id,
        dialect.after_seq,
        lambda m: request_id(m, dialect),
        lambda m: dialect.coalesce_s(m, 0),
    )
    for check in checks:
        try:
            check(msg)
        except BadOpError as exc:
            assert exc.code == dialect.bad_code and exc.message and exc.status == 422
    unknown = dialect.unknown(msg.get("op"))
    assert isinstance(unknown, BadOpError) and len(unknown.message) < 200
    assert unknown.message.endswith("expected one of: " + ", ".join(OPS))
