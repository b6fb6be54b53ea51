"""Shared fixtures: free ports and real tokenwire server processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


@dataclass
class ServerProcess:
    """A real ``tokenwire serve`` process on a free port."""

    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


ServerFactory = Callable[..., ServerProcess]


@pytest.fixture(scope="session")
def start_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    """Start a real server: ``start_server(TOKENWIRE_GRACE_S="1", ...)`` (env overrides).

    The default model is ``scripted`` so tests are deterministic; tests of the
    embedded model ask for it by name."""
    started: list[ServerProcess] = []

    def start(*args: str, **env: str) -> ServerProcess:
        port = free_port()
        log_path = tmp_path_factory.mktemp("server") / "server.log"
        full_env = {
            **os.environ,
            "TOKENWIRE_MODEL": "scripted",
            "TOKENWIRE_HEARTBEAT_S": "1",
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        cmd = [sys.executable, "-m", "tokenwire", "serve", "--port", str(port), *args]
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(cmd, env=full_env, stdout=log_file, stderr=subprocess.STDOUT)
        server = ServerProcess(f"http://127.0.0.1:{port}", proc, log_path)
        started.append(server)
        wait_http(server.url + "/healthz", proc=proc)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def server(start_server: ServerFactory) -> ServerProcess:
    """One shared server with the defaults (scripted model, 1 s heartbeat)."""
    return start_server()
