"""The Redis job queue: generation jobs that exactly one model worker claims.

Keys (one set per Redis database):

- ``tw:jobs`` a Redis stream with the consumer group ``tw:workers``: one entry per
  job waiting, fields ``s`` (stream id), ``r`` (the ``request`` worker message,
  tokenwire.workers.messages) and ``a`` (attempts so far). A worker claims an entry
  with ``XREADGROUP``; claimed entries are acknowledged and deleted at once, so
  ``XLEN`` minus the group's pending count is what waits;
- ``tw:jobs:running`` a hash: stream id -> the node that runs it;
- ``tw:nodes`` a sorted set: node -> the Redis time (ms) its liveness runs out.
  A node that runs jobs renews it every ``ttl / 3``; a node not in it, or past its
  score, is gone.

Every change that must happen exactly once is one Lua script, timed by Redis's own
clock (``TIME``), so nodes on machines whose clocks differ agree on who is gone:

- :meth:`JobQueue.submit` refuses with 503 ``no_workers`` when no node is alive to
  run jobs, and 503 ``queue_full`` when ``max_queue`` jobs already wait;
- :meth:`JobQueue.confirm` turns a delivered entry into a running job only while
  the entry is still this node's (a reaper may have handed it on meanwhile);
- :meth:`JobQueue.reap` ends jobs that waited past ``max_wait_s`` unclaimed with
  ``error {code: "queue_timeout"}``, and hands on what gone nodes held. A job a gone node had
  claimed but not started yet (nothing is in its log) is queued again, at most
  ``max_attempts`` times; a job that was running is ended by exactly one reaper,
  which appends ``error {code: "worker_lost"}`` to its log. A running job is not
  retried: a worker that only stalled (not died) past its liveness could append
  again, and its events would interleave with a second run's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from tokenwire.broker.redis import RedisBroker
from tokenwire.broker.redis_log import BrokerUnavailable
from tokenwire.errors import OverloadedError, StreamNotFound
from tokenwire.events import Event

log = logging.getLogger("tokenwire")

JOBS_KEY = "tw:jobs"
GROUP = "tw:workers"
RUNNING_KEY = "tw:jobs:running"
NODES_KEY = "tw:nodes"

_NOW = "local t = redis.call('TIME') local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"

# KEYS: nodes   ARGV: node, ttl_ms
HEARTBEAT = (
    _NOW
    + """
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
-- nodes gone for an hour are forgotten (their jobs were reaped long ago)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 3600000)
return 1
"""
)

# KEYS: jobs, nodes   ARGV: group, max_queue, stream id, request, attempts
# Returns {1, entry id}, {-1} no live node runs jobs, {-2} the queue is full.
SUBMIT = (
    _NOW
    + """
if redis.call('ZCOUNT', KEYS[2], now, '+inf') == 0 then return {-1} end
local waiting = redis.call('XLEN', KEYS[1]) - redis.call('XPENDING', KEYS[1], ARGV[1])[1]
if waiting >= tonumber(ARGV[2]) then return {-2} end
return {1, redis.call('XADD', KEYS[1], '*', 's', ARGV[3], 'r', ARGV[4], 'a', ARGV[5])}
"""
)

# KEYS: jobs, running   ARGV: group, entry id, node, stream id
CONFIRM = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #p == 0 or p[1][2] ~= ARGV[3] then return 0 end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[4], ARGV[3])
return 1
"""

# KEYS: jobs   ARGV: group, entry id, node
# A delivered job this node cannot run after all: queued again (attempts unchanged).
GIVE_BACK = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #p == 0 or p[1][2] ~= ARGV[3] then return 0 end
local e = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if #e == 0 then return 0 end
redis.call('XADD', KEYS[1], '*', unpack(e[1][2]))
return 1
"""

# KEYS: running, nodes   ARGV: stream id, node
# Registers a job this node runs without the queue (a gateway's own request).
RUN_HERE = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

# KEYS: running   ARGV: stream id, node
RELEASE = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then redis.call('HDEL', KEYS[1], ARGV[1]) end
return 1
"""

