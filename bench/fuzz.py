"""``tokenwire bench fuzz --minutes N``: the suite's fuzz tests (tests/test_fuzz_*.py),
run round after round for N minutes, each round with ``--scale`` times the suite's
examples and fresh random seeds. Prints a table, one row per round; stops at the
first failure (pytest prints the falsifying example) and exits 1.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tokenwire bench fuzz", description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to fuzz (10)")
    parser.add_argument(
        "--scale", type=float, default=20.0, help="examples per round, times the suite's (20)"
    )
    parser.add_argument(
        "-k", default=None, help="only the fuzz tests matching this pytest expression"
    )
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.scale <= 0:
        parser.error("--minutes and --scale must be positive")
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_fuzz_*.py"))
    if not files:
        print("no tests/test_fuzz_*.py in this checkout", file=sys.stderr)
        return 2
    env = {**os.environ, "TOKENWIRE_FUZZ_SCALE": str(args.scale)}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files]
    if args.k:
        cmd += ["-k", args.k]
    deadline = time.monotonic() + args.minutes * 60
    print(f"{'round':>5}  {'seconds':>8}  result   (x{args.scale:g} examples, {len(files)} files)")
    round_no = 0
    while time.monotonic() < deadline:
        round_no += 1
        started = time.monotonic()
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        took = time.monotonic() - started
        if done.returncode != 0:
            print(f"{round_no:>5}  {took:>8.1f}  FAILED")
            print(done.stdout[-20000:], done.stderr[-5000:], sep="\n")
            return 1
        print(f"{round_no:>5}  {took:>8.1f}  ok", flush=True)
    print(f"{round_no} rounds, no failure")
    return 0


if __name__ == "__main__":
    sys.exit(main())
