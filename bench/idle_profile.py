"""Where an idle connection's memory goes: tokenwire's bench app in this process,
K idle connections of one transport from client processes, then tracemalloc and a
gc object count, before and after, divided by K.

Python-heap bytes per connection come from tracemalloc (grouped by the allocating
file and line); what RSS grows beyond that is outside the Python heap (kernel
socket buffers are not in RSS; uvloop's and httptools' C structs and the
allocator's slack are).

``--protocols serve`` (the default) runs uvicorn with ``tokenwire serve``'s
protocol classes (server/connections.py's guarded HTTP protocol, the deflate-capable
WebSocket protocol); ``plain`` with uvicorn's own, as the race's server does.

``--access-log`` turns the access lines on (server/access_log.py), as ``tokenwire
serve`` runs; they are off here otherwise, as in the race's and scale bench's servers.

Run ``python -m bench.idle_profile --transport ws --conns 1000``.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
import threading
import time
import tracemalloc
from collections import Counter
from typing import Any

import psutil
import uvicorn

from bench.apps import tokenwire_app
from bench.race import PEERS, PeerClients
from bench.race_apps import uvicorn_protocols
from bench.sse_fanout import _free_port


class _Here:
    """Enough of bench.sse_fanout.Server for PeerClients: the port."""

    def __init__(self, port: int) -> None:
        self.port = port


def _types() -> Counter[str]:
    return Counter(type(o).__name__ for o in gc.get_objects())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--transport", default="ws", choices=("sse", "ndjson", "ws", "socketio"))
    p.add_argument("--conns", type=int, default=1000)
    p.add_argument("--top", type=int, default=12)
    p.add_argument("--protocols", default="serve", choices=("serve", "plain"))
    p.add_argument(
        "--access-log", action="store_true", help="access lines on, as under tokenwire serve"
    )
    args = p.parse_args(argv)
    if args.access_log:
        access = logging.getLogger("tokenwire.access")
        access.setLevel(logging.INFO)
        access.propagate = False
        access.addHandler(logging.NullHandler())  # formatted and dropped
    peer = next(x for x in PEERS if x.name == "tokenwire" and x.transport == args.transport)
    port = _free_port()
    config = uvicorn.Config(
        tokenwire_app(), host="127.0.0.1", port=port, loop="uvloop", access_log=False,
        log_level="warning", **uvicorn_protocols(args.protocols),
    )  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    import httpx

    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    body = {"model": "bench", "prompt": "never", "max_tokens": 1, "delay_ms": 0}
    stream_id = http.post("/v1/streams", json=body).json()["id"]
    here: Any = _Here(port)

    def hold(n: int) -> PeerClients:
        c = PeerClients(here, peer, stream_id, n, mode="idle", timeout=300.0)
        c.ready()
        return c

    hold(50).close_idle()  # warm-up
    time.sleep(0.5)
    proc = psutil.Process(os.getpid())
    gc.collect()
    tracemalloc.start(8)
    before, types0, rss0 = tracemalloc.take_snapshot(), _types(), proc.memory_info().rss
    clients = hold(args.conns)
    time.sleep(1.0)
    gc.collect()
    after, types1, rss1 = tracemalloc.take_snapshot(), _types(), proc.memory_info().rss
    clients.close_idle()
    k = args.conns
    stats = after.compare_to(before, "lineno")
    heap = sum(s.size_diff for s in stats)
    print(
        f"tokenwire {args.transport} ({args.protocols} protocols"
        f"{', access log' if args.access_log else ''}), {k} idle connections: RSS "
        f"+{(rss1 - rss0) / k / 1024:.1f} KiB per connection (under tracemalloc), "
        f"Python heap +{heap / k / 1024:.1f} KiB"
    )
    print("\nPython heap per connection, by allocating line:")
    for s in stats[: args.top]:
        frame = s.traceback[0]
        where = f"{os.path.relpath(frame.filename)}:{frame.lineno}"
        print(f"  {s.size_diff / k:8.0f} B  {s.count_diff / k:5.1f} blocks  {where}")
    print("\nobjects per connection, by type:")
    grown = (types1 - types0).most_common(args.top)
    print("  " + ", ".join(f"{name} {n / k:.1f}" for name, n in grown))
    server.should_exit = True
    thread.join(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
