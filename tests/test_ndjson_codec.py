"""NDJSONParser: one JSON value per line, under every split of the input."""

from __future__ import annotations

from itertools import pairwise
from typing import Any, NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenwire.events import Event
from tokenwire.ndjson import NDJSONParser, NDJSONProtocolError, line


class Case(NamedTuple):
    name: str
    stream: bytes
    values: list[Any]


CASES = [
    Case("empty", b"", []),
    Case("lines", b'{"a":1}\n{"b":[1,2]}\n', [{"a": 1}, {"b": [1, 2]}]),
    Case("crlf", b'{"a":1}\r\n{"b":2}\r\n', [{"a": 1}, {"b": 2}]),
    Case("final-line-without-newline", b'{"a":1}\n{"b":2}', [{"a": 1}, {"b": 2}]),
    Case("final-line-crlf-at-close", b'{"a":1}\r\n{"b":2}\r', [{"a": 1}, {"b": 2}]),
    Case(
        "blank-lines-skipped",
        b'\n\r\n  \n\t\r\n{"a":1}\n \t \n\n{"b":2}\n   ',
        [{"a": 1}, {"b": 2}],
    ),
    Case("scalars", b'1\n"s"\nnull\ntrue\n-2.5e3\n[]\n', [1, "s", None, True, -2500.0, []]),
    Case("padded", b'  {"a": 1} \t\n', [{"a": 1}]),
    Case(
        "unicode",
        '{"t":"héllo 🎉 日本"}\n["\\u00e9\\ud83c\\udf89"]\n'.encode(),
        [{"t": "héllo 🎉 日本"}, ["é🎉"]],
    ),
    Case("escaped-newlines", b'{"t":"a\\nb\\r\\nc"}\n', [{"t": "a\nb\r\nc"}]),
    Case(
        "encoder",
        line({"kind": "open", "stream": "st_1", "recovered": True, "first_seq": 1})
        + line(Event("token", {"text": " world"}, seq=42).to_dict())
        + line({"kind": "heartbeat", "ts": 1763700000.5})
        + line({"seq": 43, "kind": "done", "finish_reason": "stop", "usage": None}),
        [
            {"kind": "open", "stream": "st_1", "recovered": True, "first_seq": 1},
            {"seq": 42, "kind": "token", "text": " world"},
            {"kind": "heartbeat", "ts": 1763700000.5},
            {"seq": 43, "kind": "done", "finish_reason": "stop", "usage": None},
        ],
    ),
]


def parse(chunks: list[bytes], **kwargs: int) -> list[Any]:
    parser = NDJSONParser(**kwargs)
    out: list[Any] = []
    for chunk in chunks:
        out += parser.feed(chunk)
    out += parser.close()
    return out


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in pairwise(bounds)]


cases = pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])


@cases
def test_whole(case: Case) -> None:
    assert parse([case.stream]) == case.values


@cases
def test_every_split_in_two(case: Case) -> None:
    for i in range(len(case.stream) + 1):
        assert parse(split_at(case.stream, [i])) == case.values, f"split at {i}"


@cases
def test_byte_at_a_time(case: Case) -> None:
    chunks = [case.stream[i : i + 1] for i in range(len(case.stream))]
    assert parse(chunks) == case.values


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_random_splits(data: st.DataObject) -> None:
    case = data.draw(st.sampled_from(CASES))
    cuts = data.draw(st.lists(st.integers(0, len(case.stream)), max_size=8))
    chunks = [c for chunk in split_at(case.stream, cuts) for c in (chunk, b"")]
    assert parse(chunks) == case.values


def test_objects_arrive_with_the_feed_that_completes_their_line() -> None:
    parser = NDJSONParser()
    assert parser.feed(b'{"a":') == []
    assert parser.feed(b'1}\n{"b"') == [{"a": 1}]
    assert parser.feed(b":2}\n\n") == [{"b": 2}]
    assert parser.feed(b"3") == []
    assert parser.close() == [3]
    assert parser.close() == []
    with pytest.raises(RuntimeError):
        parser.feed(b"\n")


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=100, deadline=None)
@given(values=st.lists(json_values, max_size=8), crlf=st.booleans(), data=st.data())
def test_round_trip(values: list[Any], crlf: bool, data: st.DataObject) -> None:
    stream = b"".join(line(v) for v in values)
    if crlf:
        stream = stream.replace(b"\n", b"\r\n")
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=8))
    assert parse(split_at(stream, cuts)) == values


# --- errors and bounds ---


@pytest.mark.parametrize(
    ("stream", "line_no"),
    [
        (b"{bad\n", 1),
        (b'{"a":1}\n\n{"b":\n{"c":3}\n', 3),
        (b'1\n2\n3\n4\n{"x":1} 2\n', 5),
        (b"1\n\n3\n\xff\n", 4),  # not UTF-8
        (b"1\n2\n[1,", 3),  # the last line, parsed at close
        (b"1\n\x0c\n", 2),  # form feed is not JSON whitespace
    ],
)
def test_invalid_json_names_the_line(stream: bytes, line_no: int) -> None:
    for chunks in ([stream], [stream[i : i + 1] for i in range(len(stream))]):
        with pytest.raises(NDJSONProtocolError, match=f"line {line_no}\\b") as info:
            parse(chunks)
        assert info.value.line == line_no
        assert isinstance(info.value, ValueError)


def test_line_at_the_limit_is_accepted() -> None:
    value = "x" * 98  # '"' + 98 + '"' = 100 bytes
    stream = line(value) * 3
    assert parse([stream], max_line_bytes=100) == [value] * 3
    assert parse(split_at(stream, [50, 150, 250]), max_line_bytes=100) == [value] * 3
    assert parse([stream[:-1]], max_line_bytes=100) == [value] * 3


@pytest.mark.parametrize(
    "chunks",
    [
        [b"1\n2\n" + b" " * 101 + b"\n"],  # inside a chunk of whole lines
        [b"1\n2\n" + b" " * 101],  # as the incomplete tail of a chunk
        [b"1\n2\n" + b" " * 50, b" " * 51],  # growing across feeds with no newline
        [b"1\n2\n" + b" " * 50, b" " * 51 + b"\n"],  # completed by a later feed
    ],
)
def test_line_over_the_limit_raises(chunks: list[bytes]) -> None:
    with pytest.raises(NDJSONProtocolError, match="line 3 longer than 100 bytes") as info:
        parse(chunks, max_line_bytes=100)
    assert info.value.line == 3


def test_bound_must_be_positive() -> None:
    with pytest.raises(ValueError):
        NDJSONParser(max_line_bytes=0)
