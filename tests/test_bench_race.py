"""The race bench (``tokenwire bench race --quick``) at tiny sizes: every peer runs,
its row has figures, and no client lost or reordered an event. No timings asserted."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.race import PEERS

ROOT = Path(__file__).resolve().parent.parent


# Eight servers' worth of client processes on a shared 2-core machine: minutes, not seconds.
@pytest.mark.timeout(900)
def test_race_quick_has_every_peer_with_numbers_and_no_loss(tmp_path: Path) -> None:
    out = tmp_path / "race.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable, "-m", "bench.race", "--quick", "--subscribers", "3", "--tokens", "12",
        "--idle", "3", "--json", str(out),
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    data = json.loads(out.read_text())
    labels = {row["label"] for row in data["rows"]}
    assert labels == {"N=3 M=12 paced 1000/s", "N=3 M=12 burst"}
    for label in labels:
        rows = {(r["peer"], r["transport"]): r for r in data["rows"] if r["label"] == label}
        assert set(rows) == {(p.name, p.transport) for p in PEERS}
        for row in rows.values():
            assert row["ok"] and row["failed"] == 0
            assert row["delivered"] == row["expected"] == 3 * 12
            assert row["events_per_s"] > 0
            assert 0 < row["p50_ms"] <= row["p99_ms"]
            assert row["cpu_us_per_delivery"] >= 0
    idle = {(r["peer"], r["transport"]) for r in data["idle_bytes_per_conn"]}
    assert idle == {(p.name, p.transport) for p in PEERS}
    # The printed table: one row per peer and scenario, each with its figures.
    for p in PEERS:
        row = re.compile(
            rf"^\| N=3 M=12 (paced 1000/s|burst) \| {re.escape(p.name)} \| {p.transport} "
            r"\| [\d,]+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \| -?[\d.]+ KiB \| [\d.]+ \| \d+% "
            r"\| ok \|$",
            re.M,
        )
        assert len(row.findall(done.stdout)) == 2, (p, done.stdout)
