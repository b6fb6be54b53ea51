"""The gateway <-> worker message set: pure encode/decode over bytes."""

from __future__ import annotations

import struct

import pytest

from tokenwire.models.base import GenerationRequest
from tokenwire.workers import messages as wm

SAMPLES: list[wm.Message] = [
    wm.Hello(pid=123, backend="llamacpp:"),
    wm.Ready(load_ms=101.5, check_ms=20.0),
    wm.Request(
        id="g1",
        model="smollm2",
        messages=[{"role": "user", "content": "héllo\nworld ✓"}],
        max_tokens=7,
        temperature=0.0,
        top_p=1,
        stop=["\n\n", "END"],
        seed=42,
        delay_ms=1.5,
        extra={"k": [1, 2]},
    ),
    wm.Text(id="g1", texts=["Hel", "lo", " ✓", ""]),
    wm.Finish(id="g1", finish_reason="length", prompt_tokens=30, completion_tokens=7),
    wm.Error(id="g1", code="context_length_exceeded", message="too long"),
    wm.Error(id=None, code="model_error", message="the model file /x does not exist"),
    wm.Cancel(id="g1"),
]


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: m.type)
def test_every_message_round_trips(msg: wm.Message) -> None:
    assert wm.decode(wm.encode(msg)) == msg
    assert wm.Decoder().feed(wm.frame(msg)) == [msg]


def test_bytes_split_at_every_boundary_decode_the_same() -> None:
    stream = b"".join(wm.frame(m) for m in SAMPLES)
    for cut in range(len(stream) + 1):
        decoder = wm.Decoder()
        got = decoder.feed(stream[:cut]) + decoder.feed(stream[cut:])
        assert got == SAMPLES, cut
        assert decoder.buffered == 0


def test_one_byte_at_a_time() -> None:
    stream = b"".join(wm.frame(m) for m in SAMPLES)
    decoder = wm.Decoder()
    got: list[wm.Message] = []
    for i in range(len(stream)):
        got += decoder.feed(stream[i : i + 1])
    assert got == SAMPLES


def test_request_carries_a_generation_request_across() -> None:
    req = GenerationRequest(
        model="m",
        messages=({"role": "system", "content": "s"}, {"role": "user", "content": "u"}),
        max_tokens=5,
        temperature=0.3,
        top_p=0.5,
        stop=("x",),
        seed=None,
        delay_ms=2.0,
    )
    msg = wm.decode(wm.encode(wm.Request.from_generation("g9", req)))
    assert isinstance(msg, wm.Request) and msg.id == "g9"
    assert msg.to_generation() == req


def test_a_length_over_the_bound_is_refused_before_its_body_arrives() -> None:
    decoder = wm.Decoder(max_bytes=100)
    with pytest.raises(wm.MessageTooLargeError) as info:
        decoder.feed(struct.pack(">I", 101))
    assert info.value.size == 101 and info.value.limit == 100
    assert info.value.code == "worker_protocol_error"
    assert decoder.buffered <= 4
    with pytest.raises(wm.MessageTooLargeError):  # out of step for good
        decoder.feed(wm.frame(wm.Cancel("x")))


def test_frame_and_decode_refuse_oversized_bodies() -> None:
    big = wm.Text(id="g", texts=["x" * 200])
    with pytest.raises(wm.MessageTooLargeError):
        wm.frame(big, max_bytes=100)
    with pytest.raises(wm.MessageTooLargeError):
        wm.decode(wm.encode(big), max_bytes=100)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"id": "g"}', "unknown type None"),
        (b'{"t": "launch", "id": "g"}', "unknown type 'launch'"),
        (b'{"t": "cancel"}', "'id' is missing"),
        (b'{"t": "cancel", "id": 5}', "'id' has the wrong type"),
        (b'{"t": "text", "id": "g", "texts": "abc"}', "'texts' has the wrong type"),
        (b'{"t": "text", "id": "g", "texts": [1]}', "'texts' must hold strings"),
        (b'{"t": "finish", "id": "g", "finish_reason": "stop", "prompt_tokens": true}', "wrong"),
        (b'{"t": "request", "id": "g", "model": "m", "messages": [1]}', "'messages' must hold"),
        (b'{"t": "hello", "pid": 1.5}', "'pid' has the wrong type"),
    ],
)
def test_malformed_messages_raise_typed_errors(body: bytes, reason: str) -> None:
    with pytest.raises(wm.MalformedMessageError) as info:
        wm.decode(body)
    assert reason in info.value.message
    decoder = wm.Decoder()
    with pytest.raises(wm.MalformedMessageError):
        decoder.feed(struct.pack(">I", len(body)) + body)


def test_error_id_may_be_null_but_other_ids_may_not() -> None:
    assert wm.decode(b'{"t":"error","id":null,"code":"c","message":"m"}') == wm.Error(
        None, "c", "m"
    )
    with pytest.raises(wm.MalformedMessageError):
        wm.decode(b'{"t":"text","id":null,"texts":[]}')


def test_optional_fields_take_their_defaults() -> None:
    msg = wm.decode(b'{"t":"request","id":"g","model":"m","messages":[]}')
    assert isinstance(msg, wm.Request)
    assert (msg.max_tokens, msg.stop, msg.seed, msg.extra) == (256, [], None, {})
