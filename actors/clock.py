"""Wall-clock milliseconds. Actors read time here only, so tests can shift or stop it."""

from __future__ import annotations

import os
import time

# Tests start actors with FLASHTX_CLOCK_OFFSET_MS to see the future without sleeping.
_offset_ms = int(os.environ.get("FLASHTX_CLOCK_OFFSET_MS", "0"))
# When set, time stands still at this instant (rate refill, TTLs): tests then assert on
# what happens at one instant, whatever the machine's speed.
_frozen_at_ms: int | None = None


def now_ms() -> int:
    if _frozen_at_ms is not None:
        return _frozen_at_ms
    return int(time.time() * 1000) + _offset_ms


def shift(offset_ms: int) -> None:
    """Real time plus `offset_ms` from now on (0: real time); unfreezes."""
    global _offset_ms, _frozen_at_ms
    _offset_ms, _frozen_at_ms = offset_ms, None


def freeze(at_ms: int | None) -> None:
    """Stops time at `at_ms` (None: runs again, shifted as before)."""
    global _frozen_at_ms
    _frozen_at_ms = at_ms


class ClockControl:
    """Lets tests and drills move an actor's clock (``Topology.shift_clock``): campaign
    windows, hold and cart expiry are then tested without sleeping."""

    async def shift_clock(self, offset_ms: int) -> None:
        shift(offset_ms)
        self._clock_shifted()

    async def freeze_clock(self, at_ms: int | None) -> int:
        """Stops this actor's clock at `at_ms` (None: now); answers the instant."""
        freeze(now_ms() if at_ms is None else at_ms)
        self._clock_shifted()
        return now_ms()

    def _clock_shifted(self) -> None:
        """Actors with time-stamped caches drop them here."""
