"""What a bench run sends: the catalog it sets up and the stream of operations it draws.

Pure and seeded: every worker process rebuilds the same catalog from the seed and draws
its own operations from ``seed + worker_index``, so a run is reproducible and the targets
(engine and baselines) see the same load shape.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

SCENARIOS = ("flash-sale", "catalog", "mixed", "cart-checkout", "overload")
# Scenarios whose SKUs are the few hot ones on sale (the rest draw from a catalog).
HOT_SCENARIOS = ("flash-sale", "cart-checkout")

# Operation kinds a worker issues. Only "order" counts towards throughput.
ORDER = "order"
READ = "read"
PAY = "pay"
CANCEL = "cancel"


@dataclass(frozen=True)
class SkuSpec:
    sku_id: str
    on_hand: int
    per_buyer_limit: int
    price_minor: int


@dataclass(frozen=True)
class OrderSpec:
    idempotency_key: str
    buyer_id: str
    # (sku_id, quantity), distinct SKUs, sorted by sku_id so that naive row locking
    # in the Postgres baseline takes locks in one order and never deadlocks.
    lines: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class CartSpec:
    """cart-checkout: what one buyer puts in its campaign cart before the start."""

    buyer_id: str
    sku_id: str
    quantity: int


@dataclass(frozen=True)
class ScenarioParams:
    name: str
    seed: int = 1
    hot_skus: int = 3
    stock_per_sku: int = 100_000
    per_buyer_limit: int = 2
    buyers: int = 1_000_000
    catalog_skus: int = 100_000
    zipf_exponent: float = 1.1
    lines_per_order_max: int = 4
    # mixed: share of each operation kind (the rest are orders).
    read_share: float = 0.25
    pay_share: float = 0.07
    cancel_share: float = 0.03

    # flash-sale and cart-checkout: a campaign over the hot SKUs with this many stock
    # buckets per SKU (flash-sale: 0 = no campaign; cart-checkout: 0 counts as 1).
    buckets: int = 0

    def skus(self) -> list[SkuSpec]:
        if self.name == "cart-checkout":
            # stock_per_sku 0: half the units the buyers put in their carts, per SKU,
            # so that the checkout storm sells out.
            demand = Counter(cart.sku_id for cart in self.carts() for _ in range(cart.quantity))
            return [
                SkuSpec(
                    sku_id,
                    self.stock_per_sku or max(1, demand[sku_id] // 2),
                    self.per_buyer_limit,
                    1999,
                )
                for sku_id in self.hot_sku_ids()
            ]
        if self.name == "flash-sale":
            return [
                SkuSpec(sku_id, self.stock_per_sku, self.per_buyer_limit, 1999)
                for sku_id in self.hot_sku_ids()
            ]
        # Catalog and mixed: a long tail that rarely sells out, no per-buyer limit.
        return [
            SkuSpec(f"sku-{index:06d}", 1_000_000, 0, 500 + index % 10_000)
            for index in range(self.catalog_skus)
        ]

    def hot_sku_ids(self) -> list[str]:
        return [f"hot-{index:03d}" for index in range(self.hot_skus)]

    def carts(self) -> list[CartSpec]:
        """cart-checkout: buyer i's campaign cart, one hot SKU with 1 or 2 units (never
        more than the per-buyer limit). The same list in every process, from the seed."""
        rng = np.random.default_rng([self.seed, 0xCA27])
        skus = rng.integers(0, self.hot_skus, self.buyers).tolist()
        doubles = (rng.random(self.buyers) < 0.5).tolist()
        most = self.per_buyer_limit or 2
        sku_ids = self.hot_sku_ids()
        return [
            CartSpec(f"c{index}", sku_ids[sku], min(most, 2 if double else 1))
            for index, (sku, double) in enumerate(zip(skus, doubles, strict=True))
        ]


@dataclass
class OperationSource:
    """Draws operations for one worker; cheap per call (random numbers come in blocks)."""

    params: ScenarioParams
    worker_index: int
    run_id: str
    block_size: int = 4096
    sequence: int = 0
    _rng: np.random.Generator = field(init=False)
    _sku_ids: list[str] = field(init=False)
    _zipf_cdf: np.ndarray | None = field(init=False, default=None)
    _uniform: list[float] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng([self.params.seed, self.worker_index])
        self._sku_ids = [sku.sku_id for sku in self.params.skus()]
        if self.params.name not in HOT_SCENARIOS:
            ranks = np.arange(1, len(self._sku_ids) + 1, dtype=np.float64)
            weights = ranks**-self.params.zipf_exponent
            self._zipf_cdf = np.cumsum(weights) / weights.sum()

    def next_uniform(self) -> float:
        if not self._uniform:
            self._uniform = self._rng.random(self.block_size).tolist()
        return self._uniform.pop()

    def next_kind(self) -> str:
        if self.params.name != "mixed":
            return ORDER
        draw = self.next_uniform()
        if draw < self.params.read_share:
            return READ
        if draw < self.params.read_share + self.params.pay_share:
            return PAY
        if draw < self.params.read_share + self.params.pay_share + self.params.cancel_share:
            return CANCEL
        return ORDER

    def next_order(self) -> OrderSpec:
        self.sequence += 1
        key = f"{self.run_id}-{self.worker_index}-{self.sequence}"
        buyer = f"b{int(self.next_uniform() * self.params.buyers)}"
        return OrderSpec(key, buyer, self._next_lines())

    def next_read_sku(self) -> str:
        return self._pick_sku()

    def _pick_sku(self) -> str:
        draw = self.next_uniform()
        if self._zipf_cdf is None:
            return self._sku_ids[int(draw * len(self._sku_ids))]
        index = int(np.searchsorted(self._zipf_cdf, draw))
        return self._sku_ids[min(index, len(self._sku_ids) - 1)]

    def _next_lines(self) -> tuple[tuple[str, int], ...]:
        if self.params.name == "flash-sale":
            quantity = 2 if self.next_uniform() < 0.2 else 1
            return ((self._pick_sku(), quantity),)
        line_count = 1 + int(self.next_uniform() * self.params.lines_per_order_max)
        chosen: dict[str, int] = {}
        for _ in range(line_count):
            chosen[self._pick_sku()] = 1 + int(self.next_uniform() * 3)
        return tuple(sorted(chosen.items()))
