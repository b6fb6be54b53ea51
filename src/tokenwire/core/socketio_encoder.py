"""The Socket.IO encoder: seed 004's events as engine.io packets.

Server events: ``job:open``, ``model:chunk`` (tokens), ``job:progress``,
``job:completed``, ``job:error`` (also for ``cancelled``), ``job:event`` (every
other kind; a ``tensor.chunk``'s bytes as a binary attachment) and ``error``.
An event's packets are built once and the same packet objects are queued to
every socket (python-socketio does the same for a room broadcast); a
``tensor.chunk``'s packets are built per socket as it is sent, never cached.
A batch's packets are :class:`Packets`, which also hold their WebSocket frames,
written as they are to every live WebSocket socket (server/engineio_wire.py):
built with an event's packets when those are cached on it (and charged to
retention with them), on first use for a batch of several.
Heartbeats are engine.io's own pings (``ping_interval`` = the heartbeat interval).
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Callable
from typing import Any

import socketio  # type: ignore[import-untyped]
from engineio import packet as eio_packet  # type: ignore[import-untyped]

from tokenwire.events import CANCELLED, DONE, ERROR, PROGRESS, TENSOR_CHUNK, TOKEN, Event

TRANSPORT = "socketio"
NAMESPACE = "/"


def job_message(job_id: str, event: Event) -> tuple[str, dict[str, Any]]:
    """The Socket.IO event name and payload for one tokenwire event."""
    fields = event.fields
    seq = event.seq
    kind = event.kind
    if kind == TOKEN:
        metadata: dict[str, Any] = {"kind": kind}
        if "from_seq" in fields:
            metadata["from_seq"] = fields["from_seq"]
        return "model:chunk", {
            "jobId": job_id,
            "chunk": fields["text"],
            "sequence": seq,
            "timestamp": int(event.ts * 1000),
            "metadata": metadata,
        }
    if kind == PROGRESS:
        progress = fields.get("progress")
        payload = {
            "jobId": job_id,
            "stage": fields.get("stage"),
            "step": fields.get("stage"),
            # Seed 004's front ends read a percentage; the tokenwire event has 0..1.
            "progress": None if progress is None else round(progress * 100, 3),
            "message": fields.get("message"),
            "sequence": seq,
        }
        if "from_seq" in fields:
            payload["metadata"] = {"from_seq": fields["from_seq"]}
        return "job:progress", payload
    if kind == DONE:
        return "job:completed", {
            "jobId": job_id,
            "sequence": seq,
            "finish_reason": fields.get("finish_reason"),
            "usage": fields.get("usage"),
        }
    if kind == ERROR:
        return "job:error", {
            "jobId": job_id,
            "sequence": seq,
            "code": fields.get("code"),
            "message": fields.get("message"),
        }
    if kind == CANCELLED:
        reason = fields.get("reason")
        return "job:error", {
            "jobId": job_id,
            "sequence": seq,
            "code": "cancelled",
            "message": f"the job was cancelled ({reason})",
            "reason": reason,
        }
    payload = {"jobId": job_id, "sequence": seq, "kind": kind, **fields}
    if kind == TENSOR_CHUNK:
        raw = event.binary
        if raw is None:  # an event rebuilt from JSON keeps its payload base64
            raw = base64.b64decode(fields.get("data") or b"")
        payload["data"] = bytes(raw)  # sent as a binary attachment
    return "job:event", payload


class Packets(list[Any]):
    """A batch's engine.io packets, and (:attr:`frames`) the same packets as the
    WebSocket frames engine.io's writer would send for them, joined."""

    __slots__ = ("_frames",)

    @property
    def frames(self) -> bytes:
        try:
            return self._frames
        except AttributeError:
            pass
        parts = []
        for pkt in self:
            encoded = pkt.encode()  # engine.io's own: "4" + the Socket.IO packet, or bytes
            if isinstance(encoded, str):
                parts.append(text_frame(encoded.encode()))
            else:
                parts.append(text_frame(bytes(encoded), 0x2))
        self._frames: bytes = b"".join(parts)
        return self._frames


def text_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One unmasked, unfragmented WebSocket frame (RFC 6455, 5.2), as websockets'
    ``Frame.serialize(mask=False)`` writes it: a server's frames are the same bytes
    for every connection."""
    n = len(payload)
    first = 0x80 | opcode
    if n < 126:
        head = bytes((first, n))
    elif n < 65536:
        head = bytes((first, 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((first, 127)) + n.to_bytes(8, "big")
    return head + payload


def packet_bytes(pkt: Any) -> int:
    """What one queued engine.io packet holds, about."""
    data = getattr(pkt, "data", None)
    return 64 + (len(data) if isinstance(data, str | bytes | bytearray) else 0)


class SocketIOEncoder:
    transport = TRANSPORT
    shared = True

    def __init__(self, packet_class: Callable[..., Any], merge_after: int) -> None:
        self._packet_class = packet_class
        self.merge_after = merge_after

    def packets(self, name: str, payload: dict[str, Any]) -> list[Any]:
        """The engine.io packets of one Socket.IO event (two with a binary attachment)."""
        pkt = self._packet_class(socketio.packet.EVENT, namespace=NAMESPACE, data=[name, payload])
        encoded = pkt.encode()
        if not isinstance(encoded, list):
            encoded = [encoded]
        return [eio_packet.Packet(eio_packet.MESSAGE, part) for part in encoded]

    def _event(self, job_id: str, event: Event) -> Packets:
        return Packets(self.packets(*job_message(job_id, event)))

    def _cached(self, job_id: str, event: Event) -> Packets:
        """An event's packets as cached on it: its frames built now and charged to the
        log that retains it with the packets (retention counts encoded bytes)."""
        packets = self._event(job_id, event)
        event._charge(packets.frames)
        return packets

    def open(self, stream_id: str, frame: dict[str, Any]) -> list[Any]:
        return self.packets("job:open", {"jobId": stream_id, **frame})

    def batch(self, stream_id: str, events: list[Event]) -> tuple[Packets, int]:
        if len(events) == 1 and events[0].binary is not None:
            packets = self._event(stream_id, events[0])  # a tensor chunk: never cached
        elif len(events) == 1:  # live: the event's own packets, frames and all
            packets = events[0].encoded(TRANSPORT, functools.partial(self._cached, stream_id))
        else:
            encode = functools.partial(self._cached, stream_id)
            packets = Packets(pkt for ev in events for pkt in ev.encoded(TRANSPORT, encode))
        return packets, sum(packet_bytes(pkt) - 64 for pkt in packets)

    def heartbeat(self) -> None:
        return None

    def end(self, stream_id: str, code: str, message: str) -> list[Any]:
        return self.packets("error", {"code": code, "message": message, "jobId": stream_id})
