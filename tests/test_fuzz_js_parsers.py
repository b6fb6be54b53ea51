"""Fuzzing the JS client's parsers (clients/js/src/sse.js, ndjson.js) against the
Python ones: the same bytes, split the same way, give the same SSE events and
the same final ``retry`` (both follow the WHATWG rules), and the NDJSON parser
throws nothing but its ``ProtocolError``. One node process serves every example
(tests/node/js_parsers.mjs).

Bounded by ``tests/fuzz_settings.py``; ``tokenwire bench fuzz`` runs it longer.
"""

from __future__ import annotations

import base64
import json
import random
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tests.fuzz_settings import fuzz
from tests.test_fuzz_parsers import splits, wire_bytes
from tokenwire import sse

SCRIPT = Path(__file__).resolve().parent / "node" / "js_parsers.mjs"


@pytest.fixture(scope="module")
def js() -> Iterator[subprocess.Popen[str]]:
    node = shutil.which("node")
    assert node is not None, "node missing: run scripts/setup.sh --dev"
    proc = subprocess.Popen(
        [node, str(SCRIPT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    yield proc
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=10)
    assert proc.stdout is not None
    proc.stdout.close()


def ask(js: subprocess.Popen[str], kind: str, chunks: list[bytes]) -> dict[str, Any]:
    assert js.stdin is not None and js.stdout is not None
    line = {"kind": kind, "chunks": [base64.b64encode(c).decode() for c in chunks]}
    js.stdin.write(json.dumps(line) + "\n")
    js.stdin.flush()
    answer: dict[str, Any] = json.loads(js.stdout.readline())
    return answer


@fuzz(100)
@given(data=wire_bytes, seed=st.integers(0, 2**16))
@example(data=b"\xef\xbb\xbfdata: a\r\n\r\nid: 7\x00\nretry: 12\ndata:b\n\n", seed=3)
@example(data=b"data: \xff\xfe\xc3\n\n", seed=1)
def test_the_js_sse_parser_reads_what_the_python_one_reads(
    js: subprocess.Popen[str], data: bytes, seed: int
) -> None:
    chunks = splits(data, random.Random(seed))
    parser = sse.SSEParser()
    expected = [m for chunk in chunks for m in parser.feed(chunk)]
    got = ask(js, "sse", chunks)
    assert "error" not in got  # no line bound is near: nothing to refuse
    events = [r for r in got["records"] if r["type"] == "event"]
    assert [(e["event"], e["data"], e["id"]) for e in events] == [
        (m.event, m.data, m.id or "") for m in expected
    ]
    retries = [r["retry"] for r in got["records"] if r["type"] == "retry"]
    assert (retries[-1] if retries else None) == parser.retry


@fuzz(60)
@given(data=wire_bytes, seed=st.integers(0, 2**16))
def test_the_js_ndjson_parser_throws_only_its_protocol_error(
    js: subprocess.Popen[str], data: bytes, seed: int
) -> None:
    got = ask(js, "ndjson", splits(data, random.Random(seed)))
    assert got.get("error") in (None, "ProtocolError")
