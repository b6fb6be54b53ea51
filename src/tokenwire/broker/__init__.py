"""Brokers: the retained, append-only log behind every stream.

:func:`broker_from_url` picks one by URL scheme: ``memory://`` (the default, one
process) or ``redis://host:port/db`` (``rediss://`` for TLS; any number of
gateways and workers).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tokenwire.broker.base import Broker, Cursor, LogInfo, Retention
from tokenwire.broker.memory import MemoryBroker


def _memory(url: str, retention: Retention, window_bytes: int, **_: Any) -> Broker:
    return MemoryBroker(retention, window_bytes=window_bytes)


def _redis(url: str, retention: Retention, window_bytes: int, **options: Any) -> Broker:
    from tokenwire.broker.redis import RedisBroker

    return RedisBroker(url, retention, window_bytes=window_bytes, **options)


SCHEMES: dict[str, Callable[..., Broker]] = {
    "memory": _memory,
    "redis": _redis,
    "rediss": _redis,
    "unix": _redis,
}


def broker_from_url(
    url: str,
    retention: Retention | None = None,
    window_bytes: int = 8 * 1024 * 1024,
    **options: Any,
) -> Broker:
    """The broker ``url`` names; ValueError for an unknown scheme."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else url.lower()
    factory = SCHEMES.get(scheme)
    if factory is None:
        known = ", ".join(f"{s}://" for s in SCHEMES)
        raise ValueError(f"unknown broker {url!r}: expected one of {known}")
    return factory(url, retention or Retention(), window_bytes, **options)


def is_shared(url: str) -> bool:
    """True when processes can share the broker (not the in-process memory one)."""
    return not url.lower().startswith("memory")


__all__ = [
    "SCHEMES",
    "Broker",
    "Cursor",
    "LogInfo",
    "MemoryBroker",
    "Retention",
    "broker_from_url",
    "is_shared",
]
