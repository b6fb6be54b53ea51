"""The test harness's own port handling (tests/conftest.py): a free port that another
process takes before the bind is neither mistaken for the server under test nor a
failure. Real processes (python -m http.server), no timings asserted."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from tests.conftest import listens, on_a_free_port, wait_http


class NotFound(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


def test_another_processes_server_on_the_port_does_not_pass_for_ours() -> None:
    other = HTTPServer(("127.0.0.1", 0), NotFound)  # the test's own process listens
    threading.Thread(target=other.serve_forever, daemon=True).start()
    port = other.server_address[1]
    ours = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert listens(ours.pid, port) is False
        with pytest.raises(TimeoutError):
            wait_http(f"http://127.0.0.1:{port}/health", timeout=1.0, proc=ours)
        wait_http(f"http://127.0.0.1:{port}/health", timeout=5.0)  # without proc: any answer
    finally:
        ours.kill()
        ours.wait()
        other.shutdown()


def test_a_port_taken_before_the_bind_is_a_new_port(tmp_path: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    log_path = tmp_path / "server.log"
    ports: list[int] = []

    def spawn(port: int) -> subprocess.Popen[bytes]:
        # The first attempt finds its port taken, as a race with another test would.
        use = taken.getsockname()[1] if not ports else port
        ports.append(use)
        with open(log_path, "wb") as log:
            cmd = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(use)]
            return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)

    proc, port = on_a_free_port(spawn, "/", log_path)
    try:
        assert len(ports) == 2 and port == ports[1] != ports[0]
        assert listens(proc.pid, port) is True
    finally:
        proc.kill()
        proc.wait()
        taken.close()


def test_a_listener_of_a_process_the_server_started_counts() -> None:
    """A shell that starts the server (the README's blocks): its child's listener."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    shell = subprocess.Popen(
        ["bash", "-c", f"{sys.executable} -m http.server --bind 127.0.0.1 {port} & wait"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/", timeout=20, proc=shell)
        assert listens(shell.pid, port) is True
    finally:
        os.killpg(shell.pid, signal.SIGTERM)
        shell.wait(10)
