"""The Broker protocol: an append-only, retained log per stream, read through cursors.

A broker assigns ``seq`` (contiguous from 1) and an ``epoch`` per log, keeps a
bounded history (events, bytes, and a TTL after the terminal event), and lets
any number of cursors read it: first the retained history after a given seq,
then live events, with no gap and no duplicate at the seam.

Every broker passes ``tests/test_broker_conformance.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from tokenwire.events import Event


@dataclass(frozen=True, slots=True)
class Retention:
    """How much of a stream's log is kept, and for how long after it ends."""

    max_events: int = 100_000
    max_bytes: int = 64 * 1024 * 1024
    ttl_s: float = 300.0

    def __post_init__(self) -> None:
        if self.max_events < 1 or self.max_bytes < 1 or self.ttl_s < 0:
            raise ValueError("retention bounds must be positive")


@dataclass(frozen=True, slots=True)
class LogInfo:
    epoch: str
    first_seq: int  # oldest retained seq (last_seq + 1 when nothing is retained)
    last_seq: int  # 0 before the first event
    closed: bool  # the terminal event has been appended


class Cursor(Protocol):
    """One subscriber's read position in a log."""

    @property
    def position(self) -> int:
        """The last seq this cursor has returned (``after`` before the first read)."""
        ...

    async def read(self, max_events: int, timeout: float | None = None) -> list[Event]:
        """Up to ``max_events`` events after :attr:`position`, waiting up to ``timeout``
        seconds for the first one; ``[]`` on timeout. Raises
        :class:`~tokenwire.errors.StreamLaggedError` if the next event is no longer retained,
        and returns ``[]`` at once when the log is closed and fully read."""
        ...

    @property
    def ended(self) -> bool:
        """True when :meth:`read` can only answer at once from now on, with nothing:
        the log is closed and fully read, deleted, or this cursor is closed. A reader
        stops on it; reading on would spin without ever awaiting."""
        ...

    def wake(self) -> None:
        """Make a pending :meth:`read` return now (with ``[]`` if nothing is new)."""
        ...

    def close(self) -> None:
        """Detach from the log (idempotent)."""
        ...


class Broker(Protocol):
    async def create(self, stream_id: str) -> str:
        """Create an empty log and return its epoch."""
        ...

    async def append(self, stream_id: str, event: Event, *, window: bool = False) -> int:
        """Append ``event``, set and return its ``seq``. With ``window``, first wait
        while the slowest live cursor has more unread bytes than the byte window."""
        ...

    async def info(self, stream_id: str) -> LogInfo:
        """Raises :class:`~tokenwire.errors.StreamNotFoundError` for an unknown log."""
        ...

    async def cursor(self, stream_id: str, after: int) -> Cursor: ...

    async def delete(self, stream_id: str) -> None: ...

    async def aclose(self) -> None: ...
