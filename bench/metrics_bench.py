"""The cost of ``Metrics.inc`` on the delivery hot path (called once or twice per
socket write), beside a prometheus_client child's ``inc``. Prints a table."""

from __future__ import annotations

import argparse
import timeit

from prometheus_client import CollectorRegistry, Counter

from tokenwire.metrics import Metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1_000_000)
    args = parser.parse_args()
    metrics = Metrics()
    counter = Counter("x_total", "x", ["transport"], registry=CollectorRegistry())
    child = counter.labels("sse")
    cases = {
        "Metrics.inc(name, n, transport)": lambda: metrics.inc(
            "tokenwire_events_delivered_total", 3, "sse"
        ),
        "prometheus_client child.inc(n)": lambda: child.inc(3),
        "prometheus_client labels(t).inc(n)": lambda: counter.labels("sse").inc(3),
    }
    print(f"{'call':40} {'ns/call':>8}")
    for name, fn in cases.items():
        best = min(timeit.repeat(fn, number=args.n, repeat=5))
        print(f"{name:40} {best / args.n * 1e9:8.0f}")


if __name__ == "__main__":
    main()
