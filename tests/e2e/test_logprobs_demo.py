"""The demo page's live candidates chart (top_logprobs) in real Chromium, real model."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import ServerProcess
from tests.e2e.pages import open_demo, stream_id

pytestmark = pytest.mark.slow


def test_the_candidates_of_each_token_show_as_bars_under_the_answer(
    page: Any, server: ServerProcess
) -> None:
    open_demo(page, server.url, max_tokens=6, temperature=0)
    page.select_option("#model", "smollm2")
    page.fill("#prompt", "Name a fruit.")
    page.click("#send")
    stream_id(page)
    page.wait_for_selector('#status[data-status="done"]', timeout=60_000)
    assert page.text_content("#output") == "The fruit I mentioned is the"
    chart = page.wait_for_selector("#candidates", state="visible")
    rows = chart.query_selector_all(".cand-row")
    assert len(rows) == 5  # the demo asks for top_logprobs: 5
    chosen = chart.query_selector_all('.cand-row[data-chosen="true"]')
    assert len(chosen) == 1 and chosen[0].inner_text().startswith("·the")  # greedy: the best
    widths = [
        float(r.query_selector(".cand-fill").evaluate("e => parseFloat(e.style.width)"))
        for r in rows
    ]
    assert widths == sorted(widths, reverse=True) and 0 < widths[-1] <= widths[0] <= 100
    assert "Candidates for" in chart.inner_text()
    # a scripted answer has no logprobs: the chart goes away
    page.select_option("#model", "scripted")
    page.fill("#prompt", "again")
    page.click("#send")
    page.wait_for_selector('#status[data-status="done"]')
    assert page.is_hidden("#candidates")
