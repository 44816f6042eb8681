"""Campaigns (flash sales): SKUs at a sale price inside a window, with their own stock.

A campaign SKU's units (its allotment) are moved out of the SKU's on-hand when the
campaign is created and split into K *buckets*: stock counters named
``<sku>~<campaign>~<k>`` that live on different stock shards like any SKU, priced at the
sale price. A buyer draws from bucket ``crc32(buyer) % K`` first and falls back to the
others in turn, so K shards share a hot SKU and a sale is refused only when every bucket
refused it. Emptying buckets are refilled from the fullest one (``rebalance_moves``).

Per-buyer limits of a campaign count every unit a buyer holds in live orders and cart
holds of that campaign. Orders and carts of a buyer live on one order shard, so the
count is exact there (``BuyerUnits``).

Bucket ids hold ``~``, which client ids may not, so they never collide with a SKU.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from flashtx.engine.errors import FailedPrecondition, InvalidArgument, LimitExceeded, NotFound

__all__ = [
    "BuyerUnits",
    "Campaign",
    "CampaignClosed",
    "CampaignSku",
    "bucket_key",
    "rebalance_moves",
    "split_units",
]

BUCKET_SEPARATOR = "~"

Line = tuple[str, int]


class CampaignClosed(FailedPrecondition):
    """The campaign has not started, has ended, or was ended."""

    reason = "CAMPAIGN_NOT_ACTIVE"


def bucket_key(sku_id: str, campaign_id: str, bucket: int, salt: int = 0) -> str:
    """The stock id of one bucket. `salt` lets placement pick a name that routes to a
    chosen stock shard."""
    key = f"{sku_id}{BUCKET_SEPARATOR}{campaign_id}{BUCKET_SEPARATOR}{bucket}"
    return f"{key}{BUCKET_SEPARATOR}{salt}" if salt else key


def split_units(units: int, buckets: int) -> list[int]:
    """Units per bucket, as even as possible (the first ones get the remainder)."""
    base, extra = divmod(units, buckets)
    return [base + (1 if k < extra else 0) for k in range(buckets)]


@dataclass(frozen=True, slots=True)
class CampaignSku:
    sku_id: str
    sale_price_minor: int
    allotment: int  # as asked (0: everything available)
    per_buyer_limit: int
    units: int  # as granted: moved into the buckets
    bucket_keys: tuple[str, ...]


@dataclass(slots=True)
class Campaign:
    merchant_id: str
    campaign_id: str
    name: str
    starts_at_ms: int
    ends_at_ms: int
    buckets: int
    skus: dict[str, CampaignSku]
    created_at_ms: int
    ended: bool = False  # ended early or settled: unsold units went back

    def check_open(self, now_ms: int) -> None:
        """Raises CampaignClosed unless orders may be placed in it now."""
        if self.ended or now_ms >= self.ends_at_ms:
            raise CampaignClosed(f"campaign {self.campaign_id} has ended",
                                 campaign_id=self.campaign_id)
        if now_ms < self.starts_at_ms:
            raise CampaignClosed(
                f"campaign {self.campaign_id} starts at {self.starts_at_ms} (ms since epoch)",
                campaign_id=self.campaign_id, starts_at_ms=str(self.starts_at_ms))

    def check_cart(self, now_ms: int) -> None:
        """Carts may be filled before the start, not after the end."""
        if self.ended or now_ms >= self.ends_at_ms:
            raise CampaignClosed(f"campaign {self.campaign_id} has ended",
                                 campaign_id=self.campaign_id)

    def sku(self, sku_id: str) -> CampaignSku:
        sku = self.skus.get(sku_id)
        if sku is None:
            raise FailedPrecondition(f"sku {sku_id} is not in campaign {self.campaign_id}",
                                     sku_id=sku_id, campaign_id=self.campaign_id)
        return sku

    def stock_lines(self, buyer_id: str, lines: Sequence[Line],
                    attempt: int) -> tuple[Line, ...]:
        """The buckets this buyer draws from on its `attempt`-th try (0 = its own)."""
        first = zlib.crc32(buyer_id.encode())
        out = []
        for sku_id, quantity in lines:
            keys = self.sku(sku_id).bucket_keys
            out.append((keys[(first + attempt) % len(keys)], quantity))
        return tuple(out)

    def limits(self, lines: Iterable[Line]) -> list[tuple[str, int, int]]:
        """(sku_id, quantity, per-buyer limit) of the limited lines."""
        return [(sku_id, quantity, self.sku(sku_id).per_buyer_limit)
                for sku_id, quantity in lines if self.sku(sku_id).per_buyer_limit]


def validate_campaign(starts_at_ms: int, ends_at_ms: int, buckets: int,
                      skus: Sequence[tuple[str, int, int, int]], buckets_max: int,
                      skus_max: int, now_ms: int) -> None:
    """skus: (sku_id, sale_price_minor, allotment, per_buyer_limit). Raises InvalidArgument."""
    if not 1 <= buckets <= buckets_max:
        raise InvalidArgument("buckets", f"must be in 1..{buckets_max}")
    if ends_at_ms <= starts_at_ms:
        raise InvalidArgument("ends_at_ms", "must be after starts_at_ms")
    if ends_at_ms <= now_ms:
        raise InvalidArgument("ends_at_ms", "is in the past")
    if not 1 <= len(skus) <= skus_max:
        raise InvalidArgument("skus", f"needs 1..{skus_max} SKUs")
    seen: set[str] = set()
    for i, (sku_id, _, allotment, _) in enumerate(skus):
        if sku_id in seen:
            raise InvalidArgument(f"skus[{i}].sku_id", f"{sku_id} appears twice")
        seen.add(sku_id)
        if allotment < 0:
            raise InvalidArgument(f"skus[{i}].allotment", "must be >= 0")


@dataclass(slots=True)
class BuyerUnits:
    """Units each buyer holds per (merchant, campaign, sku) in live orders, orders being
    placed, and cart holds: what a campaign's per-buyer limit counts."""

    units: dict[tuple[str, str, str, str], int] = field(default_factory=dict)

    def take(self, merchant_id: str, campaign_id: str, buyer_id: str,
             limited: Sequence[tuple[str, int, int]]) -> None:
        """Counts `limited` lines (sku, quantity, limit) or raises LimitExceeded, all or
        nothing."""
        units = self.units
        for sku_id, quantity, limit in limited:
            held = units.get((merchant_id, campaign_id, buyer_id, sku_id), 0)
            if held + quantity > limit:
                raise LimitExceeded(
                    f"campaign {campaign_id} allows {limit} units of {sku_id} per buyer",
                    sku_id=sku_id, campaign_id=campaign_id, limit=str(limit), held=str(held))
        self.add(merchant_id, campaign_id, buyer_id, [(s, q) for s, q, _ in limited])

    def add(self, merchant_id: str, campaign_id: str, buyer_id: str,
            lines: Iterable[Line]) -> None:
        for sku_id, quantity in lines:
            key = (merchant_id, campaign_id, buyer_id, sku_id)
            self.units[key] = self.units.get(key, 0) + quantity

    def give_back(self, merchant_id: str, campaign_id: str, buyer_id: str,
                  lines: Iterable[Line]) -> None:
        for sku_id, quantity in lines:
            key = (merchant_id, campaign_id, buyer_id, sku_id)
            left = self.units.get(key, 0) - quantity
            if left > 0:
                self.units[key] = left
            else:
                self.units.pop(key, None)

    def held(self, merchant_id: str, campaign_id: str, buyer_id: str, sku_id: str) -> int:
        return self.units.get((merchant_id, campaign_id, buyer_id, sku_id), 0)


def rebalance_moves(available: Sequence[int], low_water: int) -> list[tuple[int, int, int]]:
    """Moves (from bucket, to bucket, units) that refill buckets below `low_water` from
    the fullest ones. A move takes at most half of its source, leaves the source at or
    above low_water, and nothing moves when the buckets hold too little in all to matter
    (then fallback between buckets is cheaper than moving units around)."""
    if len(available) < 2 or sum(available) < low_water * len(available):
        return []
    left = list(available)
    moves: list[tuple[int, int, int]] = []
    for target in sorted(range(len(left)), key=lambda k: left[k]):
        if left[target] >= low_water:
            break
        source = max(range(len(left)), key=lambda k: left[k])
        units = min(left[source] // 2, left[source] - low_water,
                    (left[source] - left[target]) // 2)
        if source == target or units <= 0:
            continue
        left[source] -= units
        left[target] += units
        moves.append((source, target, units))
    return moves


def not_found(campaign_id: str) -> NotFound:
    return NotFound(f"no campaign {campaign_id}", campaign_id=campaign_id)


__all__ += ["not_found", "validate_campaign"]
