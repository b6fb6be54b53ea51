"""Token logprobs, pure: the math, pieces, the worker messages, token events, OpenAI chunks."""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tokenwire.errors import InvalidRequestError
from tokenwire.events import TOKEN, Event
from tokenwire.models import Finish, GenerationRequest, Usage, model_producer
from tokenwire.models.logprobs import (
    PieceLogprobs,
    TokenPiece,
    log_softmax,
    logprob_fields,
    top_candidates,
)
from tokenwire.server.openai_api import ChunkFrames, completion_object, logprobs_content
from tokenwire.workers import messages as wm

LOGITS = np.array([1.0, 3.0, 2.0, 3.0, -1.0])


@given(hnp.arrays(np.float32, st.integers(2, 64), elements=st.floats(-30, 30, width=32)))
def test_log_softmax_is_a_distribution(logits: np.ndarray) -> None:
    lp = log_softmax(logits)
    assert np.all(lp <= 1e-12)
    assert abs(np.exp(lp).sum() - 1.0) < 1e-9
    assert lp[int(np.argmax(logits))] == lp.max()  # (near-equal logits may tie after the shift)


def test_top_candidates_best_first_ties_by_id() -> None:
    lp = log_softmax(LOGITS)
    chosen, top = top_candidates(lp, 2, 3)
    assert chosen == round(float(lp[2]), 5)
    assert [i for i, _ in top] == [1, 3, 2]
    assert top[0][1] == top[1][1] > top[2][1]
    assert top_candidates(lp, 0, 0) == (round(float(lp[0]), 5), [])
    assert len(top_candidates(lp, 0, 50)[1]) == 5  # k beyond the vocabulary


def test_a_piece_over_several_tokens_sums_them_and_keeps_the_first_alternatives() -> None:
    names = "abcde"
    gather = PieceLogprobs(2, lambda i: names[i])
    assert gather.piece("plain") == "plain" and not isinstance(gather.piece("x"), TokenPiece)
    gather.add(LOGITS, 1)
    gather.add(LOGITS, 2)
    piece = gather.piece("bc")
    lp = log_softmax(LOGITS)
    assert isinstance(piece, TokenPiece) and piece == "bc"
    assert piece.logprob == pytest.approx(lp[1] + lp[2], abs=1e-4)
    assert [t for t, _ in piece.top_logprobs] == ["b", "d"]
    assert not isinstance(gather.piece("next"), TokenPiece)  # reset after each piece


def test_a_token_piece_is_a_str_everywhere() -> None:
    piece = TokenPiece(" world", -0.5, [(" world", -0.5), (" there", -1.25)])
    assert piece == " world" and "hello" + piece == "hello world"
    assert orjson.dumps([piece]) == b'[" world"]'
    assert logprob_fields(piece) == {
        "logprob": -0.5,
        "top_logprobs": [
            {"token": " world", "logprob": -0.5},
            {"token": " there", "logprob": -1.25},
        ],
    }
    assert logprob_fields("plain") is None


def test_text_messages_carry_logprobs_across_the_pipe() -> None:
    piece = TokenPiece("Hi", -0.25, [("Hi", -0.25), ("Hello", -2.0)])
    msg = wm.Text.of("g1", piece)
    [back] = wm.Decoder().feed(wm.frame(msg))
    assert isinstance(back, wm.Text)
    [again] = back.pieces()
    assert isinstance(again, TokenPiece) and again == "Hi"
    assert again.logprob == -0.25 and again.top_logprobs == (("Hi", -0.25), ("Hello", -2.0))


def test_plain_text_messages_are_as_before() -> None:
    body = wm.encode(wm.Text.of("g1", "Hi"))
    assert orjson.loads(body) == {"t": "text", "id": "g1", "texts": ["Hi"]}
    old = wm.decode(b'{"t":"text","id":"g1","texts":["a","b"]}')
    assert isinstance(old, wm.Text) and old.pieces() == ["a", "b"]
    # a request from a gateway that predates top_logprobs asks for none
    req = wm.decode(b'{"t":"request","id":"g2","model":"m","messages":[]}')
    assert isinstance(req, wm.Request) and req.to_generation().top_logprobs is None


