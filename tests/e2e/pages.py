"""Driving the demo page (and the React page) from playwright, and what a stream
that rendered progressively looks like."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from tokenwire.models.scripted import scripted_token

TERMINAL = ("done", "cancelled", "error")


def expected_text(tokens: int) -> str:
    """What the scripted model writes in ``tokens`` tokens."""
    return "".join(scripted_token(i) for i in range(tokens))


@dataclass
class Sampled:
    """What sampling an output element saw: the distinct texts while the stream was
    not over yet, then the final text and status."""

    states: list[str]
    final: str
    status: str


def sample_output(page: Any, selector: str = "#output", timeout_s: float = 30.0) -> Sampled:
    """Read the element's text and ``data-status`` over and over until the stream ends."""
    states: list[str] = []
    deadline = time.monotonic() + timeout_s
    while True:
        text, status = page.eval_on_selector(
            selector, "el => [el.textContent, el.dataset.status || '']"
        )
        if status in TERMINAL:
            return Sampled(states, text, status)
        if text and (not states or states[-1] != text):
            states.append(text)
        if time.monotonic() > deadline:
            raise AssertionError(f"{selector} still {status!r} after {timeout_s}s: {text!r}")
        page.wait_for_timeout(10)


def assert_progressive(sampled: Sampled, expected: str, min_states: int = 5) -> None:
    """Tokens arrived one after another, and the final text is exactly ``expected``."""
    assert sampled.status == "done", sampled
    assert sampled.final == expected
    assert len(sampled.states) >= min_states, (
        f"only {len(sampled.states)} distinct states before done: {sampled.states}"
    )
    for before, after in zip(sampled.states, sampled.states[1:], strict=False):
        assert after.startswith(before), f"text was rewritten: {before!r} -> {after!r}"
    assert all(expected.startswith(s) for s in sampled.states)


def demo_url(base: str, **params: Any) -> str:
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return f"{base}/?{query}" if query else f"{base}/"


def open_demo(page: Any, base: str, **params: Any) -> None:
    """Open the demo page and wait until it knows the server's models."""
    page.goto(demo_url(base, **params))
    page.wait_for_selector('#model option[value="scripted"]', state="attached")
    page.wait_for_selector('#server[data-health="ok"]')


def ask(page: Any, prompt: str = "How do resumable streams work?") -> str:
    """Send a question with the scripted model; returns the new stream's id."""
    page.select_option("#model", "scripted")
    page.fill("#prompt", prompt)
    page.click("#send")
    return stream_id(page)


def stream_id(page: Any, selector: str = "#output") -> str:
    page.wait_for_selector(f"{selector}[data-stream^='st_']", state="attached")
    value = page.get_attribute(selector, "data-stream")
    assert value
    return str(value)


def wait_for_words(page: Any, words: int, selector: str = "#output") -> str:
    """Wait until at least ``words`` words are shown; returns the text."""
    page.wait_for_function(
        "([sel, n]) => document.querySelector(sel).textContent.split(' ').length >= n",
        arg=[selector, words],
    )
    return str(page.text_content(selector))
