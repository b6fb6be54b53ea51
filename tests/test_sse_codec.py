"""SSEParser: the WHATWG "interpreting an event stream" rules, under every split of the input."""

from __future__ import annotations

from itertools import pairwise
from typing import NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenwire.events import Event
from tokenwire.sse import (
    HEARTBEAT,
    SSEMessage,
    SSEParser,
    SSEProtocolError,
    comment,
    frame,
    retry_field,
    utf8,
)

M = SSEMessage

# (messages, last_event_id, retry) after the whole stream.
Result = tuple[list[SSEMessage], str | None, int | None]


class Case(NamedTuple):
    name: str
    stream: bytes
    messages: list[SSEMessage]
    last_event_id: str | None = None
    retry: int | None = None


CASES = [
    # The examples of the WHATWG HTML "server-sent events" section.
    Case(
        "whatwg-stock",
        b"data: This is the first message.\n\n"
        b"data: This is the second message, it\ndata: has two lines.\n\n"
        b"data: This is the third message.\n\n",
        [
            M("This is the first message."),
            M("This is the second message, it\nhas two lines."),
            M("This is the third message."),
        ],
    ),
    Case(
        "whatwg-event-types",
        b"event: add\ndata: 73857293\n\nevent: remove\ndata: 2153\n\nevent: add\ndata: 5805\n\n",
        [M("73857293", "add"), M("2153", "remove"), M("5805", "add")],
    ),
    Case(
        "whatwg-ids",
        b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\n"
        b"data:  third event\n\n",
        [M("first event", id="1"), M("second event"), M(" third event")],
    ),
    Case(
        "whatwg-empty-data",
        b"data\n\ndata\ndata\n\ndata:",
        [M(""), M("\n")],
    ),
    Case("whatwg-space-after-colon", b"data:test\n\ndata: test\n\n", [M("test"), M("test")]),
    # Line breaks.
    Case(
        "crlf",
        b"id: 1\r\nevent: e\r\ndata: a\r\ndata: b\r\n\r\ndata: c\r\n\r\n",
        [M("a\nb", "e", "1"), M("c", id="1")],
        last_event_id="1",
    ),
    Case("cr", b"data: a\rdata: b\r\rdata: c\r\r", [M("a\nb"), M("c")]),
    Case(
        "mixed-breaks",
        b"data: a\r\ndata: b\rdata: c\ndata: d\n\r\ndata: e\r\n\rdata: f\r\r\n",
        [M("a\nb\nc\nd"), M("e"), M("f")],
    ),
    Case("cr-cr-is-two-breaks", b"data: a\r\rdata: b\n\n", [M("a"), M("b")]),
    Case("lf-cr-is-two-breaks", b"data: a\n\rdata: b\n\n", [M("a"), M("b")]),
    Case("crlf-is-one-break", b"data: a\r\ndata: b\r\n\r\n", [M("a\nb")]),
    Case("break-on-first-line", b"\r\n\ndata: x\r\n\r\n", [M("x")]),
    Case(
        "not-line-breaks",
        "data: a\x0bb\x0cc\x1cd\x85e\u2028f\u2029g\n\n".encode(),
        [M("a\x0bb\x0cc\x1cd\x85e\u2028f\u2029g")],
    ),
    # BOM: one, at the very start of the stream, is stripped.
    Case("bom", b"\xef\xbb\xbfdata: x\n\n", [M("x")]),
    Case("bom-then-break", b"\xef\xbb\xbf\ndata: x\n\n", [M("x")]),
    Case("second-bom-kept", b"\xef\xbb\xbf\xef\xbb\xbfdata: x\n\ndata: y\n\n", [M("y")]),
    Case("bom-not-at-start", b"\n\xef\xbb\xbfdata: x\n\ndata: y\n\n", [M("y")]),
    Case("bom-in-data", b"data: \xef\xbb\xbfx\n\n", [M("\ufeffx")]),
    # UTF-8.
    Case(
        "multibyte",
        "event: é\ndata: héllo 🎉 日本\nid: ü\n\n".encode(),
        [M("héllo 🎉 日本", "é", "ü")],
        last_event_id="ü",
    ),
    Case(
        "invalid-utf8",
        b"data: \xff\xfe ok\n\ndata: \xe2\x82\n\ndata: \xe2\x82\xacx\xc3\n\n",
        [M("\ufffd\ufffd ok"), M("\ufffd"), M("€x\ufffd")],
    ),
    # Fields.
    Case(
        "comments",
        b":\n: hb\n:data: no\ndata: a\n: between\ndata: b\n\n" + HEARTBEAT + comment(),
        [M("a\nb")],
    ),
    Case(
        "field-value-split",
        b"data:a:b\n\ndata:  two\n\ndata:\n\ndata\n\ndata:\tx\n\n",
        [M("a:b"), M(" two"), M(""), M(""), M("\tx")],
    ),
    Case(
        "unknown-fields",
        b"foo: bar\nData: no\ndata : no\n data: no\nevent\xc3\xa9: x\ndata: yes\n\n",
        [M("yes")],
    ),
    Case("nul-in-data", b"data: a\x00b\n\n", [M("a\x00b")]),
    Case(
        "event-type",
        b"event: a\ndata: 1\n\ndata: 2\n\nevent:\ndata: 3\n\nevent: x\nevent: y\ndata: 4\n\n"
        b"event:  spaced \ndata: 5\n\n",
        [M("1", "a"), M("2"), M("3"), M("4", "y"), M("5", " spaced ")],
    ),
    Case(
        "event-without-data",
        b"event: lost\n\ndata: x\n\nevent: lost\nid: 3\n\n",
        [M("x")],
        last_event_id="3",
    ),
    Case(
        "id-persists",
        b"id: 7\ndata: a\n\ndata: b\n\nid: 8\ndata: c\n\nid:\ndata: d\n\n",
        [M("a", id="7"), M("b", id="7"), M("c", id="8"), M("d")],
    ),
    Case(
        "id-with-nul-ignored",
        b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\nid: \x00\ndata: c\n\n",
        [M("a", id="1"), M("b", id="1"), M("c", id="1")],
        last_event_id="1",
    ),
    Case(
        "id-set-by-id-only-block",
        b"data: a\n\nid: 5\n\n",
        [M("a")],
        last_event_id="5",
    ),
    Case(
        "id-applies-to-its-event-only-at-dispatch",
        b"id: 1\ndata: a\n\ndata: b\nid: 2\n\nid: 3\ndata: c",
        [M("a", id="1"), M("b", id="2")],
        last_event_id="2",
    ),
    Case(
        "retry",
        b"retry: 1500\ndata: a\n\nretry:250\n\ndata: b\n\nretry: 0\ndata: c\n\n",
        [M("a", retry=1500), M("b", retry=250), M("c", retry=0)],
        retry=0,
    ),
    Case(
        "retry-invalid-ignored",
        "retry: 100\n\nretry: 15x\nretry: -1\nretry: 1.5\nretry:\nretry\nretry:  7\n"
        "retry: \u0661\u0662\nretry: 1 \ndata: a\n\n".encode(),
        [M("a", retry=100)],
        retry=100,
    ),
    Case("retry-leading-zeros", b"retry: 007\n\n", [], retry=7),
    # End of stream: an incomplete line or event is discarded.
    Case("empty", b"", []),
    Case("incomplete-event", b"data: a\n\ndata: b\n", [M("a")]),
    Case("incomplete-line", b"data: a\n\ndata: b\n\nda", [M("a"), M("b")]),
    Case("incomplete-id-line", b"data: a\n\nid: 9", [M("a")]),
    Case("trailing-cr-dispatches", b"data: a\r\r", [M("a")]),
    # The encoders' own output, as the server writes it.
    Case(
        "encoder",
        retry_field(2000)
        + frame(b'{"stream":"st_1","recovered":true}', event="open")
        + frame('{"seq":42,"kind":"token","text":" world"}', event="token", id=42)
        + HEARTBEAT
        + frame("line 1\r\nline 2\rline 3\nline 4", event="data", id="43")
        + frame("", id=44)
        + frame("é🎉", event="token", id=45, retry=500),
        [
            M('{"stream":"st_1","recovered":true}', "open", None, 2000),
            M('{"seq":42,"kind":"token","text":" world"}', "token", "42", 2000),
            M("line 1\nline 2\nline 3\nline 4", "data", "43", 2000),
            M("", "message", "44", 2000),
            M("é🎉", "token", "45", 500),
        ],
        last_event_id="45",
        retry=500,
    ),
    Case(
        "event-encoding",
        Event("token", {"text": "é\n"}, seq=7).sse() + HEARTBEAT + Event("done", seq=8).sse(),
        [
            M('{"seq":7,"kind":"token","text":"é\\n"}', "token", "7"),
            M('{"seq":8,"kind":"done"}', "done", "8"),
        ],
        last_event_id="8",
    ),
]


