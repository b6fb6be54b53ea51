"""End-to-end fixtures: Debian Chromium driven by playwright, a real nginx in front of
the server, the React test page built with esbuild, and the screenshot folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, ServerProcess, free_port, wait_http

CHROMIUM = os.environ.get("TOKENWIRE_CHROMIUM", "/usr/bin/chromium")
# design.md §6, plus what keeps a headless run quiet and self-contained.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]
ARTIFACTS = ROOT / "test-artifacts"
REACT_APP = Path(__file__).resolve().parent / "react-app"


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    """One Chromium for these tests; each test gets its own context (fresh storage).
    Package scope: playwright's sync API and its event loop are gone before any
    other test's asyncio loop runs."""
    assert os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} missing: run scripts/setup.sh --dev"
    from playwright import sync_api

    user_data = tempfile.mkdtemp(prefix="tokenwire-chromium-")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[*CHROMIUM_ARGS, f"--disk-cache-dir={user_data}/cache"],
            headless=True,
        )
        try:
            yield browser
        finally:
            browser.close()
    shutil.rmtree(user_data, ignore_errors=True)


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 860})
    ctx.set_default_timeout(15_000)
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def page(context: Any) -> Iterator[Any]:
    """A page (tab) whose uncaught script errors fail the test."""
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    assert not errors, f"uncaught errors in the page: {errors}"


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


# -- nginx ---------------------------------------------------------------------------

NGINX_CONF = """\
daemon off;
{user}
worker_processes 1;
pid {prefix}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            # Default buffering on purpose: the server's X-Accel-Buffering: no is
            # what keeps event streams live through this proxy.
            proxy_pass {upstream};
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
        }}
    }}
}}
"""


@dataclass
class Nginx:
    url: str
    config: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def nginx_config(prefix: Path, port: int, upstream: str) -> str:
    # As root the workers would drop to "nobody", who cannot enter a private temp dir.
    user = "user root;" if os.geteuid() == 0 else ""
    return NGINX_CONF.format(user=user, prefix=prefix, port=port, upstream=upstream)


@pytest.fixture(scope="module")
def nginx(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    """Debian nginx on a free port, reverse-proxying to the shared tokenwire server."""
    exe = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    assert exe is not None, "nginx missing: run scripts/setup.sh --dev"
    prefix = tmp_path_factory.mktemp("nginx")
    port = free_port()
    config = nginx_config(prefix, port, server.url)
    conf_path = prefix / "nginx.conf"
    conf_path.write_text(config)
    log_path = prefix / "nginx.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [exe, "-p", str(prefix), "-c", str(conf_path), "-e", "stderr"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/healthz", timeout=15, proc=proc)
    except (RuntimeError, TimeoutError) as exc:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"nginx did not start: {exc}\n{log_path.read_text()}") from exc
    yield Nginx(url, config, proc, log_path)
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- the React page ------------------------------------------------------------------


@pytest.fixture(scope="session")
def react_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/e2e/react-app built with esbuild: a folder with index.html and app.js."""
    node = shutil.which("node")
    assert node is not None, "node missing: run scripts/setup.sh --dev"
    if not (REACT_APP / "node_modules" / "esbuild").is_dir():
        started = time.monotonic()
        done = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=REACT_APP,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, (
            f"npm ci failed after {time.monotonic() - started:.0f}s:\n{done.stderr}"
        )
    out = tmp_path_factory.mktemp("react-app")
    built = subprocess.run(
        [node, "build.mjs", str(out)], cwd=REACT_APP, capture_output=True, text=True, timeout=120
    )
    assert built.returncode == 0, f"esbuild failed:\n{built.stdout}\n{built.stderr}"
    return out


@pytest.fixture(scope="module")
def react_host(react_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The React page at ``/react-app/`` and the tokenwire API on one origin
    (tests/e2e/react_host.py); the model defaults to ``scripted``."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("react-host") / "host.log"
    env = {**os.environ, "TOKENWIRE_MODEL": "scripted", "PYTHONUNBUFFERED": "1"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.e2e.react_host", str(react_bundle), str(port)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/healthz", proc=proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
