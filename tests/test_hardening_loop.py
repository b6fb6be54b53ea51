"""The event loop is watched (issue 11, deliverable 4): a lag monitor in the server,
and a freeze detector in the test suite (tests/conftest.py ``healthz_watch``)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time

import pytest

from tests.conftest import HealthzWatch, ServerFactory, ServerProcess
from tests.hardening_clients import gauge, metrics
from tokenwire.metrics import LoopLagMonitor, Metrics, process_gauges


async def test_lag_monitor_sees_a_blocked_loop_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    m = Metrics()
    monitor = LoopLagMonitor(m, interval_s=0.05)
    monitor.start()
    await asyncio.sleep(0.2)
    assert monitor.lag() < 0.25
    with caplog.at_level(logging.WARNING, logger="tokenwire"):
        time.sleep(0.4)  # noqa: ASYNC251 - what a loop that goes round without awaiting does
        await asyncio.sleep(0.2)
    await monitor.aclose()
    assert monitor.lag() >= 0.3
    # A blocking call is the process's own lag, not the kernel's (it waited on no
    # run queue meanwhile), however loaded the machine is.
    assert monitor.lag() >= monitor.own_lag() >= 0.3
    assert m.value("tokenwire_event_loop_stalls_total") == 1
    assert any("event=loop_stall" in r.getMessage() for r in caplog.records)
    rendered = m.render()
    assert "# TYPE tokenwire_event_loop_lag_seconds gauge" in rendered


async def test_process_gauges_count_tasks_and_fds() -> None:
    m = Metrics()
    process_gauges(m)
    before = m.gauge_fns["tokenwire_open_fds"]()
    r, w = os.pipe()
    try:
        assert m.gauge_fns["tokenwire_open_fds"]() == before + 2
    finally:
        os.close(r)
        os.close(w)
    tasks = m.gauge_fns["tokenwire_asyncio_tasks"]()
    extra = asyncio.ensure_future(asyncio.sleep(1))
    assert m.gauge_fns["tokenwire_asyncio_tasks"]() == tasks + 1
    extra.cancel()


async def test_server_exposes_lag_tasks_and_fds(server: ServerProcess) -> None:
    text = await metrics(server)
    for name in ("tokenwire_event_loop_lag_seconds", "tokenwire_asyncio_tasks"):
        assert f"# TYPE {name} gauge" in text
    assert gauge(text, "tokenwire_open_fds") > 3
    assert 0 <= gauge(text, "tokenwire_event_loop_lag_seconds") < 1
    own = gauge(text, "tokenwire_event_loop_own_lag_seconds")
    assert 0 <= own <= gauge(text, "tokenwire_event_loop_lag_seconds")


async def test_the_freeze_detector_notices_a_stopped_server(
    start_server: ServerFactory, healthz_watch: HealthzWatch
) -> None:
    server = start_server()
    os.kill(server.pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(2.0)
    finally:
        os.kill(server.pid, signal.SIGCONT)
    assert any(server.url in stall for stall in healthz_watch.stalls), healthz_watch.stalls
    healthz_watch.ignore(server)
    healthz_watch.stalls.clear()  # noticed, as it should: not this test's failure
    server.stop()


@pytest.fixture(scope="module")
def paused_server(start_server: ServerFactory) -> ServerProcess:
    return start_server()


async def test_the_freeze_detector_watches_a_server_handed_to_the_test(
    paused_server: ServerProcess, healthz_watch: HealthzWatch
) -> None:
    # Started before the test (a fixture), so it is watched because the test holds it.
    os.kill(paused_server.pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(2.0)
    finally:
        os.kill(paused_server.pid, signal.SIGCONT)
    assert any(paused_server.url in stall for stall in healthz_watch.stalls), healthz_watch.stalls
    healthz_watch.stalls.clear()
