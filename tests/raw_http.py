"""Bytes on a TCP socket, for requests no well-behaved client sends: odd request
targets (``//v1``, ``%2E``, no trailing slash) that httpx would normalise, silent
and slow connections, and malformed request lines."""

from __future__ import annotations

import asyncio
import base64
import os
from urllib.parse import urlsplit


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


async def request(
    url: str,
    method: str,
    target: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    timeout: float = 10.0,
) -> tuple[int, bytes]:
    """Send one request with ``target`` exactly as given; the status and the raw body."""
    host, port = address(url)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        headers = {"Connection": "close", **(headers or {})}
        lines = [f"{method} {target} HTTP/1.1", f"Host: {host}:{port}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if body or method in ("POST", "PUT"):
            lines.append(f"Content-Length: {len(body)}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        status = int(head.split(b" ", 2)[1])
        if status == 101:
            return status, b""
        rest = await asyncio.wait_for(_read_some(reader, head), timeout)
        return status, rest
    finally:
        writer.close()


async def _read_some(reader: asyncio.StreamReader, head: bytes) -> bytes:
    """The body of a response: Content-Length, chunked, or whatever comes before EOF."""
    chunked = False
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            return await reader.readexactly(int(value))
        chunked = chunked or (name == b"transfer-encoding" and b"chunked" in value.lower())
    if not chunked:
        return await reader.read(65536)
    body = bytearray()
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        body += await reader.readexactly(size + 2)
        del body[-2:]
        if size == 0:
            return bytes(body)


def websocket_headers() -> dict[str, str]:
    return {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13",
    }
