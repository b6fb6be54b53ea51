"""The React adapter in a page built from the package: React 19 and react-dom from
npm, bundled with esbuild (tests/e2e/react-app), rendering tokens through
``useTokenStream`` against the real tokenwire app (tests/e2e/react_host.py)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.e2e.pages import assert_progressive, expected_text, sample_output

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("transport", ["sse", "ws", "ndjson"])
def test_use_token_stream_renders_tokens(page: Any, react_host: str, transport: str) -> None:
    page.goto(f"{react_host}/react-app/?transport={transport}&max_tokens=40&delay_ms=40")
    page.click("#start")
    sampled = sample_output(page)
    assert_progressive(sampled, expected_text(40))
    assert str(page.get_attribute("#output", "data-stream")).startswith("st_")
    assert page.text_content("#stats") == "40 tokens"
    assert page.query_selector("#error") is None


def test_use_token_stream_cancel_is_a_stop(page: Any, react_host: str) -> None:
    page.goto(f"{react_host}/react-app/?max_tokens=400&delay_ms=40")
    page.click("#start")
    page.wait_for_selector('#output[data-status="running"]')
    page.wait_for_function("document.getElementById('output').textContent.length > 20")
    page.click("#stop")
    page.wait_for_selector('#output[data-status="cancelled"]')
    sid = page.get_attribute("#output", "data-stream")
    assert httpx.get(f"{react_host}/v1/streams/{sid}").json()["status"] == "cancelled"
