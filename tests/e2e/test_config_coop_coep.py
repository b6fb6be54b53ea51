"""TOKENWIRE_COOP_COEP (issue 13, deliverable 8): the demo page and /static/ are sent
with COOP/COEP, so Chromium makes the page cross-origin isolated and it may build a
SharedArrayBuffer (what a tensor view shared with a worker needs); without the
option, neither."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import ServerFactory


def test_coop_coep_makes_the_demo_page_cross_origin_isolated(
    start_server: ServerFactory, page: Any
) -> None:
    isolated = start_server(TOKENWIRE_COOP_COEP="1")
    plain = start_server()
    for path in ("/", "/static/tokenwire.js"):
        on = httpx.get(isolated.url + path, timeout=10)
        assert on.status_code == 200
        assert on.headers["cross-origin-opener-policy"] == "same-origin"
        assert on.headers["cross-origin-embedder-policy"] == "require-corp"
        off = httpx.get(plain.url + path, timeout=10)
        assert "cross-origin-opener-policy" not in off.headers
    # the API itself is not a page: no isolation headers there
    assert "cross-origin-embedder-policy" not in httpx.get(isolated.url + "/healthz").headers

    check = "() => [self.crossOriginIsolated, typeof SharedArrayBuffer]"
    page.goto(isolated.url + "/")
    assert page.evaluate(check) == [True, "function"]
    # the browser client still loads under require-corp (same origin)
    assert page.evaluate("async () => typeof (await import('/static/tokenwire.js'))") == "object"
    page.goto(plain.url + "/")
    assert page.evaluate(check) == [False, "undefined"]