def parse(chunks: list[bytes], **kwargs: int) -> Result:
    parser = SSEParser(**kwargs)
    out: list[SSEMessage] = []
    for chunk in chunks:
        out += parser.feed(chunk)
    out += parser.close()
    return out, parser.last_event_id, parser.retry


def expected(case: Case) -> Result:
    return case.messages, case.last_event_id, case.retry


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in pairwise(bounds)]


cases = pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])


@cases
def test_whole(case: Case) -> None:
    assert parse([case.stream]) == expected(case)


@cases
def test_every_split_in_two(case: Case) -> None:
    want = expected(case)
    for i in range(len(case.stream) + 1):
        assert parse(split_at(case.stream, [i])) == want, f"split at {i}"


@cases
def test_byte_at_a_time(case: Case) -> None:
    chunks = [case.stream[i : i + 1] for i in range(len(case.stream))]
    assert parse(chunks) == expected(case)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_random_splits(data: st.DataObject) -> None:
    case = data.draw(st.sampled_from(CASES))
    cuts = data.draw(st.lists(st.integers(0, len(case.stream)), max_size=8))
    chunks = split_at(case.stream, cuts)
    # Empty feeds too: they must change nothing.
    chunks = [c for chunk in chunks for c in (chunk, b"")]
    assert parse(chunks) == expected(case)


