"""Control across nodes over Redis: a stop through any gateway, and viewer presence.

Per stream ``S``, beside its log (the ``{S}`` hash tag keeps them in its slot):

- ``tw:{S}:c`` a pub/sub channel. The node running ``S`` subscribes to it while
  the stream runs. Messages: ``s<reason>`` stop, ``v`` the viewers elsewhere
  changed (count them again).
- ``tw:{S}:x`` a string: the stop asked (its reason), written before the publish.
  Pub/sub drops a message its subscriber is not connected for, so a stop sent
  while the runner was not subscribed (just starting, reconnecting after a Redis
  restart, a job still queued) is read by the runner once its subscription is
  confirmed. Confirmation first, then the read: a stop is never missed.
- ``tw:{S}:v`` a hash: per node, ``<viewers>:<deadline>`` (milliseconds on the
  Redis clock, so nodes' clocks never matter). Each node rewrites its entries
  every ``presence_ttl_s / 3``; an entry past its deadline counts for nothing
  and is removed, so a dead gateway's viewers keep a stream alive at most
  ``presence_ttl_s`` (then the grace runs).

Why pub/sub and a channel per stream, not a Redis stream of commands: ``PUBLISH``
answers how many subscribers heard it, which tells a stop whether any node runs
the stream now; a message reaches that one node only (a node-wide channel would
reach every node); stops are rare and idempotent, and what pub/sub does not
keep, the marker does. A stop costs the asker ``SET`` + ``PUBLISH`` and a poll of
the log's state until it is closed (2 ms doubling to 100 ms).

A stop that no node hears, and that has not ended the stream within
``stop_wait_s``, finds no runner: the asker appends ``cancelled {reason}`` itself,
so the stream ends for every reader instead of waiting out the log's TTL. A stop
that a runner heard but that did not end the stream in time is a
:class:`StopTimeoutError` (504), never a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol

from tokenwire.broker.redis_log import meta_key, viewers_key
from tokenwire.errors import TokenwireError
from tokenwire.events import Event

log = logging.getLogger("tokenwire.broker")
_lifecycle = logging.getLogger("tokenwire")  # the logger of stream.log_event


class Node(Protocol):
    """What the control plane uses of its :class:`~tokenwire.broker.redis.RedisBroker`
    (which imports this module)."""

    node_id: str
    url: str
    _errors: tuple[type[BaseException], ...]

    async def describe(self, stream_id: str) -> dict[str, Any] | None: ...
    async def command(self, name: str, *args: Any) -> Any: ...
    async def append(self, stream_id: str, event: Event, *, window: bool = False) -> int: ...


class Stream(Protocol):
    """What the control plane uses of a :class:`tokenwire.stream.Stream` (the stream
    module imports the brokers: importing it here would close a circle)."""

    id: str
    subscribers: int
    status: Any  # StreamStatus
    hub: Any  # Hub: _stop, _idle_stop, _viewers_elsewhere
    _task: asyncio.Task[None] | None


STOP_WAIT_S = 5.0
PRESENCE_TTL_S = 15.0
STOP_MARK_TTL_MS = 24 * 3600 * 1000  # as long as a live log without a writer lives
BACKOFF_S = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
CHANNELS_PER_COMMAND = 256


def control_channel(stream_id: str) -> str:
    return f"tw:{{{stream_id}}}:c"


def stop_key(stream_id: str) -> str:
    return f"tw:{{{stream_id}}}:x"


def _stream_of(channel: bytes | str) -> str:
    name = channel.decode() if isinstance(channel, bytes) else channel
    return name[len("tw:{") : -len("}:c")]


_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: viewers, meta   ARGV: node, count, ttl_ms
# A count for a log that is gone is not written (it would outlive it).
PRESENCE = (
    _NOW
    + """
if ARGV[2] == '0' then return redis.call('HDEL', KEYS[1], ARGV[1]) end
if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
local ttl = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ':' .. (now + ttl))
if redis.call('PTTL', KEYS[1]) < 2 * ttl then redis.call('PEXPIRE', KEYS[1], 2 * ttl) end
return 1
"""
)

# KEYS: viewers, stop mark   ARGV: node (its own entry is not counted)
# Returns {viewers on other nodes, the stop asked or false}; drops expired entries.
CHECK = (
    _NOW
    + """