# KEYS: running, nodes   ARGV: stream id, node
# 1 for exactly one caller: the job's node is gone and the job is now the caller's to end.
REAP_RUNNING = (
    _NOW
    + """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
local until_ms = redis.call('ZSCORE', KEYS[2], ARGV[2])
if until_ms and tonumber(until_ms) > now then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
"""
)

# KEYS: jobs, nodes   ARGV: group, entry id, consumer, max_attempts
# A delivered entry whose consumer is gone: {1, sid} queued again, {2, sid} out of
# attempts (the caller ends the stream), {0} not (or no longer) a gone node's.
REQUEUE = (
    _NOW
    + """
local until_ms = redis.call('ZSCORE', KEYS[2], ARGV[3])
if until_ms and tonumber(until_ms) > now then return {0} end
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #p == 0 or p[1][2] ~= ARGV[3] then return {0} end
local e = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if #e == 0 then return {0} end
local f = {}
for i = 1, #e[1][2], 2 do f[e[1][2][i]] = e[1][2][i + 1] end
local attempts = tonumber(f['a'] or '0') + 1
if attempts >= tonumber(ARGV[4]) then return {2, f['s']} end
redis.call('XADD', KEYS[1], '*', 's', f['s'], 'r', f['r'], 'a', attempts)
return {1, f['s']}
"""
)


# KEYS: jobs   ARGV: group, max_wait_ms, count
# Jobs that waited longer than max_wait_ms and nobody claimed: removed, their stream
# ids returned (each to exactly one caller, which ends the stream).
EXPIRE_WAITING = (
    _NOW
    + """
local cutoff = now - tonumber(ARGV[2])
local out = {}
for _, e in ipairs(redis.call('XRANGE', KEYS[1], '-', cutoff, 'COUNT', ARGV[3])) do
  if #redis.call('XPENDING', KEYS[1], ARGV[1], e[1], e[1], 1) == 0 then
    redis.call('XDEL', KEYS[1], e[1])
    for i = 1, #e[2], 2 do if e[2][i] == 's' then table.insert(out, e[2][i + 1]) end end
  end
end
return out
"""
)

# KEYS: nodes   ARGV: node
LEAVE = """
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
"""


class JobQueueFullError(OverloadedError):
    """503 ``queue_full``: ``max_queue`` jobs already wait for a model worker."""

    code = "queue_full"

    def __init__(self, max_queue: int) -> None:
        super().__init__(
            f"{max_queue} generation jobs already wait for a model worker; try again shortly"
        )
        self.max_queue = max_queue


class NoWorkersError(OverloadedError):
    """503 ``no_workers``: no live node takes generation jobs."""

    code = "no_workers"

    def __init__(self) -> None:
        super().__init__(
            "no model worker is running: start `tokenwire worker --broker …`, or a gateway "
            "with --model-workers 1 or more"
        )


@dataclass(frozen=True, slots=True)
class Job:
    entry_id: str
    stream_id: str
    request: bytes
    attempts: int