def test_messages_are_frozen_values() -> None:
    (msg,) = SSEParser().feed(b"data: x\n\n")
    assert msg == M("x", "message", None, None)
    assert hash(msg) == hash(M("x"))
    with pytest.raises(AttributeError):
        msg.data = "y"  # type: ignore[misc]


def test_state_is_visible_between_feeds() -> None:
    parser = SSEParser()
    assert (parser.last_event_id, parser.retry) == (None, None)
    assert parser.feed(b"retry: 300\nid: 4\ndata: a\n") == []
    assert parser.retry == 300  # a retry field applies at once
    assert parser.last_event_id is None  # an id applies on dispatch
    assert parser.feed(b"\n") == [M("a", id="4", retry=300)]
    assert parser.last_event_id == "4"


def test_close_discards_incomplete_event_and_ends_the_parser() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\n\ndata: b\n") == [M("a")]
    assert parser.close() == []
    assert parser.close() == []
    with pytest.raises(RuntimeError):
        parser.feed(b"\n")


# --- a direct transcription of the spec, to compare against on arbitrary input ---


def reference(stream: bytes) -> Result:
    text = stream.decode("utf-8", "replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    lines: list[str] = []
    current = ""
    i = 0
    while i < len(text):
        ch = text[i]
        if ch in "\r\n":
            lines.append(current)
            current = ""
            if text[i : i + 2] == "\r\n":
                i += 1
        else:
            current += ch
        i += 1
    out: list[SSEMessage] = []
    data = event = id_buffer = last_id = ""
    retry: int | None = None
    for line in lines:
        if line == "":
            last_id = id_buffer
            if data:
                out.append(M(data.removesuffix("\n"), event or "message", last_id or None, retry))
            data = event = ""
        elif line.startswith(":"):
            pass
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data += value + "\n"
            elif name == "id":
                if "\0" not in value:
                    id_buffer = value
            elif name == "retry":
                if value and all(c in "0123456789" for c in value):
                    retry = int(value)
    return out, last_id or None, retry


TOKENS = [
    b"data",
    b"event",
    b"id",
    b"retry",
    b"foo",
    b":",
    b" ",
    b"\r",
    b"\n",
    b"\r\n",
    b"\n\n",
    b"x",
    b"12",
    b"\x00",
    b"\xef\xbb\xbf",
    "é".encode(),
    "🎉".encode(),
    b"\xe2\x82",
    b"\xff",
]
streams = st.lists(st.sampled_from(TOKENS), max_size=40).map(b"".join)


@settings(max_examples=400, deadline=None)
@given(stream=streams, data=st.data())
def test_matches_spec_transcription(stream: bytes, data: st.DataObject) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=6))
    want = reference(stream)
    assert parse([stream]) == want
    assert parse(split_at(stream, cuts)) == want


# --- round trips through the encoder ---

