"""Which stream each AI SDK chat id last started, and who owns the id.

``POST /v1/ai-sdk/chat`` writes it, the resume URL reads it. With the memory broker
it is a bounded dict in this process (the oldest chats are forgotten first). Over
Redis every gateway shares it, so a page reload that a load balancer sends to another
gateway still finds its chat: one hash per chat, ``tw:chat:{<chat_id>}`` with the
fields ``stream`` and ``owner``, expiring after a live log's TTL plus the retention
TTL (by then its stream has ended and its log is gone).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

from tokenwire.broker.redis import LIVE_TTL_S, RedisBroker

MAX_CHATS = 10_000
PREFIX = "tw:chat:"

# One round trip, and never a hash without its expiry.
_SET = (
    "redis.call('HSET', KEYS[1], 'stream', ARGV[1], 'owner', ARGV[2]) "
    "redis.call('PEXPIRE', KEYS[1], ARGV[3])"
)
# A chat posted again since the resumer looked keeps its new stream.
_FORGET = (
    "if redis.call('HGET', KEYS[1], 'stream') == ARGV[1] then "
    "return redis.call('DEL', KEYS[1]) end return 0"
)


@dataclass(slots=True)
class Chat:
    stream_id: str
    owner: str
    """The key fingerprint that started it, or the chat token when keys are off."""


class ChatIndex(Protocol):
    async def get(self, chat_id: str) -> Chat | None: ...

    async def set(self, chat_id: str, stream_id: str, owner: str) -> None: ...

    async def forget(self, chat_id: str, stream_id: str) -> None:
        """Forget ``chat_id`` if it still names ``stream_id``."""


class MemoryChatIndex:
    """One process's chats, bounded: the oldest are forgotten first."""

    def __init__(self, limit: int = MAX_CHATS) -> None:
        self.limit = limit
        self._chats: OrderedDict[str, Chat] = OrderedDict()

    async def get(self, chat_id: str) -> Chat | None:
        return self._chats.get(chat_id)

    async def set(self, chat_id: str, stream_id: str, owner: str) -> None:
        self._chats[chat_id] = Chat(stream_id, owner)
        self._chats.move_to_end(chat_id)
        while len(self._chats) > self.limit:
            self._chats.popitem(last=False)

    async def forget(self, chat_id: str, stream_id: str) -> None:
        chat = self._chats.get(chat_id)
        if chat is not None and chat.stream_id == stream_id:
            del self._chats[chat_id]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisChatIndex:
    """Every gateway's chats, in Redis. A lost connection raises
    :class:`~tokenwire.broker.redis_log.BrokerUnavailable` (a 503)."""

    def __init__(self, broker: RedisBroker) -> None:
        self.broker = broker
        self.ttl_ms = int((LIVE_TTL_S + broker.retention.ttl_s) * 1000)

    @staticmethod
    def key(chat_id: str) -> str:
        return f"{PREFIX}{{{chat_id}}}"

    async def get(self, chat_id: str) -> Chat | None:
        stream, owner = await self.broker.command("HMGET", self.key(chat_id), "stream", "owner")
        if stream is None or owner is None:
            return None
        return Chat(_text(stream), _text(owner))

    async def set(self, chat_id: str, stream_id: str, owner: str) -> None:
        await self.broker.command("EVAL", _SET, 1, self.key(chat_id), stream_id, owner, self.ttl_ms)

    async def forget(self, chat_id: str, stream_id: str) -> None:
        await self.broker.command("EVAL", _FORGET, 1, self.key(chat_id), stream_id)


def chat_index(broker: object) -> ChatIndex:
    """The index for a hub's broker: shared over Redis, this process's otherwise."""
    if isinstance(broker, RedisBroker):
        return RedisChatIndex(broker)
    return MemoryChatIndex()
