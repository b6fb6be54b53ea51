"""Imported into the model worker of ``bench models`` (through TOKENWIRE_BACKEND_MODULES):
it appends to the file TOKENWIRE_BENCH_PROBE one line per event, ``start T`` when the
llama.cpp thread starts a generation and ``piece T`` when it hands a piece over, T
being ``time.perf_counter()`` — CLOCK_MONOTONIC on Linux, the same clock in every
process, so the bench can pair these with the times its subscriber holds each token."""

from __future__ import annotations

import os
import time
from typing import Any

from tokenwire.models import llamacpp

_out = open(os.environ["TOKENWIRE_BENCH_PROBE"], "a", buffering=1)
_put = llamacpp._Handoff.put
_run = llamacpp._run


def _timed_put(self: llamacpp._Handoff, item: object) -> bool:
    if isinstance(item, str):
        _out.write(f"piece {time.perf_counter()}\n")
    return _put(self, item)


def _timed_run(*args: Any, **kwargs: Any) -> Any:
    _out.write(f"start {time.perf_counter()}\n")
    return _run(*args, **kwargs)


llamacpp._Handoff.put = _timed_put  # type: ignore[method-assign]
llamacpp._run = _timed_run
