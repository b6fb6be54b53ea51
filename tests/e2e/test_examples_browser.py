"""examples/fastapi_app in Chromium: the FastAPI app (tokenwire mounted at /tw)
under uvicorn, its pages built with esbuild from the npm packages setup installed
(nothing is downloaded here), the React ``useChat`` page and the Socket.IO page
each asked a question."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, ServerProcess, on_a_free_port
from tests.e2e.pages import expected_text

pytestmark = pytest.mark.slow

APP = ROOT / "examples" / "fastapi_app"


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert (APP / "node_modules" / "esbuild").is_dir(), "run scripts/setup.sh --dev (npm ci)"
    out = tmp_path_factory.mktemp("example-pages")
    built = subprocess.run(
        ["node", "build.mjs", str(out)], cwd=APP, capture_output=True, text=True, timeout=120
    )
    assert built.returncode == 0, f"esbuild failed:\n{built.stdout}\n{built.stderr}"
    return out


@pytest.fixture(scope="module")
def example_app(pages: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log_path = tmp_path_factory.mktemp("example-app") / "app.log"
    env = {**os.environ, "TOKENWIRE_MODEL": "scripted", "EXAMPLE_PAGES": str(pages)}

    def spawn(port: int) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "uvicorn", "app:app", "--port", str(port)]
        with open(log_path, "wb") as log:
            return subprocess.Popen(cmd, cwd=APP, env=env, stdout=log, stderr=subprocess.STDOUT)

    proc, port = on_a_free_port(spawn, "/api/health", log_path)
    app = ServerProcess(f"http://127.0.0.1:{port}", proc, log_path)
    try:
        yield app
    finally:
        app.stop()


def test_react_use_chat_page(page: Any, example_app: ServerProcess) -> None:
    page.goto(f"{example_app.url}/?model=scripted&max_tokens=20&delay_ms=10")
    assistant = '[data-role="assistant"]'
    for turn in (1, 2):
        page.fill("#prompt", f"question {turn}")
        page.click("#send")
        page.wait_for_function(
            "([sel, n]) => document.querySelectorAll(sel).length === n", arg=[assistant, turn]
        )
        page.wait_for_selector('#status[data-status="ready"]')
        # The second turn goes to the same chat id with the chat token of the first.
        assert page.locator(assistant).nth(turn - 1).text_content() == expected_text(20)
    assert page.locator('[data-role="user"]').all_text_contents() == ["question 1", "question 2"]
    assert not page.is_visible("#error")


def test_socketio_page(page: Any, example_app: ServerProcess) -> None:
    page.goto(f"{example_app.url}/socketio.html?model=scripted&max_tokens=25")
    page.wait_for_function("document.querySelector('#status').textContent === 'connected'")
    page.fill("#prompt", "hello")
    page.click("#send")
    page.wait_for_selector('#output[data-status="done"]')
    assert page.text_content("#output") == expected_text(25)
    assert page.text_content("#status") == "done (length)"
