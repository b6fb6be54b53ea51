"""A fault-injecting TCP proxy for the client's resilience tests (asyncio, in-process).

It sits between a client and a real server and breaks connections on purpose:

- **cut**: after a random number of bytes from the server, the connection is
  closed (FIN) or reset (RST), at any byte offset: inside HTTP headers, a
  chunk, an SSE line, a WebSocket frame;
- **stall**: after a random number of bytes, forwarding stops in both
  directions but both sockets stay open (no FIN, no RST), as a dead NAT or a
  hung proxy would; only a heartbeat timeout can notice;
- **outage**: every live connection is cut and new ones are refused (the
  listening socket is closed: ECONNREFUSED) for a while.

Which connection gets which fault is drawn from a seeded RNG. Every
connection's pipes are tasks owned by the proxy and ended by :meth:`aclose`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

Plan = tuple[str, int]  # ("cut" | "stall" | "pass", byte budget of server -> client data)
TAIL_BYTES = 16384


@dataclass
class ProxyStats:
    connections: int = 0
    cuts: int = 0
    resets: int = 0
    stalls: int = 0
    refused_windows: int = 0
    bytes_down: int = 0
    plans: list[Plan] = field(default_factory=list)
    cut_tails: list[bytes] = field(default_factory=list)
    """The last bytes (up to TAIL_BYTES) each cut connection delivered: where it was cut."""


def random_plan(
    rng: random.Random,
    *,
    small: tuple[int, int] = (50, 1500),
    large: tuple[int, int] = (1500, 20000),
    large_share: float = 0.15,
    stall_every: int = 0,
) -> Callable[[int], Plan]:
    """A plan per connection number: cut after a random budget, mostly small (many
    cuts) and sometimes large (so a big catch-up frame still gets through); every
    ``stall_every``-th connection stalls instead."""

    def plan(n: int) -> Plan:
        lo, hi = large if rng.random() < large_share else small
        budget = rng.randint(lo, hi)
        if stall_every and n % stall_every == stall_every - 1:
            return ("stall", budget)
        return ("cut", budget)

    return plan


class _Pair:
    """One proxied connection: its sockets, its fault and its two pipe tasks."""

    def __init__(
        self,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        server: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        self.creader, self.cwriter = client
        self.sreader, self.swriter = server
        self.stalled = False
        self.released = asyncio.Event()  # the client left: a stall may end
        self.tasks: list[asyncio.Task[None]] = []

    def abort(self, *, reset: bool) -> None:
        self.released.set()
        for writer in (self.cwriter, self.swriter):
            transport = writer.transport
            if reset:
                sock = transport.get_extra_info("socket")
                if sock is not None:
                    with contextlib.suppress(OSError):
                        # SO_LINGER 0: close() sends RST instead of FIN.
                        sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
            transport.abort() if reset else transport.close()


class FaultProxy:
    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        plan: Callable[[int], Plan] | None = None,
        seed: int = 0,
        spare_head: bool = False,
    ) -> None:
        self.target = (target_host, target_port)
        # Cut only after the head of the connection's first HTTP response: its
        # bytes do not count against the budget.
        self.spare_head = spare_head
        self.rng = random.Random(seed)
        self.plan = plan or random_plan(self.rng)
        self.faults = True
        self.stats = ProxyStats()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._pairs: set[_Pair] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def outage(self, seconds: float) -> None:
        """Cut every live connection and refuse new ones for ``seconds``."""
        self.stats.refused_windows += 1
        if self._server is not None:
            self._server.close()
            self._server = None
        for pair in list(self._pairs):
            pair.abort(reset=True)
        await asyncio.sleep(seconds)
        for _ in range(50):  # the port may linger briefly after close
            try:
                await self.start()
                return
            except OSError:
                await asyncio.sleep(0.05)
        raise RuntimeError("the proxy could not listen again on its port")

    def cut_all(self) -> None:
        for pair in list(self._pairs):
            pair.abort(reset=False)

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for pair in list(self._pairs):
            pair.abort(reset=True)
        tasks = [t for pair in self._pairs for t in pair.tasks] + list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _accept(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        stats = self.stats
        n = stats.connections
        stats.connections += 1
        try:
            server = await asyncio.open_connection(*self.target)
        except OSError:
            cwriter.transport.abort()
            return
        pair = _Pair((creader, cwriter), server)
        plan: Plan = self.plan(n) if self.faults else ("pass", 0)
        stats.plans.append(plan)
        self._pairs.add(pair)
        loop = asyncio.get_running_loop()
        pair.tasks = [
            loop.create_task(self._up(pair)),
            loop.create_task(self._down(pair, plan)),
        ]
        try:
            await asyncio.gather(*pair.tasks, return_exceptions=True)
        finally:
            self._pairs.discard(pair)
            pair.abort(reset=False)

    async def _up(self, pair: _Pair) -> None:
        """Client to server, unchanged; while stalled, read and drop (to see the client leave)."""
        try:
            while True:
                data = await pair.creader.read(65536)
                if not data:
                    break
                if pair.stalled:
                    continue
                pair.swriter.write(data)
                await pair.swriter.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            # The client left: end the whole pair (this is what ends a stall).
            pair.abort(reset=False)

    async def _down(self, pair: _Pair, plan: Plan) -> None:
        """Server to client, with the connection's fault."""
        mode, budget = plan
        stats = self.stats
        tail = b""
        in_head = self.spare_head
        try:
            while True:
                data = await pair.sreader.read(65536)
                if not data:
                    break
                if in_head:
                    end = (tail + data).find(b"\r\n\r\n")
                    head = data if end < 0 else data[: end + 4 - len(tail)]
                    in_head = end < 0
                    pair.cwriter.write(head)
                    await pair.cwriter.drain()
                    stats.bytes_down += len(head)
                    tail = (tail + head)[-TAIL_BYTES:]
                    data = data[len(head) :]
                    if not data:
                        continue
                if mode != "pass" and self.faults and len(data) >= budget:
                    if budget:
                        pair.cwriter.write(data[:budget])
                        await pair.cwriter.drain()
                    stats.bytes_down += budget
                    stats.cut_tails.append((tail + data[:budget])[-TAIL_BYTES:])
                    if mode == "stall":
                        stats.stalls += 1
                        pair.stalled = True
                        await pair.released.wait()  # until the client leaves (or aclose)
                        return
                    reset = self.rng.random() < 0.5
                    stats.cuts += 1
                    stats.resets += reset
                    pair.abort(reset=reset)
                    return
                budget -= len(data)
                stats.bytes_down += len(data)
                tail = (tail + data)[-TAIL_BYTES:]
                pair.cwriter.write(data)
                await pair.cwriter.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            pair.abort(reset=False)
