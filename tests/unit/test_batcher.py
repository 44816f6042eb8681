"""The micro-batcher without Ray: batching, bounds, failures."""

import asyncio

import pytest

from flashtx.actors.batcher import MicroBatcher
from flashtx.engine.errors import Overloaded


async def test_batches_gather_and_one_call_is_in_flight() -> None:
    calls: list[list[int]] = []
    release = asyncio.Event()

    async def send(items: list[int]) -> list[int]:
        calls.append(items)
        await release.wait()
        return [i * 10 for i in items]

    batcher = MicroBatcher(send, lambda error: -1, items_max=100, delay_s=0.001,
                           queue_items_max=1000, retry_after_ms=5, inflight_batches_max=1)
    first = [asyncio.ensure_future(batcher.submit(i)) for i in range(3)]
    await asyncio.sleep(0.01)
    later = [asyncio.ensure_future(batcher.submit(i)) for i in range(3, 8)]
    await asyncio.sleep(0.01)
    assert calls == [[0, 1, 2]]  # the others wait for the call in flight
    release.set()
    assert await asyncio.gather(*first, *later) == [i * 10 for i in range(8)]
    assert calls == [[0, 1, 2], [3, 4, 5, 6, 7]]


async def test_refuses_when_full_or_behind_and_reports_failures() -> None:
    stuck = asyncio.Event()

    async def send(items: list[int]) -> list[int]:
        await stuck.wait()
        raise RuntimeError("shard died")

    batcher = MicroBatcher(send, lambda error: "unavailable", items_max=2, delay_s=0.001,
                           queue_items_max=4, retry_after_ms=5, inflight_batches_max=1,
                           queue_delay_s_max=0.05)
    waiting = [asyncio.ensure_future(batcher.submit(i)) for i in range(4)]
    await asyncio.sleep(0)
    with pytest.raises(Overloaded):
        batcher.submit_chunk([9])  # full
    stuck_more = MicroBatcher(send, lambda error: "unavailable", items_max=1, delay_s=0.001,
                              queue_items_max=100, retry_after_ms=5, inflight_batches_max=1,
                              queue_delay_s_max=0.05)
    early = [asyncio.ensure_future(stuck_more.submit(i)) for i in range(3)]
    await asyncio.sleep(0.1)
    with pytest.raises(Overloaded):
        stuck_more.submit_chunk([9])  # the oldest queued item waited too long
    stuck.set()
    assert await asyncio.gather(*waiting, *early) == ["unavailable"] * 7


async def test_admit_checks_without_queueing() -> None:
    """A request spread over two batchers admits on both before submitting to either, so
    a refusal by the second leaves nothing queued on the first."""
    async def send(items: list[int]) -> list[int]:
        return items

    roomy = MicroBatcher(send, lambda error: -1, items_max=100, delay_s=0.001,
                         queue_items_max=10, retry_after_ms=5, inflight_batches_max=1)
    narrow = MicroBatcher(send, lambda error: -1, items_max=100, delay_s=0.001,
                          queue_items_max=3, retry_after_ms=5, inflight_batches_max=1)
    roomy.admit(2)
    with pytest.raises(Overloaded):
        narrow.admit(4)
    assert roomy.outstanding == narrow.outstanding == 0
    assert await roomy.submit_chunk([1, 2]) == [1, 2]


async def test_a_chunk_split_over_batches_answers_in_order() -> None:
    """A chunk larger than a batch leaves in several calls, which may answer out of
    order; its one future answers every result in the order submitted."""
    gates = {0: asyncio.Event(), 3: asyncio.Event(), 6: asyncio.Event()}

    async def send(items: list[int]) -> list[int]:
        await gates[items[0]].wait()
        return [i * 10 for i in items]

    batcher = MicroBatcher(send, lambda error: -1, items_max=3, delay_s=0.001,
                           queue_items_max=100, retry_after_ms=5, inflight_batches_max=3)
    single = batcher.submit_chunk([0])
    chunk = batcher.submit_chunk(list(range(1, 8)))
    await asyncio.sleep(0.01)
    gates[6].set()
    gates[3].set()
    await asyncio.sleep(0.01)
    assert not chunk.done() and batcher.outstanding == 3  # items 1 and 2 wait for call 0
    gates[0].set()
    assert await chunk == [i * 10 for i in range(1, 8)]
    assert await single == [0]
    assert batcher.outstanding == 0


async def test_a_stalled_queue_says_the_database_is_down_once_the_shard_says_so() -> None:
    """While an order shard's commits fail, its gateway queue grows old: the refusal says
    the database is unavailable (UNAVAILABLE) once the shard has said so, not only that
    the queue is old (before: RESOURCE_EXHAUSTED "the shard is behind" alone)."""
    from flashtx.actors.shard_health import ShardHealth
    from flashtx.engine.errors import ResultCode

    stuck = asyncio.Event()
    asked = asyncio.Event()
    failing_s: list[float | None] = [None]

    async def send(items: list[int]) -> list[int]:
        await stuck.wait()
        return items

    async def ask() -> float | None:
        asked.set()
        return failing_s[0]

    health = ShardHealth(3, ask)
    batcher = MicroBatcher(send, lambda error: -1, items_max=1, delay_s=0.001,
                           queue_items_max=100, retry_after_ms=5, inflight_batches_max=1,
                           queue_delay_s_max=0.01, stalled=health.explain)
    waiting = [asyncio.ensure_future(batcher.submit(i)) for i in range(2)]
    await asyncio.sleep(0.05)  # the queued item is older than the bound from here on
    with pytest.raises(Overloaded):  # the database answers, as far as the shard knows
        batcher.submit_chunk([9])
    await asked.wait()
    failing_s[0] = 12.0  # the shard's commits fail from now on
    health._asked_at -= 10  # the last question is old: the next refusal asks again
    asked.clear()
    with pytest.raises(Overloaded):
        batcher.submit_chunk([9])
    await asked.wait()
    await asyncio.sleep(0)  # the answer is taken in
    with pytest.raises(Exception) as refused:
        batcher.submit_chunk([9])
    assert refused.value.code == ResultCode.UNAVAILABLE  # type: ignore[attr-defined]
    assert "database is unavailable to order shard 3" in str(refused.value)
    assert refused.value.metadata["database"] == "unavailable"  # type: ignore[attr-defined]
    # Long after that answer (the database back since), a stall is not blamed on it.
    failing_s[0] = None
    health._answered_at -= 10
    health._asked_at -= 10
    with pytest.raises(Overloaded):
        batcher.submit_chunk([9])
    stuck.set()
    assert await asyncio.gather(*waiting) == [0, 1]
