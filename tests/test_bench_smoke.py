"""The benches without a test of their own, at tiny sizes, so they keep running:
``python -m bench.live_cost`` (every variant of every transport in its own server,
a row of figures each, no event lost or reordered) and ``python -m
bench.control_bench`` (stops and presence over a real redis-server). No timings
asserted (the figures are in docs/performance.md and docs/scaling.md)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("driver", "broadcast", "coalesce=5")


@pytest.mark.timeout(300)
def test_live_cost_prints_a_row_per_variant_and_transport_and_loses_nothing() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable, "-m", "bench.live_cost", "--subscribers", "4", "--tokens", "20",
        "--rate", "200", "--transports", "sse,ndjson", "--variants", ",".join(VARIANTS),
        "--client-procs", "1",
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = done.stdout[done.stdout.index("| transport | variant |") :]
    for transport in ("sse", "ndjson"):
        for variant in VARIANTS:
            row = re.compile(
                rf"^\| {transport} \| {re.escape(variant)} \| [\d,]+ \| [\d.]+ \| [\d.]+ "
                r"\| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \| \d+% \| \d+% \| ok \|$",
                re.M,
            )
            assert len(row.findall(table)) == 1, (transport, variant, table)


@pytest.mark.timeout(120)
def test_control_bench_reports_stops_and_moves_from_a_real_redis() -> None:
    """``python -m bench.control_bench`` (its own redis-server) at tiny sizes."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "bench.control_bench", "--stops", "3", "--moves", "1"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    for label in ("to the producer", "terminal in the log", "the other gateway's reader"):
        assert re.search(rf"^  {label} +[\d.]+ +[\d.]+$", out, re.M), (label, out)
    per_stop = re.search(r"^  Redis commands per stop: ([\d.]+)", out, re.M)
    per_move = re.search(r"^  Redis commands per move: ([\d.]+)", out, re.M)
    assert per_stop and float(per_stop.group(1)) > 0, out
    assert per_move and float(per_move.group(1)) > 0, out
    assert "the stream ran through every move" in out
    assert "'reason': 'no_subscribers'" in out  # it ends once the last viewer is gone
