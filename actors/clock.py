"""Wall-clock milliseconds. Actors read time here only, so tests can shift it."""

from __future__ import annotations

import os
import time

# Tests start actors with FLASHTX_CLOCK_OFFSET_MS to see the future without sleeping.
_offset_ms = int(os.environ.get("FLASHTX_CLOCK_OFFSET_MS", "0"))


def now_ms() -> int:
    return int(time.time() * 1000) + _offset_ms


def shift(offset_ms: int) -> None:
    global _offset_ms
    _offset_ms = offset_ms


class ClockControl:
    """Lets tests and drills move an actor's clock (``Topology.shift_clock``): campaign
    windows, hold and cart expiry are then tested without sleeping."""

    async def shift_clock(self, offset_ms: int) -> None:
        shift(offset_ms)
        self._clock_shifted()

    def _clock_shifted(self) -> None:
        """Actors with time-stamped caches drop them here."""
