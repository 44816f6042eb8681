"""The real shard classes (actors.order_shard.OrderShard, actors.stock_shard.StockShard,
actors.merchant_shard.MerchantShard) in one event loop on virtual time (sim.vtime), wired to
each other through SimPeer, the in-process implementation of the ports (actors.ports),
which behaves like Ray: arguments and answers are copied, a call can be lost before or
after it runs, and an actor can crash at any await, losing its memory and every task it
had, and come back by running its constructor again (Ray's max_restarts) over the same
database (flashtx.sim.store).

Everything random comes from one seeded generator, so a seed replays exactly (within one
process, or across processes with the same PYTHONHASHSEED: ``python -m flashtx.sim`` sets
it)."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import pickle
import random
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import ray.exceptions

from flashtx.engine.config import Config
from flashtx.sim import vtime
from flashtx.sim.store import MemoryStore

_CURRENT: contextvars.ContextVar[tuple[str, int] | None] = contextvars.ContextVar(
    "sim_actor", default=None)
_WORLD: World | None = None


class Lost(ray.exceptions.RayActorError):
    """A call that did not come back: the actor died, or the network lost it."""

    def __init__(self, message: str) -> None:
        super().__init__(error_msg=message)
        self.message = message

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Lost, (self.message,))


class SimCrash(Exception):
    """An actor asked to end its process (os._exit): memory found wrong at commit."""


@dataclass(frozen=True)
class Faults:
    call_lost: float = 0.01  # a call lost before it runs
    reply_lost: float = 0.01  # a call that ran, whose answer is lost
    net_delay_ms: tuple[int, int] = (0, 3)
    store_fail: float = 0.02  # a write that writes nothing
    store_ambiguous: float = 0.02  # a write that commits, whose answer is lost
    store_delay_ms: tuple[int, int] = (0, 20)
    crash_every_ms: tuple[int, int] = (200, 1500)  # between two crashes of some shard
    restart_ms: tuple[int, int] = (10, 400)
    # Runs in which buyers share idempotency keys (one caller's keys used for several
    # buyers: orders with one key on two order shards), and the orders of such a run that
    # take a shared key. Drawn apart from the run's other draws: a run without shared keys
    # replays as it did before they existed.
    shared_key_runs: float = 0.3
    shared_key_orders: float = 0.1
    # Runs in which every actor's host has a clock of its own: each incarnation (a restart
    # lands on another host) runs up to `host_skew_ms` ahead of or behind the others. Drawn
    # apart from the run's other draws, as shared keys are.
    host_skew_runs: float = 0.3
    host_skew_ms: int = 3_000
    # Runs in which the batch journal's materializer lags: each materialization waits
    # this long first (committed batches pile up, shards crash with batches committed and
    # not materialized, snapshots are taken while it is behind). Drawn apart too.
    materializer_lag_runs: float = 0.4
    materializer_lag_ms: tuple[int, int] = (20, 800)

    @classmethod
    def none(cls) -> Faults:
        return cls(0.0, 0.0, (0, 1), 0.0, 0.0, (0, 1), (10**9, 10**9), (1, 2), 0.0, 0.0,
                   0.0, materializer_lag_runs=0.0)


class SimPeer:
    """The in-process implementation of the ports (actors.ports): ``peer.method(*args)``
    answers an awaitable task, as a Ray call does, with Ray's failures."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __getattr__(self, method: str) -> Callable[..., asyncio.Task[Any]]:
        if method.startswith("_"):
            raise AttributeError(method)
        name = self.name

        def call(*args: Any) -> asyncio.Task[Any]:
            assert _WORLD is not None
            # Addressed to the incarnation alive now: as with Ray, a call sent before a
            # crash fails, it is never delivered to the restarted actor.
            actor = _WORLD.actors[name]
            incarnation = actor.incarnation if actor.instance is not None else -1
            return asyncio.get_running_loop().create_task(
                _WORLD.call(name, method, args, incarnation))

        return call

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SimPeer) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    def __reduce__(self) -> tuple[Any, ...]:
        return (SimPeer, (self.name,))

    def __repr__(self) -> str:
        return f"SimPeer({self.name})"


@dataclass
class _Actor:
    make: Callable[[], Any]
    instance: Any = None
    previous: Any = None  # the incarnation before, as it was when it crashed
    incarnation: int = 0
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    crashes: int = 0


