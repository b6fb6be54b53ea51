"""WebSocket permessage-deflate against a real ``tokenwire serve``, read frame by
frame off a raw socket: negotiated by default, text frames compressed (RSV1 set,
and they inflate to the JSON events), binary tensor chunk frames sent as they
are (RSV1 clear, raw chunk bytes); ``TOKENWIRE_WS_COMPRESSION=0`` negotiates
nothing."""

from __future__ import annotations

import base64
import json
import os
import socket
import zlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
from websockets.frames import Frame, Opcode

from tests.conftest import ServerFactory, ServerProcess
from tokenwire.tensors import decode_chunk_frame

pytestmark = pytest.mark.slow

OFFER = "permessage-deflate; client_max_window_bits"


@dataclass
class RawFrame:
    opcode: Opcode
    rsv1: bool
    data: bytes


class RawWebSocket:
    """A WebSocket client that parses frames without extensions, so RSV1 shows."""

    def __init__(self, server: ServerProcess) -> None:
        url = urlsplit(server.url)
        self.sock = socket.create_connection((url.hostname, url.port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET /v1/ws HTTP/1.1\r\nHost: {url.netloc}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: {OFFER}\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(4096)
        head, rest = head.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        assert lines[0].startswith("HTTP/1.1 101"), lines[0]
        self.headers = {
            k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])
        }
        self.buffer = bytearray(rest)
        self.inflate = zlib.decompressobj(-15)

    def send_text(self, message: dict[str, Any]) -> None:
        frame = Frame(Opcode.TEXT, json.dumps(message).encode())
        self.sock.sendall(frame.serialize(mask=True, extensions=[]))

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            data = self.sock.recv(65536)
            assert data, "the server closed the connection"
            self.buffer += data
        out = bytes(self.buffer[:n])
        del self.buffer[:n]
        return out

    def recv(self) -> RawFrame:
        """One frame as RFC 6455 §5.2 lays it out (a server's frames are unmasked)."""
        first, second = self._read(2)
        length = second & 0x7F
        if length >= 126:
            length = int.from_bytes(self._read(2 if length == 126 else 8))
        assert first & 0x80, "tokenwire sends unfragmented messages"
        return RawFrame(Opcode(first & 0x0F), bool(first & 0x40), self._read(length))

    def text(self, frame: RawFrame) -> dict[str, Any]:
        """A text frame's JSON, inflated when it was compressed (RFC 7692 §7.2.2)."""
        data = frame.data
        if frame.rsv1:
            data = self.inflate.decompress(data + b"\x00\x00\xff\xff")
        message: dict[str, Any] = json.loads(data)
        return message

    def close(self) -> None:
        self.sock.close()


def read_stream(ws: RawWebSocket, request: dict[str, Any]) -> list[tuple[RawFrame, Any]]:
    """Start ``request``; every data frame up to the terminal event, each with its
    decoded message (JSON for text, the chunk event for binary)."""
    ws.send_text({"op": "start", "id": "c1", "request": request})
    out: list[tuple[RawFrame, Any]] = []
    while True:
        frame = ws.recv()
        if frame.opcode is Opcode.BINARY:
            out.append((frame, decode_chunk_frame(frame.data)[1]))
        elif frame.opcode is Opcode.TEXT:
            message = ws.text(frame)
            out.append((frame, message))
            if message.get("kind") in ("done", "error", "cancelled"):
                return out


def test_text_frames_compressed_and_tensor_frames_not(server: ServerProcess) -> None:
    ws = RawWebSocket(server)
    try:
        assert "permessage-deflate" in ws.headers.get("sec-websocket-extensions", "")
        tokens = read_stream(ws, {"model": "scripted", "prompt": "hi", "max_tokens": 50})
        text = [(f, m) for f, m in tokens if f.opcode is Opcode.TEXT]
        assert text and all(f.rsv1 for f, _ in text)
        assert sum(1 for _, m in text if m.get("kind") == "token") >= 1
        assert text[-1][1]["kind"] == "done"
        # Compressed frames of a token stream are far smaller than their JSON.
        assert sum(len(f.data) for f, _ in text) < 0.6 * sum(len(json.dumps(m)) for _, m in text)

        params = {"width": 16, "height": 16, "steps": 3, "delay_ms": 0, "seed": 3}
        frames = read_stream(ws, {"pipeline": "denoise", "params": params})
        binary = [(f, m) for f, m in frames if f.opcode is Opcode.BINARY]
        assert binary, "the tensor chunks came as binary frames"
        # Sent as they are: RSV1 clear, and the raw chunk bytes parse as a chunk.
        assert not any(f.rsv1 for f, _ in binary)
        assert all(m["kind"] == "tensor.chunk" for _, m in binary)
        assert all(f.rsv1 for f, _ in frames if f.opcode is Opcode.TEXT)
        assert frames[-1][1]["kind"] == "done"
    finally:
        ws.close()


def test_compression_can_be_turned_off(start_server: ServerFactory) -> None:
    server = start_server(TOKENWIRE_WS_COMPRESSION="0")
    ws = RawWebSocket(server)
    try:
        assert "sec-websocket-extensions" not in ws.headers
        frames = read_stream(ws, {"model": "scripted", "prompt": "hi", "max_tokens": 20})
        assert not any(f.rsv1 for f, _ in frames)
        assert frames[-1][1]["kind"] == "done"
    finally:
        ws.close()
    server.stop()