def test_request_messages_carry_top_logprobs() -> None:
    gen = GenerationRequest(model="m", messages=({"role": "user", "content": "x"},), top_logprobs=5)
    back = wm.decode(wm.encode(wm.Request.from_generation("g3", gen)))
    assert isinstance(back, wm.Request) and back.to_generation().top_logprobs == 5


@pytest.mark.parametrize(
    "logprobs",
    [
        [[-0.5, []], None],  # not one per text
        ["x"],
        [[-0.5]],
        [[True, []]],
        [[-0.5, [["t"]]]],
        [[-0.5, [[1, -0.5]]]],
    ],
)
def test_malformed_logprobs_are_refused(logprobs: object) -> None:
    body = orjson.dumps({"t": "text", "id": "g1", "texts": ["a"], "logprobs": logprobs})
    with pytest.raises(wm.MalformedMessageError):
        wm.decode(body)


@pytest.mark.parametrize("value", [-1, 21, 2.5, "3", True])
def test_top_logprobs_is_checked(value: object) -> None:
    with pytest.raises(InvalidRequestError, match="top_logprobs"):
        GenerationRequest.from_body({"prompt": "x", "top_logprobs": value}, default_model="m")


def test_top_logprobs_range_ends_are_accepted() -> None:
    for value in (0, 20):
        req = GenerationRequest.from_body({"prompt": "x", "top_logprobs": value}, default_model="m")
        assert req.top_logprobs == value
    assert GenerationRequest.from_body({"prompt": "x"}, default_model="m").top_logprobs is None


class _PieceBackend:
    name = "pieces"

    async def generate(self, request: GenerationRequest) -> AsyncIterator[str | Finish]:
        yield TokenPiece("a", -0.1, [("a", -0.1), ("b", -2.5)])
        yield "b"  # a backend may mix plain pieces in
        yield Finish("stop", Usage(1, 2))

    async def aclose(self) -> None:
        return None


async def test_token_events_get_the_logprob_fields() -> None:
    req = GenerationRequest(model="m", messages=({"role": "user", "content": "x"},))
    events = [e async for e in model_producer(_PieceBackend(), req)]
    first, second = events[0], events[1]
    assert first.fields == {
        "text": "a",
        "logprob": -0.1,
        "top_logprobs": [{"token": "a", "logprob": -0.1}, {"token": "b", "logprob": -2.5}],
    }
    assert type(first.fields["text"]) is str
    assert second.fields == {"text": "b"}
    assert b'"logprob":-0.1' in first.json()


def _token(seq: int, text: str, **fields: object) -> Event:
    return Event(TOKEN, {"text": text, **fields}, seq=seq)


def test_openai_chunks_carry_logprobs_content_when_asked() -> None:
    event = _token(3, "é", logprob=-0.5, top_logprobs=[{"token": "é", "logprob": -0.5}])
    [entry] = logprobs_content(event) or []
    assert entry == {
        "token": "é",
        "logprob": -0.5,
        "bytes": [195, 169],
        "top_logprobs": [{"token": "é", "logprob": -0.5, "bytes": [195, 169]}],
    }
    asked = ChunkFrames("st_x", 1, "m", include_usage=False, logprobs=True)
    [line] = [x for x in asked.events([event]).split(b"\n") if x.startswith(b"data: ")]
    chunk = orjson.loads(line.removeprefix(b"data: "))
    assert chunk["choices"][0]["delta"] == {"content": "é"}
    assert chunk["choices"][0]["logprobs"] == {"content": [entry], "refusal": None}
    # not asked, or a merged catch-up frame without logprobs: null, as before
    plain = ChunkFrames("st_x", 1, "m", include_usage=False)
    assert b'"logprobs":null' in plain.events([event])
    assert b'"logprobs":null' in asked.events([_token(4, "ab", from_seq=3)])


def test_the_whole_answer_gathers_every_tokens_logprobs() -> None:
    events = [
        _token(1, "a", logprob=-0.1, top_logprobs=[]),
        _token(2, "b", logprob=-0.2, top_logprobs=[]),
        Event("done", {"finish_reason": "stop", "usage": None}, seq=3),
    ]
    answer = completion_object("st_x", 1, "m", events, logprobs=True)
    content = answer["choices"][0]["logprobs"]["content"]
    assert [(e["token"], e["logprob"]) for e in content] == [("a", -0.1), ("b", -0.2)]
    assert completion_object("st_x", 1, "m", events)["choices"][0]["logprobs"] is None
