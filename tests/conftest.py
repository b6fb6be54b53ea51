"""Shared fixtures: free ports and real tokenwire server processes."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent

# redis_server, redis_url, own_redis: a real redis-server for the Redis broker tests
pytest_plugins = ["tests.redis_fixture"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _family(pid: int) -> set[int]:
    """``pid`` and every process descended from it (a shell's servers, say)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # gone meanwhile
        parents[int(stat.parent.name)] = int(text[text.rfind(")") + 2 :].split()[1])
    family, grew = {pid}, True
    while grew:
        more = {child for child, parent in parents.items() if parent in family} - family
        family |= more
        grew = bool(more)
    return family


def listens(pid: int, port: int) -> bool | None:
    """Whether process ``pid``, or one it started, holds the socket listening on
    127.0.0.1:``port``; None where /proc cannot tell."""
    try:
        inodes = set()
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.split(":")[1], 16) == port:
                inodes.add(f"socket:[{inode}]")
        if not inodes:
            return False
        for member in _family(pid):
            try:
                if any(os.readlink(fd) in inodes for fd in Path(f"/proc/{member}/fd").iterdir()):
                    return True
            except OSError:
                continue  # gone meanwhile, or not ours to read
        return False
    except OSError:
        return None


def wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Until ``url`` answers below 500. With ``proc``, only ``proc``'s own listener
    counts: a free port can be taken by another test's server between ``free_port``
    and the bind, and that server must not pass for this one."""
    deadline = time.monotonic() + timeout
    port = urlsplit(url).port
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                if proc is None or port is None or listens(proc.pid, port) is not False:
                    return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


BIND_RACE = b"address already in use"


def on_a_free_port(
    spawn: Callable[[int], subprocess.Popen[bytes]], path: str, log_path: Path, attempts: int = 3
) -> tuple[subprocess.Popen[bytes], int]:
    """``spawn(port)`` on a free port until it answers ``path``: a port that another
    process took before the bind (its log says so) is a new port, not a failure."""
    for attempt in range(attempts):
        port = free_port()
        proc = spawn(port)
        try:
            wait_http(f"http://127.0.0.1:{port}{path}", proc=proc)
            return proc, port
        except RuntimeError:  # it exited
            proc.wait()
            if attempt + 1 == attempts or BIND_RACE not in log_path.read_bytes().lower():
                raise
        except BaseException:  # no answer in time, or interrupted: stop it too
            proc.kill()
            proc.wait()
            raise
    raise AssertionError("unreachable")


@dataclass
class ServerProcess:
    """A real ``tokenwire serve`` process on a free port."""

    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    stopping: bool = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.stopping = True
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
        log_path = tmp_path_factory.mktemp("server") / "server.log"
        full_env = {
            **os.environ,
            "TOKENWIRE_MODEL": "scripted",
            "TOKENWIRE_HEARTBEAT_S": "1",
            "PYTHONUNBUFFERED": "1",
            **env,
        }

        def spawn(port: int) -> subprocess.Popen[bytes]:
            cmd = [sys.executable, "-m", "tokenwire", "serve", "--port", str(port), *args]
            with open(log_path, "wb") as log_file:
                return subprocess.Popen(
                    cmd, env=full_env, stdout=log_file, stderr=subprocess.STDOUT
                )

        proc, port = on_a_free_port(spawn, "/healthz", log_path)
        server = ServerProcess(f"http://127.0.0.1:{port}", proc, log_path)
        started.append(server)
        _WATCHED.append(server)
        return server

    yield start
    for server in started:
        server.stop()
        if server in _WATCHED:
            _WATCHED.remove(server)


@pytest.fixture(scope="session")
def server(start_server: ServerFactory) -> ServerProcess:
    """One shared server with the defaults (scripted model, 1 s heartbeat)."""
    return start_server()


# -- freeze detector --------------------------------------------------------------

_WATCHED: list[ServerProcess] = []
"""Every server ``start_server`` started and that is still up."""

HEALTHZ_EVERY_S = 0.25
HEALTHZ_TIMEOUT_S = 1.0


def _healthz_answers(url: str, timeout: float) -> bool:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        response.read()
        return response.status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


class HealthzWatch:
    """Polls ``/healthz`` of the test's running servers in a thread, every 0.25 s, and
    notes each time one did not answer within 1 s: the event loop was stalled.

    The thread only waits on sockets, so a busy test (which holds the GIL in its own
    process) does not delay it past a switch interval; a server that is stopping or
    gone is not a stall. A test that stalls a server on purpose calls
    :meth:`ignore` with it."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self.stalls: list[str] = []
        self._ignored: set[int] = set()
        self._request = request
        self._before = {id(server) for server in _WATCHED}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="healthz-watch", daemon=True)
        self._thread.start()

    def ignore(self, server: ServerProcess) -> None:
        self._ignored.add(id(server))

    def _live(self, server: ServerProcess) -> bool:
        alive = not server.stopping and server.proc.poll() is None
        return alive and id(server) not in self._ignored

    def _servers(self) -> list[ServerProcess]:
        """The servers this test uses: those it was handed as fixtures, and those
        started while it ran. Polling every server of the session instead grew the
        suite's load with each server started (hundreds of requests a second)."""
        watched = list(_WATCHED)  # tokenwire servers only (not a peer's, e.g. llama_cpp.server)
        try:
            handed = {id(value) for value in self._request.node.funcargs.values()}
        except RuntimeError:  # pytest was adding a fixture value just then
            handed = set()
        return [s for s in watched if id(s) not in self._before or id(s) in handed]

    def _run(self) -> None:
        while not self._done.wait(HEALTHZ_EVERY_S):
            for server in self._servers():
                if not self._live(server):
                    continue
                started = time.monotonic()
                if _healthz_answers(server.url, HEALTHZ_TIMEOUT_S):
                    continue
                # Gone meanwhile (stopped, killed, exited): not a stall.
                time.sleep(0.2)
                if self._live(server) and not self._done.is_set():
                    self.stalls.append(
                        f"{server.url}/healthz did not answer within {HEALTHZ_TIMEOUT_S}s "
                        f"(asked {time.monotonic() - started:.2f}s before noticing)"
                    )

    def close(self) -> None:
        self._done.set()
        self._thread.join(HEALTHZ_TIMEOUT_S + 2)


@pytest.fixture(autouse=True)
def healthz_watch(request: pytest.FixtureRequest) -> Iterator[HealthzWatch]:
    """Fails any test during which a server it uses did not answer ``/healthz``
    within 1 s."""
    watch = HealthzWatch(request)
    yield watch
    watch.close()
    if watch.stalls:
        pytest.fail("the server stalled during the test: " + "; ".join(watch.stalls[:5]))
