"""``Client.start(...)`` is typed (issue 13, deliverable 6): ``mypy --strict``
rejects a misspelt request parameter and accepts the real ones, on the async client
and on the sync facade."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SNIPPET = """
from tokenwire.client import Client, SyncClient


async def main() -> None:
    async with Client("http://127.0.0.1:8000") as client:
        await client.start(model="scripted", prompt="hi", max_tokens=5, stop=["."], seed=1)
        await client.start(prompt="hi", max_tokenz=5)


def sync() -> None:
    with SyncClient("http://127.0.0.1:8000") as client:
        client.start(prompt="hi", temperature=0.2, delay_ms=10)
        client.start(prompt="hi", temprature=0.2)
        client.start(prompt="hi", max_tokens="five")
"""


def test_mypy_strict_catches_a_misspelt_start_parameter(tmp_path: Path) -> None:
    path = tmp_path / "uses_client.py"
    path.write_text(SNIPPET)
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors = [line for line in done.stdout.splitlines() if ": error:" in line]
    assert done.returncode == 1, done.stdout
    assert len(errors) == 3, done.stdout
    assert 'Unexpected keyword argument "max_tokenz"' in errors[0] and ":8:" in errors[0]
    assert 'Unexpected keyword argument "temprature"' in errors[1] and ":14:" in errors[1]
    assert '"max_tokens"' in errors[2] and ":15:" in errors[2]
