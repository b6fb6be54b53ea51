"""Makes loading a llama.cpp model segfault — tests only.

Imported through ``TOKENWIRE_BACKEND_MODULES=tests.crashing_llama`` (by the server
and by every worker), it stands in for a llama.cpp build that does not fit the
CPU: the worker dies with SIGSEGV in its start-up self-check, as 0.3.36 built
natively does on Intel Sapphire Rapids.
"""

from __future__ import annotations

from typing import Any

from tests.crashing_backend import crash
from tokenwire.models import llamacpp


def _crashing_load(self: llamacpp.LlamaSettings) -> Any:
    crash("segv")


llamacpp.LlamaSettings.load = _crashing_load  # type: ignore[method-assign]
