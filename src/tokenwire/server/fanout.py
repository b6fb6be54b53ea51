"""Moved to the session core: :class:`~tokenwire.core.encoder.SharedBatches` (a
batch encoded once for every subscriber) and :class:`~tokenwire.core.driver.Reader`
(one subscription of a multiplexed connection). Kept importable from here."""

from tokenwire.core.driver import Reader
from tokenwire.core.encoder import SharedBatches

__all__ = ["Reader", "SharedBatches"]
