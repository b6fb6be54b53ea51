"""The demo page at / in real Chromium against a real ``tokenwire serve``: tokens
render progressively, a reload resumes, Stop stops on the server, a second tab
watches by URL, and the tensor view paints the denoise pipeline's images."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import ROOT, ServerProcess
from tests.e2e.pages import (
    ask,
    assert_progressive,
    expected_text,
    open_demo,
    sample_output,
    stream_id,
    wait_for_words,
)

pytestmark = pytest.mark.slow

LIBRARY = ROOT / "clients" / "js" / "src"


def test_static_serves_the_browser_client_and_the_page(server: ServerProcess) -> None:
    files = sorted(p for p in LIBRARY.rglob("*.js") if p.is_file())
    assert LIBRARY / "tokenwire.js" in files
    with httpx.Client(base_url=server.url) as http:
        for path in files:
            res = http.get(f"/static/{path.relative_to(LIBRARY).as_posix()}")
            assert res.status_code == 200, path
            assert res.headers["content-type"].startswith("text/javascript")
            assert res.content == path.read_bytes(), path
        page = http.get("/")
        assert page.headers["content-type"].startswith("text/html")
        for element in ("prompt", "send", "stop", "output", "status", "stats", "progress"):
            assert f'id="{element}"' in page.text
        assert http.get("/static/demo.js").status_code == 200
        # Symlinks are followed, but nothing outside the served folders is reachable.
        assert http.get("/static/../../../pyproject.toml").status_code == 404
        assert http.get("/static/%2e%2e/server/app.py").status_code == 404
        health = http.get("/healthz").json()
        assert health["default_model"] == "scripted"
        assert "denoise" in health["pipelines"]


def test_tokens_appear_progressively(page: Any, server: ServerProcess) -> None:
    open_demo(page, server.url, max_tokens=40, delay_ms=40)
    page.wait_for_selector("#empty", state="visible")
    assert page.get_attribute("#status", "data-state") == "idle"
    ask(page)
    sampled = sample_output(page)
    assert_progressive(sampled, expected_text(40))
    page.wait_for_selector('#status[data-status="done"]')
    assert page.is_disabled("#stop") and page.is_enabled("#send")
    stats = page.inner_text("#stats")
    assert "tok/s" in stats and "ms" in stats and "40" in stats


@pytest.mark.parametrize("transport", ["sse", "ws", "ndjson"])
def test_reload_mid_stream_resumes_without_duplicates_or_gaps(
    page: Any, server: ServerProcess, transport: str
) -> None:
    tokens = 80  # about 3 s: the reload lands well before the end
    open_demo(page, server.url, max_tokens=tokens, delay_ms=40, transport=transport)
    sid = ask(page, "Tell me about resuming.")
    before = wait_for_words(page, 8)
    assert httpx.get(f"{server.url}/v1/streams/{sid}").json()["status"] == "running"

    page.reload()
    # The saved text is back at once, then the tail streams after the saved seq.
    page.wait_for_selector("#notice", state="visible")
    assert stream_id(page) == sid
    assert page.text_content("#question") == "Tell me about resuming."
    sampled = sample_output(page)
    assert sampled.status == "done"
    assert sampled.final == expected_text(tokens)
    assert sampled.states, "nothing was shown between the reload and the end"
    assert sampled.states[0].startswith(before[: len(before) // 2])
    names = {"sse": "SSE", "ws": "WebSocket", "ndjson": "NDJSON"}
    assert page.text_content('#stats [data-stat="transport"]') == names[transport]


def test_stop_halts_generation_on_the_server(page: Any, server: ServerProcess) -> None:
    tokens = 400
    open_demo(page, server.url, max_tokens=tokens, delay_ms=40)
    sid = ask(page)
    wait_for_words(page, 5)
    page.click("#stop")
    page.wait_for_selector('#status[data-status="cancelled"]')
    assert page.get_attribute("#output", "data-status") == "cancelled"
    assert page.is_disabled("#stop") and page.is_enabled("#send")

    status = httpx.get(f"{server.url}/v1/streams/{sid}").json()
    assert status["status"] == "cancelled"
    time.sleep(0.4)
    assert httpx.get(f"{server.url}/v1/streams/{sid}").json()["last_seq"] == status["last_seq"]
    text = str(page.text_content("#output"))
    assert expected_text(tokens).startswith(text)
    assert len(text) < len(expected_text(tokens))


def test_a_second_tab_watches_the_same_stream_by_url(
    context: Any, page: Any, server: ServerProcess
) -> None:
    tokens = 50
    open_demo(page, server.url, max_tokens=tokens, delay_ms=40)
    sid = ask(page)
    page.wait_for_selector("#share", state="visible")
    link = page.get_attribute("#share", "href")
    assert link == f"{server.url}/?stream={sid}"

    watcher = context.new_page()
    errors: list[str] = []
    watcher.on("pageerror", lambda exc: errors.append(str(exc)))
    watcher.goto(link)
    watcher.wait_for_selector("#watch-badge", state="visible")
    assert stream_id(watcher) == sid
    watched = sample_output(watcher)
    assert watched.status == "done"
    assert watched.final == expected_text(tokens)
    assert sample_output(page).final == expected_text(tokens)
    assert not errors


def _canvas_sums(page: Any) -> list[int]:
    return list(
        page.evaluate(
            """() => {
              const c = document.getElementById('tensor');
              const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
              const sums = [0, 0, 0];
              for (let i = 0; i < d.length; i += 4) {
                sums[0] += d[i]; sums[1] += d[i + 1]; sums[2] += d[i + 2];
              }
              return sums;
            }"""
        )
    )


def test_tensor_view_and_screenshots(page: Any, server: ServerProcess, artifacts: Path) -> None:
    """Chat and image streaming side by side; screenshots mid-stream and done."""
    from tokenwire.examples.denoise import target_image, to_uint8

    steps, seed = 16, 7
    open_demo(
        page,
        server.url,
        max_tokens=60,
        delay_ms=45,
        image_steps=steps,
        image_delay_ms=120,
        image_seed=seed,
    )
    ask(page, "Why should a stream survive a page reload?")
    page.click("#render")
    page.wait_for_function("Number(document.getElementById('tensor').dataset.step) >= 5")
    wait_for_words(page, 14)
    page.screenshot(path=str(artifacts / "demo-streaming.png"))
    page.locator(".tensor-card").screenshot(path=str(artifacts / "tensor-view-refining.png"))

    page.wait_for_selector('#output[data-status="done"]')
    page.wait_for_selector('#image-status[data-status="done"]', timeout=20_000)
    assert page.get_attribute("#tensor", "data-step") == str(steps)
    assert page.get_attribute("#progress", "aria-valuenow") == "100"
    assert "256\u00d7256 RGB" in page.inner_text("#tensor-caption")
    page.screenshot(path=str(artifacts / "demo-done.png"))
    page.locator(".tensor-card").screenshot(path=str(artifacts / "tensor-view-done.png"))

    # The last image is the pipeline's target, pixel for pixel.
    target = to_uint8(target_image(256, 256, seed) * 2.0 - 1.0)
    sums = target.reshape(-1, 3).astype(np.int64).sum(axis=0).tolist()
    assert _canvas_sums(page) == sums


def test_dark_mode_screenshot(browser: Any, server: ServerProcess, artifacts: Path) -> None:
    ctx = browser.new_context(viewport={"width": 1280, "height": 860}, color_scheme="dark")
    try:
        page = ctx.new_page()
        open_demo(page, server.url, max_tokens=30, delay_ms=20, image_steps=6, image_delay_ms=20)
        ask(page, "Does it look good in the dark?")
        page.click("#render")
        page.wait_for_selector('#output[data-status="done"]')
        page.wait_for_selector('#image-status[data-status="done"]')
        page.screenshot(path=str(artifacts / "demo-dark.png"))
    finally:
        ctx.close()
