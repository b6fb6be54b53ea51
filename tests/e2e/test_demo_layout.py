"""The demo page in Chromium: the counters right after a reload mid-stream, the
390 px (phone) layout, and the page served under a mount (``/tw/`` in a FastAPI
app), where every URL it uses is relative."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import ServerProcess
from tests.e2e.pages import ask, expected_text, open_demo, sample_output, wait_for_words
from tests.embedded_server import start_host

pytestmark = pytest.mark.slow

# Read in one animation frame, after the page's own render of that frame.
COUNTERS = """() => new Promise((done) => requestAnimationFrame(() => setTimeout(() => done({
  text: document.querySelector('#output').textContent,
  tokens: document.querySelector('#stats [data-stat="tokens"]').textContent,
  ttft: document.querySelector('#stats [data-stat="ttft"]').textContent,
}))))"""


def tokens_shown(text: str, limit: int) -> int:
    """How many scripted tokens ``text`` is."""
    for n in range(limit, -1, -1):
        if expected_text(n) == text:
            return n
    raise AssertionError(f"not a scripted prefix: {text!r}")


def test_counters_right_after_a_reload_mid_stream(page: Any, server: ServerProcess) -> None:
    tokens = 60
    open_demo(page, server.url, max_tokens=tokens, delay_ms=120)
    ask(page, "Count with me.")
    wait_for_words(page, 20)
    before = page.evaluate(COUNTERS)
    assert before["ttft"] != "—"
    page.reload()
    page.wait_for_selector("#notice", state="visible")
    # Right after the reload and on every sample until the end, TOKENS counts the
    # tokens on screen (the saved text included), and FIRST TOKEN is the one
    # measured before the reload.
    samples = []
    while True:
        now = page.evaluate(COUNTERS)
        shown = tokens_shown(now["text"], tokens)
        samples.append((shown, now["tokens"]))
        assert abs(int(now["tokens"]) - shown) <= 1, samples
        assert now["ttft"] == before["ttft"], now
        if shown == tokens:
            break
        page.wait_for_timeout(150)
    assert samples[0][0] >= 20 and len(samples) >= 3, samples
    page.wait_for_selector('#status[data-status="done"]')
    assert page.text_content('#stats [data-stat="tokens"]') == str(tokens)


def test_phone_layout_keeps_copy_and_status_in_view(browser: Any, server: ServerProcess) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844})
    context.set_default_timeout(15_000)
    try:
        page = context.new_page()
        open_demo(page, server.url, max_tokens=40, delay_ms=40)
        ask(page)
        page.wait_for_selector("#copy-share", state="visible")
        for selector in ("#copy-share", "#share", "#status", "#send", "#stop"):
            box = page.locator(selector).bounding_box()
            assert box is not None, selector
            assert box["x"] >= 0 and box["x"] + box["width"] <= 390, (selector, box)
        assert page.evaluate("document.scrollingElement.scrollWidth") <= 390
        page.wait_for_selector('#status[data-status="done"]')
        assert page.is_visible("#copy-share")
    finally:
        context.close()


@pytest.fixture(scope="module")
def mounted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    host = start_host(tmp_path_factory.mktemp("mounted-demo"), "lifespan")
    yield host
    host.stop()


@pytest.mark.parametrize("transport", ["sse", "ws"])
def test_demo_under_a_mount(page: Any, mounted: ServerProcess, transport: str) -> None:
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    open_demo(page, f"{mounted.url}/tw", max_tokens=30, delay_ms=10, transport=transport)
    ask(page)
    sampled = sample_output(page)
    assert sampled.status == "done" and sampled.final == expected_text(30)
    own = [url for url in requests if url.startswith(mounted.url)]
    assert own and all(url.startswith(f"{mounted.url}/tw/") for url in own), own
