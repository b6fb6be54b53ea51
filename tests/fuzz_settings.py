"""Hypothesis settings of the fuzz tests (tests/test_fuzz_*.py): bounded in the
suite, so that all of them together take a few seconds; ``tokenwire bench fuzz
--minutes N`` runs them again and again with ``TOKENWIRE_FUZZ_SCALE`` times the
examples, fresh random seeds each round.

No deadline: a test asserts behaviour, never timing (a loaded machine is slow).
No example database: the suite leaves nothing behind; a failure prints the
example that falsified it, and ``@example`` pins it as a regression.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

SCALE = float(os.environ.get("TOKENWIRE_FUZZ_SCALE", "1"))


def fuzz(examples: int) -> settings:
    """``examples`` in the suite, ``examples * TOKENWIRE_FUZZ_SCALE`` on demand."""
    return settings(
        max_examples=max(1, round(examples * SCALE)),
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.function_scoped_fixture,
        ],
    )