def _copy(value: Any) -> Any:
    """As Ray does: a copy, never a shared object."""
    return pickle.loads(pickle.dumps(value))


class World:
    def __init__(self, seed: int, faults: Faults) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.faults = faults
        self.store = MemoryStore(self)
        self.actors: dict[str, _Actor] = {}
        self.failures: list[str] = []
        self.calls = 0
        # The shards' clock runs this far from the loop's (a step, forward or back, that
        # every shard sees at once); `clock_high_ms` is the latest time they have seen.
        self.clock_offset_ms = 0
        self.clock_high_ms = 0
        # Per host: (actor, incarnation) -> how far its host's clock runs from the others'
        # (runs with host clocks of their own; empty in the others).
        skew = random.Random(f"host-skew-{seed}")
        self.host_skew_ms = faults.host_skew_ms if skew.random() < faults.host_skew_runs else 0
        self._skew_rng = skew
        lag = random.Random(f"materializer-lag-{seed}")
        self.materializer_lag: random.Random | None = (
            lag if lag.random() < faults.materializer_lag_runs else None)
        self.host_offsets_ms: dict[tuple[str, int], int] = {}

    # --- time -----------------------------------------------------------------------------

    def now_ms(self) -> int:
        """The shards' clock: wall-clock milliseconds in 2027, from the loop's time."""
        now = 1_800_000_000_000 + int(asyncio.get_running_loop().time() * 1000)
        now += self.clock_offset_ms
        if self.host_offsets_ms:
            owner = _CURRENT.get()
            if owner is not None:
                now += self.host_offsets_ms.get(owner, 0)
        if now > self.clock_high_ms:
            self.clock_high_ms = now
        return now

    def step_clock(self, offset_ms: int) -> None:
        """The shards' clock steps to the loop's time plus `offset_ms` (an NTP step)."""
        self.now_ms()  # the latest time seen before the step
        self.clock_offset_ms = offset_ms
        self.now_ms()

    async def pause(self, range_ms: tuple[int, int]) -> None:
        low, high = range_ms
        await asyncio.sleep(self.rng.randint(low, high) / 1000)

    # --- actors -----------------------------------------------------------------------------

    def add(self, name: str, make: Callable[[], Any]) -> SimPeer:
        self.actors[name] = _Actor(make)
        self.start(name)
        return SimPeer(name)

    def start(self, name: str) -> None:
        actor = self.actors[name]
        if self.host_skew_ms:  # this incarnation's host, and its clock
            self.host_offsets_ms[(name, actor.incarnation)] = self._skew_rng.randint(
                -self.host_skew_ms, self.host_skew_ms)
        context = contextvars.copy_context()
        context.run(_CURRENT.set, (name, actor.incarnation))
        actor.instance = context.run(actor.make)

    def crash(self, name: str) -> None:
        """The actor's process dies: its memory and every task it had are gone; it comes
        back after a while, from the database."""
        actor = self.actors[name]
        if actor.instance is None:
            return
        actor.previous, actor.instance = actor.instance, None
        actor.incarnation += 1
        actor.crashes += 1
        for task in list(actor.tasks):
            task.cancel()
        actor.tasks.clear()
        low, high = self.faults.restart_ms
        asyncio.get_running_loop().call_later(self.rng.randint(low, high) / 1000,
                                              self._restart, name, actor.incarnation)

    def _restart(self, name: str, incarnation: int) -> None:
        if self.actors[name].incarnation == incarnation and self.actors[name].instance is None:
            self.start(name)

    def task_factory(self, loop: asyncio.AbstractEventLoop, coro: Any,
                     context: contextvars.Context | None = None) -> asyncio.Task[Any]:
        """Every task remembers the actor (incarnation) that made it, so a crash ends it."""
        task = asyncio.Task(coro, loop=loop, context=context)
        owner = (context or contextvars.copy_context()).get(_CURRENT)
        if owner is not None:
            actor = self.actors.get(owner[0])
            if actor is not None and actor.incarnation == owner[1]:
                actor.tasks.add(task)
                task.add_done_callback(actor.tasks.discard)
            else:  # made by an incarnation that is gone: it never runs
                task.cancel()
        return task

    async def call(self, name: str, method: str, args: tuple[Any, ...],
                   incarnation: int) -> Any:
        self.calls += 1
        faults = self.faults
        await self.pause(faults.net_delay_ms)
        if self.rng.random() < faults.call_lost:
            raise Lost(f"sim: call {name}.{method} lost")
        actor = self.actors[name]
        if actor.instance is None or actor.incarnation != incarnation:
            raise Lost(f"sim: {name} died or is restarting")
        context = contextvars.copy_context()
        context.run(_CURRENT.set, (name, actor.incarnation))
        bound = getattr(actor.instance, method)
        arguments = _copy(args)
        work = asyncio.get_running_loop().create_task(bound(*arguments), context=context)
        try:
            result = await asyncio.shield(work)
        except asyncio.CancelledError:
            if work.cancelled():  # the callee crashed under the call
                raise Lost(f"sim: {name} died during {method}") from None
            raise
        await self.pause(faults.net_delay_ms)
        if self.rng.random() < faults.reply_lost:
            raise Lost(f"sim: the answer of {name}.{method} was lost")
        return _copy(result)

    def instance(self, name: str) -> Any:
        return self.actors[name].instance


