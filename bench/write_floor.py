"""The kernel's share of a fan-out write: CPU per ``send`` of S bytes to each of N
loopback TCP sockets that another process reads, with no Python server around it.

What a server pays per delivered event when every event is its own write, whatever
its language: the floor under ``bench.live_cost``'s kernel column. The reader waits
in ``epoll`` between writes, as a live client does, so each write also wakes it.

Run: ``python -m bench.write_floor [--conns 1000] [--rounds 200] [--sizes 60,600,1700]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import selectors
import socket
import time


def reader(port: int, conns: int, poll_s: float = 0.0) -> None:
    """Read every socket until each is closed: parked in ``epoll`` (``poll_s`` 0),
    or polling it every ``poll_s`` seconds, so that no write finds it waiting."""
    sel = selectors.DefaultSelector()
    for _ in range(conns):
        c = socket.create_connection(("127.0.0.1", port))
        c.setblocking(False)
        sel.register(c, selectors.EVENT_READ)
    left = conns
    while left:
        if poll_s:
            time.sleep(poll_s)
        for key, _ in sel.select(0 if poll_s else None):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                data = sock.recv(1 << 16)
            except BlockingIOError:
                continue
            if not data:
                sel.unregister(sock)
                left -= 1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--conns", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=200)
    p.add_argument("--sizes", default="60,600,1700")
    p.add_argument(
        "--poll-ms",
        type=float,
        default=0.0,
        help="the reader polls every this many ms instead of waiting in epoll",
    )
    args = p.parse_args()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    port = listener.getsockname()[1]
    pid = os.fork()
    if pid == 0:
        reader(port, args.conns, args.poll_ms / 1000)
        os._exit(0)
    socks = [listener.accept()[0] for _ in range(args.conns)]
    for s in socks:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    print(
        f"| bytes a write | user µs / write | kernel µs / write "
        f"| round of {args.conns} writes, ms |"
    )
    print("| --- | --- | --- | --- |")
    for size in (int(x) for x in args.sizes.split(",")):
        data = b"x" * size
        time.sleep(0.3)
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        for _ in range(args.rounds):
            for s in socks:
                s.send(data)
            time.sleep(0.005)  # paced: the reader drains and waits again
        r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        writes = args.conns * args.rounds
        user = 1e6 * (r1.ru_utime - r0.ru_utime) / writes
        kernel = 1e6 * (r1.ru_stime - r0.ru_stime) / writes
        wall = 1e3 * ((t1 - t0) / args.rounds - 0.005)
        print(f"| {size} | {user:.2f} | {kernel:.2f} | {wall:.1f} |")
    for s in socks:
        s.close()
    os.waitpid(pid, 0)
    print(f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