class JobQueue:
    """The queue, the running jobs and node liveness in one Redis database."""

    def __init__(
        self,
        broker: RedisBroker,
        *,
        node_id: str | None = None,
        max_queue: int = 1024,
        ttl_s: float = 3.0,
        max_attempts: int = 3,
        max_wait_s: float = 60.0,
    ) -> None:
        self.broker = broker
        self.redis = broker.redis
        self.node_id = node_id or broker.node_id
        self.max_queue = max_queue
        self.ttl_s = ttl_s
        self.max_attempts = max_attempts
        self.max_wait_s = max_wait_s
        r = self.redis
        self._heartbeat = r.register_script(HEARTBEAT)
        self._submit = r.register_script(SUBMIT)
        self._confirm = r.register_script(CONFIRM)
        self._run_here = r.register_script(RUN_HERE)
        self._release = r.register_script(RELEASE)
        self._reap_running = r.register_script(REAP_RUNNING)
        self._requeue = r.register_script(REQUEUE)
        self._expire_waiting = r.register_script(EXPIRE_WAITING)
        self._give_back = r.register_script(GIVE_BACK)
        self._leave = r.register_script(LEAVE)
        self._group_ready = False
        self._calm_until: float | None = 0.0  # None: Redis was unreachable at the last reap

    async def _call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        await self.ensure_group()
        return await self._redis(self.broker._call(script, keys, args))

    async def _redis(self, call: Awaitable[Any]) -> Any:
        import redis.exceptions as rx

        try:
            return await call
        except self.broker._errors as exc:
            raise BrokerUnavailable(str(exc) or type(exc).__name__) from None
        except rx.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # The queue is gone (a Redis that lost its data): made again on the next call.
            self._group_ready = False
            raise BrokerUnavailable("the job queue was reset") from None

    async def ensure_group(self) -> None:
        """Create the queue and its consumer group (idempotent)."""
        if self._group_ready:
            return
        import redis.exceptions as rx

        try:
            await self.broker.command("XGROUP", "CREATE", JOBS_KEY, GROUP, "0", "MKSTREAM")
        except rx.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    async def heartbeat(self) -> None:
        """Renew this node's liveness for ``ttl_s``."""
        await self._call(self._heartbeat, [NODES_KEY], [self.node_id, int(self.ttl_s * 1000)])

    async def leave(self) -> None:
        """This node stops taking jobs: gone at once, so what it had claimed but not
        started is queued again now rather than when its liveness runs out."""
        await self._call(self._leave, [NODES_KEY], [self.node_id])

    async def submit(self, stream_id: str, request: bytes, *, model: str = "") -> None:
        """Create the stream's log (so every gateway can read it now) and queue its job."""
        await self.broker.create(stream_id, model=model, owner="queue")
        # Whoever claims the job writes the log, not this node: were this node to end
        # it (a reaper), its append must not expect seq 1 and mistake the writer's
        # first event for its own.
        self.broker._expected.pop(stream_id, None)
        try:
            reply = await self._call(
                self._submit,
                [JOBS_KEY, NODES_KEY],
                [GROUP, self.max_queue, stream_id, request, 0],
            )
        except BaseException:
            await self.broker.delete(stream_id)
            raise
        if reply[0] != 1:
            await self.broker.delete(stream_id)
            if reply[0] == -1:
                raise NoWorkersError()
            raise JobQueueFullError(self.max_queue)

    async def claim(self, block_ms: int = 1000) -> Job | None:
        """The next job for this node (delivered, not yet confirmed), or None."""
        await self.ensure_group()
        reply = await self._redis(
            self.redis.xreadgroup(GROUP, self.node_id, {JOBS_KEY: ">"}, count=1, block=block_ms)
        )
        if not reply:
            return None
        _, entries = reply[0]
        for entry_id, fields in entries:
            if not fields:  # deleted after delivery
                continue
            return Job(
                entry_id.decode(),
                fields[b"s"].decode(),
                bytes(fields[b"r"]),
                int(fields.get(b"a", b"0")),
            )
        return None

    async def confirm(self, job: Job) -> bool:
        """Make ``job`` this node's running job; False when it is no longer ours."""
        reply = await self._call(
            self._confirm,
            [JOBS_KEY, RUNNING_KEY],
            [GROUP, job.entry_id, self.node_id, job.stream_id],
        )
        return bool(reply)

    async def give_back(self, job: Job) -> None:
        """Queue ``job`` again (at the back): delivered here, but no slot is free."""
        await self._call(self._give_back, [JOBS_KEY], [GROUP, job.entry_id, self.node_id])

    async def run_here(self, stream_id: str) -> None:
        """Register a job this node runs without the queue, so that it is reaped too."""
        await self._call(self._run_here, [RUNNING_KEY, NODES_KEY], [stream_id, self.node_id])

    async def release(self, stream_id: str) -> None:
        """The job ended here: forget it (only if it is still this node's)."""
        await self._call(self._release, [RUNNING_KEY], [stream_id, self.node_id])

    async def reap(self) -> list[str]:
        """End or queue again what gone nodes held; the streams this call ended.

        Not for ``ttl_s`` after Redis was unreachable here: every node's liveness may
        have run out during the outage, and each needs a renewal's time to say it is
        still there before anyone counts it gone."""
        try:
            running = await self._redis(self.redis.hgetall(RUNNING_KEY))
        except BrokerUnavailable:
            self._calm_until = None
            raise
        now = time.monotonic()
        if self._calm_until is None:
            self._calm_until = now + self.ttl_s
        if now < self._calm_until:
            return []
        return await self._reap(running)

    async def _reap(self, running: dict[bytes, bytes]) -> list[str]:
        ended: list[str] = []
        pairs = list(running.items())
        alive = await self._alive({node for _, node in pairs})
        for sid, node in pairs:
            if node in alive:
                continue
            won = await self._call(self._reap_running, [RUNNING_KEY, NODES_KEY], [sid, node])
            if won and await self._end_lost(sid.decode(), node.decode()):
                ended.append(sid.decode())
        await self.ensure_group()
        pending = await self._redis(self.redis.xpending_range(JOBS_KEY, GROUP, "-", "+", 100))
        alive = await self._alive({entry["consumer"] for entry in pending})
        for entry in pending:
            entry_id, consumer = entry["message_id"], entry["consumer"]
            if consumer in alive:
                continue
            how, *rest = await self._call(
                self._requeue,
                [JOBS_KEY, NODES_KEY],
                [GROUP, entry_id, consumer, self.max_attempts],
            )
            if how == 1:
                log.info(
                    "event=job_requeued stream=%s lost_node=%s",
                    rest[0].decode(),
                    consumer.decode(),
                )
            elif how == 2 and await self._end_lost(rest[0].decode(), consumer.decode()):
                ended.append(rest[0].decode())
        expired = await self._call(
            self._expire_waiting, [JOBS_KEY], [GROUP, int(self.max_wait_s * 1000), 100]
        )
        for sid in expired:
            event = Event.error(
                "queue_timeout",
                f"no model worker took this job within {self.max_wait_s:g}s",
            )
            with contextlib.suppress(StreamNotFound, RuntimeError):
                await self.broker.append(sid.decode(), event)
                ended.append(sid.decode())
        return ended

    async def _alive(self, nodes: set[bytes]) -> set[bytes]:
        if not nodes:
            return set()
        now_s, now_us = await self.broker.command("TIME")
        now = int(now_s) * 1000 + int(now_us) // 1000
        order = sorted(nodes)
        scores = await self.broker.command("ZMSCORE", NODES_KEY, *order)
        return {n for n, s in zip(order, scores, strict=True) if s is not None and float(s) > now}

    async def _end_lost(self, stream_id: str, node: str) -> bool:
        """Append ``worker_lost`` to a log whose writer is gone. Not as its writer (no
        expected seq): a writer that was only stalled and appends once more cannot make
        this append look like a retried one of its own; whichever terminal lands first
        ends the log, and the other append is refused."""
        event = Event.error(
            "worker_lost",
            f"the model worker running this stream (node {node}) stopped answering",
        )
        try:
            await self.broker.append(stream_id, event)
        except (StreamNotFound, RuntimeError):
            return False  # gone already, or it ended before its node went
        log.info("event=worker_lost stream=%s lost_node=%s", stream_id, node)
        return True


async def every(
    interval_s: float, action: Callable[[], Awaitable[Any]], what: str, stop: asyncio.Event
) -> None:
    """Run ``action`` every ``interval_s`` until ``stop`` is set; a Redis outage is
    logged and retried at the next tick, never fatal."""
    while not stop.is_set():
        try:
            await action()
        except BrokerUnavailable as exc:
            log.warning("%s: %s", what, exc.message)
        except Exception:
            log.exception("%s failed", what)
        try:
            await asyncio.wait_for(stop.wait(), interval_s)
        except TimeoutError:
            pass


def new_node_id(role: str) -> str:
    return f"{role}_{secrets.token_hex(6)}"