@contextlib.contextmanager
def installed(world: World) -> Iterator[None]:
    """Points what the shards reach outside themselves (Ray, Postgres, the clock, metrics,
    randomness, process exit) at the world, and puts it all back afterwards."""
    from flashtx import actors

    global _WORLD

    async def open_store(config: Config, pool_size: int) -> MemoryStore:
        return world.store

    async def find_peers(names: Any, timeout_s: float = 60.0) -> list[SimPeer]:
        return [SimPeer(name) for name in names]

    def token_hex(n: int = 16) -> str:
        return world.rng.getrandbits(8 * n).to_bytes(n, "big").hex()

    class _Exit:
        @staticmethod
        def _exit(code: int) -> None:
            """A shard found its memory wrong (the database refused its rows): in Ray
            the process ends and restarts; here the actor crashes, and it is a finding."""
            owner = _CURRENT.get()
            world.failures.append(f"{owner and owner[0]} ended its process (code {code}):"
                                  " the database refused its rows as inconsistent")
            if owner is not None:
                world.crash(owner[0])
            raise SimCrash(f"exit {code}")

    patches: list[tuple[Any, str, Any]] = [
        (actors.order_shard, "open_store", open_store),
        (actors.stock_shard, "open_store", open_store),
        (actors.merchant_shard, "open_store", open_store),
        (actors.order_shard, "find_peers", find_peers),
        (actors.merchant_shard, "find_peers", find_peers),
        (actors.stock_shard, "find_peers", find_peers),
        (actors.clock, "now_ms", world.now_ms),
        (actors.metrics, "record", lambda *args, **kwargs: None),
        (actors.journal, "os", _Exit),
        (secrets, "token_hex", token_hex),
    ]
    for name in dir(actors.metrics):  # metric objects are Ray's: not made here
        value = getattr(actors.metrics, name)
        if (callable(value) and not name.startswith("_") and name != "record"
                and getattr(value, "__module__", "") == "flashtx.actors.metrics"):
            patches.append((actors.metrics, name, lambda *args, **kwargs: None))
    saved = [(target, name, getattr(target, name)) for target, name, _ in patches]
    for target, name, value in patches:
        setattr(target, name, value)
    _WORLD = world
    quiet = [logging.getLogger(name) for name in ("flashtx.actors", "asyncio")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:  # crashes and faults are the point here, not news
        logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for logger, level in zip(quiet, levels, strict=True):
            logger.setLevel(level)
        _WORLD = None
        for target, name, value in saved:
            setattr(target, name, value)


def run_in(world: World, main: Callable[[], Any], timeout_s: float = 3600) -> Any:
    """Runs the coroutine `main()` among `world`'s actors on virtual time (sim.vtime), then
    ends every task left; answers what `main` answers."""
    loop = vtime.new_event_loop()
    loop.set_task_factory(world.task_factory)
    try:
        with installed(world):
            return loop.run_until_complete(asyncio.wait_for(main(), timeout=timeout_s))
    finally:
        for task in asyncio.all_tasks(loop):
            task.cancel()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()
