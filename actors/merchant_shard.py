"""MerchantShard: merchant profiles, API keys and campaigns (key: merchant). Every change
is in Postgres before it is answered; on start the shard loads its merchants and
campaigns.

Campaigns move units between stock counters (a SKU and its buckets): the sending stock
shard takes the units out of memory and writes both sides in one transaction; the
receiving one adds them unless it reloaded since (then Postgres had them). A loop here
refills emptying buckets from full ones, announces a campaign SKU sold out once every
bucket is empty, and returns unsold units to their SKUs once a campaign is over.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Sequence
from typing import Any

from flashtx.actors import clock, metrics
from flashtx.actors.loops import every, until_done
from flashtx.actors.persistence import campaign_from_row, open_store
from flashtx.actors.ports import OrderPeer, StockPeer, find_peers
from flashtx.actors.routing import ShardGroup
from flashtx.adapters.events import stock_event
from flashtx.adapters.postgres import Store
from flashtx.engine.campaigns import (
    Campaign,
    CampaignSku,
    bucket_key,
    not_found,
    rebalance_moves,
    split_units,
    validate_campaign,
)
from flashtx.engine.config import Config
from flashtx.engine.errors import AlreadyExists, FailedPrecondition, NotFound, Unavailable
from flashtx.engine.merchants import (
    ApiKeyRecord,
    MerchantDirectory,
    MerchantRecord,
    Principal,
    Scope,
)
from flashtx.engine.messages import (
    CampaignSkus,
    Expected,
    KeyCreated,
    MerchantCreated,
    MerchantView,
    Shares,
    SkuBatch,
    SkuKeys,
)
from flashtx.engine.sharding import slot_of

log = logging.getLogger(__name__)


class MerchantShard(clock.ClockControl):
    def __init__(self, index: int, config: Config, slots: Sequence[int],
                 order_shard_names: Sequence[str] = ()) -> None:
        self.index = index
        self._config = config
        self._slots = set(slots)
        self._order_names = list(order_shard_names)
        self._directory = MerchantDirectory(config.merchants_max, config.api_keys_per_merchant_max)
        self._store: Store | None = None
        self._campaigns: dict[tuple[str, str], Campaign] = {}
        self._settled: set[tuple[str, str]] = set()  # over, and nothing left to return
        self._announced: set[tuple[str, str, str]] = set()  # (merchant, campaign, sku)
        self._campaign_lock = asyncio.Lock()
        self._ready = asyncio.get_running_loop().create_task(self._start())
        self._balancer = asyncio.get_running_loop().create_task(every(
            config.campaign_rebalance_interval_ms / 1000, self._balance_once,
            "campaign buckets", after=self._ready))

    async def _start(self) -> None:
        self._store = await open_store(self._config, 2)
        if self._store is None:
            return
        # A read that fails (the database restarting too) is tried again, never left as
        # a shard that cannot serve.
        await until_done(self._load, f"merchant shard {self.index} start")

    async def _load(self) -> None:
        """Loads this shard's merchants, keys and campaigns (from scratch on every try)."""
        assert self._store is not None
        self._directory = MerchantDirectory(self._config.merchants_max,
                                            self._config.api_keys_per_merchant_max)
        self._campaigns.clear()
        merchants, keys = await self._store.load_merchants()
        for row in merchants:
            if slot_of(row["merchant_id"], "", self._config.slots_total) in self._slots:
                self._directory.merchants[row["merchant_id"]] = MerchantRecord(
                    row["merchant_id"], row["name"], row["created_at_ms"],
                    row["payment_window_s"], cart_hold_s=row["cart_hold_s"],
                    currency=row["currency"])
        for row in keys:
            merchant = self._directory.merchants.get(row["merchant_id"])
            if merchant is not None:
                merchant.keys[row["key_id"]] = ApiKeyRecord(
                    row["key_id"], row["secret_hash"], frozenset(Scope(s) for s in row["scopes"]),
                    row["label"], row["created_at_ms"], row["revoked"],
                    row.get("request_id") or "")
        for row in await self._store.load_campaigns():
            if row["merchant_id"] in self._directory.merchants:
                campaign = campaign_from_row(row)
                self._campaigns[(campaign.merchant_id, campaign.campaign_id)] = campaign

    async def create(self, merchant_id: str, name: str, payment_window_s: int,
                     cart_hold_s: int = 0, request_id: str = "",
                     currency: str = "") -> MerchantCreated:
        await self._ready
        window_s = payment_window_s or self._config.payment_window_s_default
        merchant, key, token, replayed = self._directory.create(
            merchant_id, name, window_s, clock.now_ms(), cart_hold_s, request_id,
            currency or self._config.currency_default)
        if self._store is not None:
            try:
                # Written again on a replay: the first write may not have happened.
                await self._store.save_merchant_with_key(
                    (merchant.merchant_id, merchant.name, merchant.payment_window_s,
                     merchant.created_at_ms, merchant.cart_hold_s, merchant.currency),
                    _key_row(merchant_id, key))
            except Exception:
                # Not known to be durable. Without a request id the merchant is forgotten;
                # with one it stays, for the retry (same id) to write it again.
                if not request_id and not replayed:
                    del self._directory.merchants[merchant_id]
                raise
        return MerchantCreated(_merchant(merchant), _key(key), token, replayed)

    async def update(self, merchant_id: str, payment_window_s: int | None,
                     cart_hold_s: int | None) -> dict[str, Any]:
        """None: keep the field's value (not in the caller's update mask)."""
        await self._ready
        merchant = self._directory.get(merchant_id)
        if cart_hold_s is None:
            cart_hold_s = merchant.cart_hold_s
        window_s = (merchant.payment_window_s if payment_window_s is None
                    else payment_window_s or self._config.payment_window_s_default)
        if self._store is not None:
            await self._store.update_merchant(merchant_id, window_s, cart_hold_s)
        merchant.payment_window_s, merchant.cart_hold_s = window_s, cart_hold_s
        return _merchant(merchant)

    async def get(self, merchant_id: str) -> MerchantView:
        await self._ready
        merchant = self._directory.get(merchant_id)
        return MerchantView(_merchant(merchant), [_key(k) for k in merchant.keys.values()])

    async def list_merchants(self, after: str, limit: int) -> list[dict[str, Any]]:
        """Up to `limit` of this shard's merchants whose id sorts after `after`."""
        await self._ready
        return [_merchant(m) for m in heapq.nsmallest(
            limit, (m for m in self._directory.merchants.values() if m.merchant_id > after),
            key=lambda m: m.merchant_id)]

    async def create_key(self, merchant_id: str, scopes: list[int], label: str,
                         request_id: str = "") -> KeyCreated:
        await self._ready
        key, token = self._directory.create_key(
            merchant_id, frozenset(Scope(s) for s in scopes), label, clock.now_ms(),
            request_id)
        if self._store is not None:
            try:
                await self._store.save_key(_key_row(merchant_id, key))
            except Exception:
                # Not known to be durable. Without a request id the key is forgotten; with
                # one it stays, for the retry (same id) to write it again, new secret.
                if not request_id:
                    del self._directory.merchants[merchant_id].keys[key.key_id]
                raise
        return KeyCreated(_key(key), token)

    async def revoke_key(self, merchant_id: str, key_id: str) -> dict[str, Any]:
        await self._ready
        key = self._directory.revoke_key(merchant_id, key_id)
        if self._store is not None:
            await self._store.save_key(_key_row(merchant_id, key))
        return _key(key)

    async def stats(self) -> dict[str, Any]:
        return {"index": self.index, "merchants": len(self._directory.merchants),
                "campaigns": len(self._campaigns)}

    # --- campaigns ----------------------------------------------------------------------

    async def campaigns_of(self, merchant_ids: Sequence[str] | None = None) -> list[Campaign]:
        """Campaigns (every one, or those of some merchants): what order shards load."""
        await self._ready
        return [c for c in self._campaigns.values()
                if merchant_ids is None or c.merchant_id in merchant_ids]

    async def create_campaign(self, merchant_id: str, campaign_id: str, name: str,
                              starts_at_ms: int, ends_at_ms: int, buckets: int,
                              campaign_skus: CampaignSkus) -> dict[str, Any]:
        await self._ready
        skus = list(campaign_skus.rows())
        config = self._config
        self._directory.get(merchant_id)
        existing = self._campaigns.get((merchant_id, campaign_id))
        if existing is not None and not existing.ended and _same_campaign(
                existing, name, starts_at_ms, ends_at_ms, buckets, skus):
            return await self._describe(await self._stock(), existing)  # a retry
        now = clock.now_ms()
        validate_campaign(starts_at_ms, ends_at_ms, buckets, skus,
                          config.campaign_buckets_max, config.campaign_skus_max, now)
        async with self._campaign_lock:
            if (merchant_id, campaign_id) in self._campaigns:
                raise AlreadyExists(f"campaign {campaign_id} exists", campaign_id=campaign_id)
            if sum(1 for m, _ in self._campaigns if m == merchant_id) >= (
                    config.campaigns_per_merchant_max):
                raise FailedPrecondition(
                    f"a merchant holds at most {config.campaigns_per_merchant_max} campaigns")
            stock = await self._stock()
            sku_ids = [sku_id for sku_id, *_ in skus]
            levels = await self._levels(stock, merchant_id, sku_ids)
            planned: dict[str, CampaignSku] = {}
            for (sku_id, price, allotment, limit), level in zip(skus, levels, strict=True):
                if level is None:
                    raise NotFound(f"unknown sku {sku_id}", sku_id=sku_id)
                units = allotment or level.available
                if units <= 0 or units > level.available:
                    raise FailedPrecondition(
                        f"sku {sku_id} has {level.available} units available", sku_id=sku_id)
                base = stock.shard_of(merchant_id, sku_id)
                keys = tuple(self._bucket_name(stock, merchant_id, sku_id, campaign_id, k,
                                               (base + k) % len(stock))
                             for k in range(buckets))
                planned[sku_id] = CampaignSku(sku_id, price, allotment, limit, units, keys)
            campaign = Campaign(merchant_id, campaign_id, name, starts_at_ms, ends_at_ms,
                                buckets, planned, now)
            try:
                await self._fill_buckets(stock, campaign,
                                         dict(zip(sku_ids, levels, strict=True)))
            except BaseException:
                if (merchant_id, campaign_id) in self._campaigns:  # partly moved: undo
                    await self._end(campaign)
                raise
            await self._tell_order_shards(campaign)
            return await self._describe(stock, campaign)

    async def _fill_buckets(self, stock: ShardGroup[StockPeer], campaign: Campaign,
                            levels: dict[str, Any]) -> None:
        """Moves each SKU's units into its buckets. The campaign's row is written with the
        first SKU's move; from then on it exists (and is ended if a later move fails)."""
        first = True
        for sku in campaign.skus.values():
            level = levels[sku.sku_id]
            shares = split_units(sku.units, campaign.buckets)
            receivers = [(key, stock.shard_of(campaign.merchant_id, key))
                         for key in sku.bucket_keys]
            instances = [await stock.peer(shard).instance() for _, shard in receivers]
            buckets = SkuBatch.of((campaign.merchant_id, key, level.name,
                                   sku.sale_price_minor, 0, 0) for key, _ in receivers)
            await stock.of(campaign.merchant_id, sku.sku_id).transfer_out(
                campaign.merchant_id, sku.sku_id, sku.units,
                Shares(list(sku.bucket_keys), shares), buckets, campaign if first else None)
            if first:
                self._campaigns[(campaign.merchant_id, campaign.campaign_id)] = campaign
                first = False
            for (key, shard), share, instance in zip(receivers, shares, instances,
                                                     strict=True):
                await stock.peer(shard).deposit(campaign.merchant_id, key, level.name,
                                                sku.sale_price_minor, share, instance)
            metrics.record(metrics.units_moved(), sku.units, why="campaign")

    async def get_campaign(self, merchant_id: str, campaign_id: str) -> dict[str, Any]:
        await self._ready
        campaign = self._campaigns.get((merchant_id, campaign_id))
        if campaign is None:
            raise not_found(campaign_id)
        return await self._describe(await self._stock(), campaign)

    async def list_campaigns(self, merchant_id: str) -> list[dict[str, Any]]:
        await self._ready
        stock = await self._stock()
        return [await self._describe(stock, c) for (m, _), c in sorted(
            self._campaigns.items(), key=lambda item: item[1].created_at_ms) if m == merchant_id]

    async def end_campaign(self, merchant_id: str, campaign_id: str) -> dict[str, Any]:
        await self._ready
        campaign = self._campaigns.get((merchant_id, campaign_id))
        if campaign is None:
            raise not_found(campaign_id)
        async with self._campaign_lock:
            await self._end(campaign)
        return await self._describe(await self._stock(), campaign)

    async def _end(self, campaign: Campaign) -> None:
        if not campaign.ended:
            if self._store is not None:
                await self._store.end_campaign(campaign.merchant_id, campaign.campaign_id)
            campaign.ended = True
        await self._tell_order_shards(campaign)
        await self._settle(await self._stock(), campaign)

    async def _tell_order_shards(self, campaign: Campaign) -> None:
        orders: list[OrderPeer] = await find_peers(self._order_names)
        await until_done(lambda: asyncio.gather(*(o.campaign_changed(campaign)
                                                  for o in orders)),
                         f"campaign {campaign.campaign_id} to order shards")

    async def _describe(self, stock: ShardGroup[StockPeer],
                        campaign: Campaign) -> dict[str, Any]:
        keys = [key for sku in campaign.skus.values() for key in sku.bucket_keys]
        levels = dict(zip(keys, await self._levels(stock, campaign.merchant_id, keys),
                          strict=True))
        skus = []
        for sku in campaign.skus.values():
            mine = [levels[key] for key in sku.bucket_keys if levels[key] is not None]
            available = sum(level.available for level in mine)
            skus.append({"sku": sku, "available": available,
                         "reserved": sum(level.reserved for level in mine),
                         "sold": sum(level.sold for level in mine),
                         "sold_out": len(mine) == len(sku.bucket_keys) and available == 0})
        return {"campaign": campaign, "skus": skus}

    async def _stock(self) -> ShardGroup[StockPeer]:
        """The stock shards as the order shards route to them now (resharding moves)."""
        orders: list[OrderPeer] = await find_peers(self._order_names[:1])
        table = await orders[0].stock_routing()
        if not table.settled:  # stock shards are rebuilding: units must not move now
            raise Unavailable("stock is being resharded; retry")
        peers: list[StockPeer] = await find_peers([f"stock-{i}" for i in range(table.shards)])
        return ShardGroup(peers, table, self._config.slots_total, by_sku=True)

    async def _levels(self, stock: ShardGroup[StockPeer], merchant_id: str,
                      sku_ids: Sequence[str]) -> list[Any]:
        groups: dict[int, list[int]] = {}
        for i, sku_id in enumerate(sku_ids):
            groups.setdefault(stock.shard_of(merchant_id, sku_id), []).append(i)
        answers = await asyncio.gather(*(
            stock.peer(shard).levels(SkuKeys([merchant_id] * len(positions),
                                             [sku_ids[i] for i in positions]))
            for shard, positions in groups.items()))
        levels: list[Any] = [None] * len(sku_ids)
        for positions, answer in zip(groups.values(), answers, strict=True):
            for i, level in zip(positions, answer, strict=True):
                levels[i] = level
        return levels

    @staticmethod
    def _bucket_name(stock: ShardGroup[StockPeer], merchant_id: str, sku_id: str, campaign_id: str,
                     bucket: int, shard: int) -> str:
        """A bucket id that routes to `shard` (so K buckets sit on K shards)."""
        for salt in range(100_000):
            key = bucket_key(sku_id, campaign_id, bucket, salt)
            if stock.shard_of(merchant_id, key) == shard:
                return key
        return bucket_key(sku_id, campaign_id, bucket)

    async def _move(self, stock: ShardGroup[StockPeer], merchant_id: str, source: str,
                    target: str,
                    units: int, name: str, price_minor: int, why: str) -> int:
        """Moves up to `units` available units from one counter to another."""
        receiver = stock.of(merchant_id, target)
        instance = await receiver.instance(Expected(merchant_id, target, units))
        try:
            moved = await stock.of(merchant_id, source).transfer_out(
                merchant_id, source, units, Shares([target], [units]), None, None, True)
        except BaseException:
            await receiver.cancel_expected(merchant_id, target)
            raise
        if moved:
            await receiver.deposit(merchant_id, target, name, price_minor, moved, instance)
            metrics.record(metrics.units_moved(), moved, why=why)
        else:
            await receiver.cancel_expected(merchant_id, target)
        return moved

    async def _balance_once(self) -> None:
        if not self._campaigns:
            return
        now = clock.now_ms()
        stock = await self._stock()
        async with self._campaign_lock:
            for key, campaign in list(self._campaigns.items()):
                if key in self._settled:
                    continue
                if campaign.ended or now >= campaign.ends_at_ms:
                    await self._settle(stock, campaign)
                else:
                    await self._rebalance(stock, campaign)

    async def _rebalance(self, stock: ShardGroup[StockPeer], campaign: Campaign) -> None:
        merchant_id = campaign.merchant_id
        for sku in campaign.skus.values():
            levels = await self._levels(stock, merchant_id, sku.bucket_keys)
            if any(level is None for level in levels):
                continue  # a bucket's shard is reloading: next time
            available = [level.available for level in levels]
            if sum(available) == 0:
                await self._announce_sold_out(campaign, sku.sku_id)
                continue
            for source, target, units in rebalance_moves(
                    available, self._config.campaign_bucket_low_water):
                await self._move(stock, merchant_id, sku.bucket_keys[source],
                                 sku.bucket_keys[target], units, levels[target].name,
                                 sku.sale_price_minor, "rebalance")

    async def _settle(self, stock: ShardGroup[StockPeer], campaign: Campaign) -> None:
        """Returns every unsold, unheld unit of an over campaign to its SKU (holds still
        live return later, when released)."""
        merchant_id = campaign.merchant_id
        holding = False
        for sku in campaign.skus.values():
            levels = await self._levels(stock, merchant_id, [sku.sku_id, *sku.bucket_keys])
            base, buckets = levels[0], levels[1:]
            if base is None:
                holding = True
                continue
            for key, level in zip(sku.bucket_keys, buckets, strict=True):
                if level is None:
                    continue  # never filled (a creation that failed before it)
                if level.available:
                    await self._move(stock, merchant_id, key, sku.sku_id, level.available,
                                     base.name, base.price_minor, "settle")
                holding = holding or level.reserved > 0
        if not holding:
            self._settled.add((merchant_id, campaign.campaign_id))

    async def _announce_sold_out(self, campaign: Campaign, sku_id: str) -> None:
        """stock.sold_out for a campaign SKU: only once every bucket is empty."""
        key = (campaign.merchant_id, campaign.campaign_id, sku_id)
        if key in self._announced or self._store is None:
            return
        now = clock.now_ms()
        event_id = f"sold_out:{campaign.merchant_id}:{sku_id}:{campaign.campaign_id}"
        reason = f"campaign:{campaign.campaign_id}"
        try:
            await self._store.save_skus([], [], [(
                event_id, campaign.merchant_id, "stock.sold_out", "", 0,
                stock_event(event_id, campaign.merchant_id, "stock.sold_out", sku_id, 0,
                            reason, now), now)])
            self._announced.add(key)
        except Exception:
            log.warning("could not record a sold-out event", exc_info=True)

    async def authenticate(self, token: str) -> Principal:
        await self._ready
        return self._directory.authenticate(token)