local n = 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local c, deadline = string.match(all[i + 1], '^(%d+):(%d+)$')
  if c == nil or tonumber(deadline) < now then redis.call('HDEL', KEYS[1], all[i])
  elseif all[i] ~= ARGV[1] then n = n + tonumber(c) end
end
return {n, redis.call('GET', KEYS[2])}
"""
)


class StopTimeoutError(TokenwireError):
    """The node running a stream heard the stop, but the stream had not ended in time."""

    status = 504
    code = "stop_timeout"

    def __init__(self, stream_id: str, waited_s: float) -> None:
        super().__init__(
            f"stream {stream_id!r} runs on another node, which got the stop but had not "
            f"ended it within {waited_s:g}s; it may still end shortly"
        )
        self.stream_id = stream_id


class ControlPlane:
    """One node's side of stops and viewer presence over the broker's Redis.

    As a runner it subscribes to the channel of every stream its hub runs
    (:meth:`watch`) and stops them when asked; as a gateway it publishes how many
    viewers it has of each stream another node runs (:meth:`viewing`) and asks
    the runner to stop one (:meth:`stop`). Tasks start on first use and end in
    :meth:`aclose`."""

    def __init__(
        self,
        broker: Node,
        *,
        stop_wait_s: float = STOP_WAIT_S,
        presence_ttl_s: float = PRESENCE_TTL_S,
    ) -> None:
        self.broker = broker
        self.stop_wait_s = stop_wait_s
        self.presence_ttl_s = presence_ttl_s
        import redis.asyncio as aioredis
        import redis.exceptions as rx
        from redis.asyncio.retry import Retry
        from redis.backoff import ExponentialBackoff, NoBackoff

        # Clients of its own, off the broker's pool. Commands retry a connection that a
        # Redis restart closed; the listener reconnects itself (redis-py's reconnect
        # would subscribe again behind its back).
        self.redis = aioredis.Redis.from_url(
            broker.url, socket_connect_timeout=2, socket_timeout=10, max_connections=8,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 3),
            retry_on_error=[rx.ConnectionError, rx.TimeoutError],
        )  # fmt: skip
        self._client = aioredis.Redis.from_url(
            broker.url, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0)
        )
        self._presence = self.redis.register_script(PRESENCE)
        self._check = self.redis.register_script(CHECK)
        self._running: dict[str, Stream] = {}  # subscribed: this node runs them
        self._elsewhere: dict[str, int] = {}  # viewers on other nodes, per running stream
        self._viewing: dict[str, int] = {}  # this node's viewers of streams others run
        self._dirty: dict[str, bool] = {}  # presence to write: sid -> publish a change
        self._to_check: set[str] = set()  # running streams to count viewers of again
        self._idle: set[str] = set()  # running streams whose grace ran out: stop if none
        self._to_sub: set[str] = set()
        self._to_unsub: set[str] = set()
        self._pubsub: Any = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._closed = False
        self.connected = False

    # -- the runner's side ---------------------------------------------------------

    def watch(self, stream: Stream) -> None:
        """Listen for stops of ``stream`` (run by this node) until its task ends."""
        if self._closed:
            return
        sid = stream.id
        if self._running.get(sid) is stream:
            return
        if sid in self._viewing:  # read here as another node's, now run here
            self.viewing(sid, 0)
        self._running[sid] = stream
        self._idle.discard(sid)
        self._to_unsub.discard(sid)
        self._to_sub.add(sid)
        if stream._task is not None:
            stream._task.add_done_callback(lambda _: self._unwatch(sid, stream))
        self._spawn("listen", self._listen)
        self._spawn("subscribe", self._sync_subscriptions)

    def _unwatch(self, sid: str, stream: Stream) -> None:
        if self._running.get(sid) is not stream:
            return
        del self._running[sid]
        self._elsewhere.pop(sid, None)
        self._idle.discard(sid)
        self._to_sub.discard(sid)
        self._to_unsub.add(sid)
        if not self._closed:
            self._spawn("subscribe", self._sync_subscriptions)

    def confirm_idle(self, stream: Stream) -> None:
        """The grace of ``stream`` ran out here: stop it unless other nodes have viewers."""
        self._idle.add(stream.id)
        self._to_check.add(stream.id)
        self._spawn("check", self._run_checks)

    def _on_message(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        channel = message.get("channel")
        if channel is None or kind not in ("message", "subscribe"):
            return
        sid = _stream_of(channel)
        stream = self._running.get(sid)
        if stream is None:
            return
        data = message.get("data")
        if kind == "message" and isinstance(data, bytes) and data.startswith(b"s"):
            self._stop(stream, data[1:].decode(errors="replace") or "stopped")
            return
        # Subscribed (maybe again, after a reconnect): a stop asked meanwhile is in the
        # mark. Or the viewers elsewhere changed.
        self._to_check.add(sid)
        self._spawn("check", self._run_checks)

    def _stop(self, stream: Stream, reason: str) -> None:
        if stream.status.ended:
            return
        # stream.log_event's line; imported from there, it would close a circle
        _lifecycle.info(
            "event=remote_stop stream=%s transport=control reason=%s", stream.id, reason
        )
        stream.hub._stop(stream, Event.cancelled(reason))

    async def _run_checks(self) -> None:
        failures = 0
        while self._to_check and not self._closed:
            batch = [sid for sid in self._to_check if sid in self._running]
            self._to_check.clear()
            if not batch:
                return
            node = self.broker.node_id
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for sid in batch:
                        keys = [viewers_key(sid), stop_key(sid)]
                        await self._check(keys=keys, args=[node], client=pipe)
                    replies = await pipe.execute()
            except Exception as exc:
                # Not known now: the streams run on, and are checked again.
                log.debug("viewers not counted (%s)", exc)
                self._to_check.update(batch)
                await asyncio.sleep(BACKOFF_S[min(failures, len(BACKOFF_S) - 1)])
                failures += 1
                continue
            failures = 0
            for sid, (count, mark) in zip(batch, replies, strict=True):
                self._apply_check(sid, int(count), mark)
            if self._elsewhere:
                self._spawn("tick", self._tick)

    def _apply_check(self, sid: str, count: int, mark: bytes | None) -> None:
        stream = self._running.get(sid)
        if stream is None:
            return
        if mark:
            self._stop(stream, mark.decode(errors="replace"))
            return
        if count:
            self._elsewhere[sid] = count
        else:
            self._elsewhere.pop(sid, None)
        if sid in self._idle and (count or stream.subscribers):
            self._idle.discard(sid)  # someone is back: the grace is over, not run out
        if sid in self._idle:
            self._idle.discard(sid)
            stream.hub._idle_stop(stream)
        else:
            stream.hub._viewers_elsewhere(stream, count)

    # -- a gateway's side --------------------------------------------------------------

    def viewing(self, stream_id: str, count: int) -> None:
        """This node now has ``count`` viewers of ``stream_id``, which another node runs."""
        if self._closed:
            return
        before = self._viewing.get(stream_id, 0)
        if count > 0:
            self._viewing[stream_id] = count
        else:
            self._viewing.pop(stream_id, None)
        changed = (before > 0) != (count > 0)
        self._dirty[stream_id] = self._dirty.get(stream_id, False) or changed
        self._spawn("presence", self._flush_presence)
        if self._viewing:
            self._spawn("tick", self._tick)

    async def _flush_presence(self) -> None:
        failures = 0
        while self._dirty and not self._closed:
            batch, self._dirty = self._dirty, {}
            if await self._write_presence(batch):
                failures = 0
                continue
            # Redis away: write them again (bounded: one entry per stream viewed here).
            for sid, changed in batch.items():
                self._dirty[sid] = self._dirty.get(sid, False) or changed
            await asyncio.sleep(BACKOFF_S[min(failures, len(BACKOFF_S) - 1)])
            failures += 1

    async def _write_presence(self, batch: dict[str, bool]) -> bool:
        node = self.broker.node_id
        ttl_ms = int(self.presence_ttl_s * 1000)
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for sid, changed in batch.items():
                    count = self._viewing.get(sid, 0)
                    keys = [viewers_key(sid), meta_key(sid)]
                    await self._presence(keys=keys, args=[node, count, ttl_ms], client=pipe)
                    if changed:
                        pipe.publish(control_channel(sid), b"v")
                await pipe.execute()
        except Exception as exc:
            log.debug("presence not written (%s)", exc)
            return False
        return True

    async def _tick(self) -> None:
        """Every ``presence_ttl_s / 3``: rewrite this node's entries before they expire,
        and count again the viewers that keep a stream of this node alive (a gateway
        that died sends no change)."""
        every = self.presence_ttl_s / 3
        while not self._closed and (self._viewing or self._elsewhere):
            await asyncio.sleep(every)
            if self._viewing:
                await self._write_presence(dict.fromkeys(self._viewing, False))
            idle = [
                s for s, r in self._running.items() if s in self._elsewhere and not r.subscribers
            ]
            if idle:
                self._to_check.update(idle)
                self._spawn("check", self._run_checks)

    async def stop(self, stream_id: str, reason: str) -> dict[str, Any] | None:
        """Stop a stream another node runs; its state once ended (None: no such log)."""
        broker = self.broker
        found = await broker.describe(stream_id)
        if found is None or found["closed"]:
            return found
        await broker.command("SET", stop_key(stream_id), reason, "PX", STOP_MARK_TTL_MS)
        heard = await broker.command("PUBLISH", control_channel(stream_id), b"s" + reason.encode())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.stop_wait_s
        delay = 0.002
        while True:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)
            found = await broker.describe(stream_id)
            if found is None:
                return None
            if found["closed"]:
                await broker.command("DEL", stop_key(stream_id))
                return found
            if loop.time() >= deadline:
                break
        if heard or await broker.command("PUBLISH", control_channel(stream_id), b"v"):
            raise StopTimeoutError(stream_id, self.stop_wait_s)
        # Nobody runs it (its node died, or a job no worker took): end it here.
        log.warning("no node runs %s; its stop ends it here", stream_id)
        with contextlib.suppress(RuntimeError):  # it ended meanwhile
            await broker.append(stream_id, Event.cancelled(reason))
        await broker.command("DEL", stop_key(stream_id))
        return await broker.describe(stream_id)

    # -- the connection ----------------------------------------------------------------

    def _spawn(self, name: str, fn: Any) -> None:
        task = self._tasks.get(name)
        if task is not None and not task.done():
            return
        self._tasks[name] = asyncio.get_running_loop().create_task(fn(), name=f"tokenwire:{name}")

    async def _connect(self) -> None:
        pubsub = self._client.pubsub()
        # Always subscribed to one channel, so reading never meets an idle connection.
        await pubsub.subscribe(f"tw:node:{self.broker.node_id}")
        self._pubsub = pubsub
        self._to_unsub.clear()
        self._to_sub = set(self._running)
        await self._send_subscriptions(pubsub)

    async def _listen(self) -> None:
        failures = 0
        while not self._closed:
            try:
                if self._pubsub is None:
                    await self._connect()
                message = await self._pubsub.get_message(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._closed:
                    return
                self.connected = False
                await self._drop_pubsub()
                if failures == 0:
                    log.warning("control connection lost (%s); reconnecting", exc)
                await asyncio.sleep(BACKOFF_S[min(failures, len(BACKOFF_S) - 1)])
                failures += 1
                continue
            if failures:
                log.info("control connection back after %d tries", failures)
                failures = 0
            self.connected = True
            if message is not None:
                self._on_message(message)
            await asyncio.sleep(0)  # get_message can answer at once, again and again

    async def _sync_subscriptions(self) -> None:
        pubsub = self._pubsub
        if pubsub is None:
            return  # _connect subscribes everything running
        try:
            await self._send_subscriptions(pubsub)
        except self.broker._errors:
            pass  # the listener reconnects and subscribes everything running

    async def _send_subscriptions(self, pubsub: Any) -> None:
        while self._to_sub or self._to_unsub:
            if self._to_unsub:
                sids = [
                    self._to_unsub.pop()
                    for _ in range(min(len(self._to_unsub), CHANNELS_PER_COMMAND))
                ]
                await pubsub.unsubscribe(*map(control_channel, sids))
            if self._to_sub:
                sids = [
                    self._to_sub.pop() for _ in range(min(len(self._to_sub), CHANNELS_PER_COMMAND))
                ]
                await pubsub.subscribe(*map(control_channel, sids))

    async def _drop_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def aclose(self) -> None:
        """End the tasks and remove this node's viewer entries (best effort)."""
        self._closed = True
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            with contextlib.suppress(BaseException):
                await task
        self._tasks.clear()
        gone = dict.fromkeys(self._viewing, True)
        self._viewing.clear()
        if gone:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._write_presence(gone), 2.0)
        await self._drop_pubsub()
        for client in (self._client, self.redis):
            with contextlib.suppress(Exception):
                await client.aclose()
        self._running.clear()
        self._elsewhere.clear()
