"""The demo page through a real nginx reverse proxy with its default buffering:
tokens still arrive live, because the server answers event streams with
``X-Accel-Buffering: no``."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import Nginx
from tests.e2e.pages import ask, assert_progressive, expected_text, open_demo, sample_output

pytestmark = pytest.mark.slow


def test_the_proxy_keeps_its_default_buffering(nginx: Nginx) -> None:
    assert "proxy_buffering" not in nginx.config
    assert "proxy_pass" in nginx.config


@pytest.mark.parametrize("transport", ["sse", "ndjson", "ws"])
def test_tokens_arrive_live_behind_nginx(page: Any, nginx: Nginx, transport: str) -> None:
    tokens = 30
    open_demo(page, nginx.url, max_tokens=tokens, delay_ms=80, transport=transport)
    ask(page, "Are you still streaming behind a proxy?")
    sampled = sample_output(page)
    assert_progressive(sampled, expected_text(tokens), min_states=8)
