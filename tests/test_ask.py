"""``tokenwire ask`` and ``tokenwire models`` as real subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from tests.conftest import ServerProcess

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
ENV.pop("TOKENWIRE_MODEL", None)
ENV.pop("TOKENWIRE_MODELS", None)


def tokenwire(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tokenwire", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
    )


def first_bytes(proc: subprocess.Popen[bytes]) -> bytes:
    assert proc.stdout is not None
    return os.read(proc.stdout.fileno(), 4096)  # returns as soon as anything is there


def test_ask_prints_its_first_token_before_it_ends_and_exits_0() -> None:
    proc = tokenwire(
        "ask", "Write a story about a robot.", "--max-tokens", "60", "--temperature", "0"
    )
    first = first_bytes(proc)
    still_running = proc.poll() is None
    out, err = proc.communicate(timeout=120)
    assert first.strip()
    assert still_running, "the first token should show while the model is still generating"
    assert proc.returncode == 0, err.decode()
    assert len(first + out) > len(first)  # more followed
    stats = err.decode().strip().splitlines()[-1]
    assert stats.startswith("TTFT ") and "tokens/s" in stats


def test_ctrl_c_stops_generation_and_exits_130() -> None:
    proc = tokenwire("ask", "Write a very long story about dragons.", "--max-tokens", "2000")
    assert first_bytes(proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "stopped" in err.decode()


def test_ask_a_running_server_and_ctrl_c_stops_it_there(server: ServerProcess) -> None:
    proc = tokenwire(
        "ask", "Say hi.", "--url", server.url, "--model", "smollm2", "--max-tokens", "8"
    )
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    assert out.strip() and "TTFT" in err.decode()

    before = server.log().count("reason=stopped")
    proc = tokenwire(
        "ask",
        "Write a very long story.",
        "--url",
        server.url,
        "--model",
        "smollm2",
        "--max-tokens",
        "2000",
    )
    assert first_bytes(proc)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    assert proc.returncode == 130
    deadline = time.monotonic() + 10
    while server.log().count("reason=stopped") == before:  # DELETE reached the server
        assert time.monotonic() < deadline, server.log()[-2000:]
        time.sleep(0.05)


def test_models_lists_the_default_and_aliases() -> None:
    proc = tokenwire("models", "--models", "extra=scripted:")
    out, _ = proc.communicate(timeout=60)
    lines = out.decode().splitlines()
    assert proc.returncode == 0
    assert lines[0].startswith("* smollm2") and "SmolLM2-135M-Instruct" in lines[0]
    assert any(line.split()[0] == "extra" for line in lines)


def test_bad_url_fails_cleanly() -> None:
    proc = tokenwire("ask", "hi", "--url", "http://127.0.0.1:9")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "error" in err.decode()
