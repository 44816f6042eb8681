"""A gateway drains when its node's drain file appears (Kubernetes' preStop hook writes
it): once, whatever the number of checks; never without the file, nor with no path."""

from __future__ import annotations

import asyncio
from pathlib import Path

from flashtx.actors.drain import DrainWatch


async def test_the_drain_starts_once_the_file_appears(tmp_path: Path) -> None:
    drained = asyncio.Event()
    calls = []

    async def drain() -> None:
        calls.append(1)
        drained.set()

    path = tmp_path / "flashtx-drain"
    watch = DrainWatch(str(path), drain)
    assert not watch.check() and not watch.check()  # no file: nothing happens
    path.touch()
    assert watch.check()
    await drained.wait()
    assert watch.check() and watch.check()  # started already: not again
    await asyncio.sleep(0)
    assert calls == [1]


async def test_no_path_watches_nothing(tmp_path: Path) -> None:
    async def drain() -> None:
        raise AssertionError("drained without being asked")

    assert not DrainWatch("", drain).check()


async def test_a_drain_that_fails_is_logged_not_raised(tmp_path: Path, caplog) -> None:
    async def drain() -> None:
        raise RuntimeError("server gone")

    path = tmp_path / "drain"
    path.touch()
    watch = DrainWatch(str(path), drain)
    assert watch.check()
    assert watch.draining is not None
    await watch.draining  # ends without raising
    assert "failed" in caplog.text