LINE_BREAKS = st.sampled_from(["\r", "\n", "\r\n", "\n\n", "\r\r", ":", " "])
texts = st.lists(st.one_of(st.characters(), LINE_BREAKS), max_size=30).map("".join)
one_line = st.text(st.characters(blacklist_characters="\r\n"), max_size=10)


def normalise(text: str) -> str:
    return utf8(text).decode().replace("\r\n", "\n").replace("\r", "\n")


@settings(max_examples=200, deadline=None)
@given(
    data=texts,
    event=st.none() | one_line,
    id=st.none() | st.integers(0, 2**64) | one_line.filter(lambda s: "\0" not in s),
    retry=st.none() | st.integers(0, 10**9),
)
def test_frame_round_trip(
    data: str, event: str | None, id: int | str | None, retry: int | None
) -> None:
    encoded = frame(data, event=event, id=id, retry=retry)
    name = utf8(event).decode() if event else "message"
    want = M(normalise(data), name, utf8(str(id)).decode() if id not in (None, "") else None, retry)
    assert parse([encoded])[0] == [want]
    assert parse([encoded[i : i + 1] for i in range(len(encoded))])[0] == [want]


frames = st.one_of(
    st.tuples(texts, st.none() | one_line, st.none() | st.integers(0, 10**6)),
    st.just(HEARTBEAT),
    st.integers(0, 10**6).map(retry_field),
)


@settings(max_examples=100, deadline=None)
@given(parts=st.lists(frames, max_size=10), data=st.data())
def test_stream_round_trip(
    parts: list[tuple[str, str | None, int | None] | bytes], data: st.DataObject
) -> None:
    stream = b""
    want: list[SSEMessage] = []
    last_id: str | None = None
    retry: int | None = None
    for part in parts:
        if isinstance(part, bytes):
            stream += part
            if part.startswith(b"retry:"):
                retry = int(part[6:])
            continue
        text, event, id = part
        stream += frame(text, event=event, id=id)
        if id is not None:
            last_id = str(id)
        name = utf8(event).decode() if event else "message"
        want.append(M(normalise(text), name, last_id, retry))
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10))
    assert parse(split_at(stream, cuts)) == (want, last_id, retry)


# --- bounds ---


def test_line_at_the_limit_is_accepted() -> None:
    line = b"data: " + b"x" * 94  # 100 bytes, line break excluded
    assert parse([line + b"\r\n\r\n"], max_line_bytes=100)[0] == [M("x" * 94)]
    assert parse([line[:50], line[50:], b"\n\n"], max_line_bytes=100)[0] == [M("x" * 94)]


@pytest.mark.parametrize(
    "chunks",
    [
        [b"data: a\n\ndata: " + b"x" * 95 + b"\n\n"],  # inside a chunk of whole lines
        [b"data: a\n\ndata: " + b"x" * 95],  # as the incomplete tail of a chunk
        [b"data: " + b"x" * 50, b"x" * 45],  # growing across feeds with no break
        [b"data: " + b"x" * 50, b"x" * 45 + b"\n"],  # completed by a later feed
    ],
)
def test_line_over_the_limit_raises(chunks: list[bytes]) -> None:
    with pytest.raises(SSEProtocolError, match="line longer than 100 bytes"):
        parse(chunks, max_line_bytes=100)


def test_event_bounds() -> None:
    # The data "1234\n5678" is 9 bytes; "é" is 2 bytes in UTF-8.
    assert parse([b"data: 1234\ndata: 5678\n\n"], max_event_bytes=9)[0] == [M("1234\n5678")]
    assert parse([b"data: 1234\ndata: 5678\n\n"] * 3, max_event_bytes=9)[0] == [M("1234\n5678")] * 3
    with pytest.raises(SSEProtocolError, match="event larger than 8 bytes"):
        parse([b"data: 1234\ndata: 5678\n\n"], max_event_bytes=8)
    with pytest.raises(SSEProtocolError):
        parse(["data: éééé\ndata: é\n\n".encode()], max_event_bytes=10)
    with pytest.raises(SSEProtocolError):
        parse([b"data: x\n" for _ in range(20)], max_event_bytes=30)


def test_bounds_must_be_positive() -> None:
    with pytest.raises(ValueError):
        SSEParser(max_line_bytes=0)
    with pytest.raises(ValueError):
        SSEParser(max_event_bytes=0)


def test_protocol_error_is_a_value_error() -> None:
    assert issubclass(SSEProtocolError, ValueError)