def _same_campaign(campaign: Campaign, name: str, starts_at_ms: int, ends_at_ms: int,
                   buckets: int, skus: Sequence[tuple[str, int, int, int]]) -> bool:
    """Is a CreateCampaign the retry of the one that made `campaign` (same payload)?"""
    return ((campaign.name, campaign.starts_at_ms, campaign.ends_at_ms, campaign.buckets)
            == (name, starts_at_ms, ends_at_ms, buckets)
            and [(s.sku_id, s.sale_price_minor, s.allotment, s.per_buyer_limit)
                 for s in campaign.skus.values()] == [tuple(sku) for sku in skus])


def _key_row(merchant_id: str, key: ApiKeyRecord) -> tuple[Any, ...]:
    return (merchant_id, key.key_id, key.secret_hash, sorted(int(s) for s in key.scopes),
            key.label, key.created_at_ms, key.revoked, key.request_id)


def _merchant(merchant: MerchantRecord) -> dict[str, Any]:
    return {"merchant_id": merchant.merchant_id, "name": merchant.name,
            "created_at_ms": merchant.created_at_ms,
            "payment_window_s": merchant.payment_window_s,
            "cart_hold_s": merchant.cart_hold_s, "currency": merchant.currency}



def _key(key: ApiKeyRecord) -> dict[str, Any]:
    return {"key_id": key.key_id, "scopes": sorted(int(s) for s in key.scopes),
            "label": key.label, "created_at_ms": key.created_at_ms, "revoked": key.revoked}
