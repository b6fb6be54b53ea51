"""Brokers: the retained, append-only log behind every stream."""

from tokenwire.broker.base import Broker, Cursor, LogInfo, Retention
from tokenwire.broker.memory import MemoryBroker

__all__ = ["Broker", "Cursor", "LogInfo", "MemoryBroker", "Retention"]
