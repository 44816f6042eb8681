"""An asyncio loop on virtual time for the simulator: when nothing is ready to run, the
clock jumps to the next timer instead of sleeping. Nothing runs outside the loop (no I/O,
no threads: the actors, the database and the network are in-process), so that is all a
virtual clock needs to do.

It keeps looptime's arithmetic (integer microseconds; a positive timeout shorter than one
moves the clock one microsecond), so a seed runs the same as on looptime, and leaves out
looptime's cost per loop cycle (its no-op cycles and its scan of every task, written for
loops that also wait on I/O and threads: a quarter of a run's CPU).
"""

from __future__ import annotations

import asyncio
import selectors
from typing import Any

__all__ = ["new_event_loop"]

_TICKS_PER_S = 1_000_000


class _VirtualSelector(selectors.DefaultSelector):
    """The loop's own selector (its self-pipe stays registered); a wait moves the clock."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0  # microseconds

    def select(self, timeout: float | None = None) -> list[Any]:
        ready: list[Any] = super().select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:  # no timer left and nothing ready: it would wait forever
            raise RuntimeError("the simulated world has nothing left to run or wait for")
        step = round(timeout * _TICKS_PER_S)
        if 0 < timeout < 1 / _TICKS_PER_S:
            step += 1
        self.now += step
        return []


class _VirtualLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self._virtual = _VirtualSelector()
        super().__init__(self._virtual)

    def time(self) -> float:
        return self._virtual.now / _TICKS_PER_S


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A loop whose clock starts at 0 and moves only when nothing is ready."""
    return _VirtualLoop()
