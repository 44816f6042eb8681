"""MerchantShard: merchant profiles and API keys (key: merchant). Every change is in
Postgres before it is answered; on start the shard loads its merchants."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from actors import clock
from actors.persistence import open_store
from adapters.postgres import Store
from engine.config import Config
from engine.merchants import (
    ApiKeyRecord,
    MerchantDirectory,
    MerchantRecord,
    Principal,
    Scope,
)
from engine.sharding import slot_of


class MerchantShard:
    def __init__(self, index: int, config: Config, slots: Sequence[int]) -> None:
        self.index = index
        self._config = config
        self._slots = set(slots)
        self._directory = MerchantDirectory(config.merchants_max, config.api_keys_per_merchant_max)
        self._store: Store | None = None
        self._ready = asyncio.get_running_loop().create_task(self._start())

    async def _start(self) -> None:
        self._store = await open_store(self._config.postgres_dsn, 2)
        if self._store is None:
            return
        merchants, keys = await self._store.load_merchants()
        for row in merchants:
            if slot_of(row["merchant_id"], "", self._config.slots_total) in self._slots:
                self._directory.merchants[row["merchant_id"]] = MerchantRecord(
                    row["merchant_id"], row["name"], row["created_at_ms"],
                    row["payment_window_s"])
        for row in keys:
            merchant = self._directory.merchants.get(row["merchant_id"])
            if merchant is not None:
                merchant.keys[row["key_id"]] = ApiKeyRecord(
                    row["key_id"], row["secret_hash"], frozenset(Scope(s) for s in row["scopes"]),
                    row["label"], row["created_at_ms"], row["revoked"])

    async def create(self, merchant_id: str, name: str,
                     payment_window_s: int) -> tuple[dict[str, Any], dict[str, Any], str]:
        await self._ready
        window_s = payment_window_s or self._config.payment_window_s_default
        merchant, key, token = self._directory.create(merchant_id, name, window_s,
                                                      clock.now_ms())
        if self._store is not None:
            try:
                await self._store.save_merchant_with_key(
                    (merchant.merchant_id, merchant.name, merchant.payment_window_s,
                     merchant.created_at_ms), _key_row(merchant_id, key))
            except Exception:
                del self._directory.merchants[merchant_id]  # not durable: not created
                raise
        return _merchant(merchant), _key(key), token

    async def get(self, merchant_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        await self._ready
        merchant = self._directory.get(merchant_id)
        return _merchant(merchant), [_key(k) for k in merchant.keys.values()]

    async def create_key(self, merchant_id: str, scopes: list[int],
                         label: str) -> tuple[dict[str, Any], str]:
        await self._ready
        key, token = self._directory.create_key(
            merchant_id, frozenset(Scope(s) for s in scopes), label, clock.now_ms())
        if self._store is not None:
            try:
                await self._store.save_key(_key_row(merchant_id, key))
            except Exception:
                del self._directory.merchants[merchant_id].keys[key.key_id]
                raise
        return _key(key), token

    async def revoke_key(self, merchant_id: str, key_id: str) -> dict[str, Any]:
        await self._ready
        key = self._directory.revoke_key(merchant_id, key_id)
        if self._store is not None:
            await self._store.save_key(_key_row(merchant_id, key))
        return _key(key)

    async def stats(self) -> dict[str, Any]:
        return {"index": self.index, "merchants": len(self._directory.merchants)}

    async def authenticate(self, token: str) -> Principal:
        await self._ready
        return self._directory.authenticate(token)


def _key_row(merchant_id: str, key: ApiKeyRecord) -> tuple[Any, ...]:
    return (merchant_id, key.key_id, key.secret_hash, sorted(int(s) for s in key.scopes),
            key.label, key.created_at_ms, key.revoked)


def _merchant(merchant: MerchantRecord) -> dict[str, Any]:
    return {"merchant_id": merchant.merchant_id, "name": merchant.name,
            "created_at_ms": merchant.created_at_ms,
            "payment_window_s": merchant.payment_window_s}


def _key(key: ApiKeyRecord) -> dict[str, Any]:
    return {"key_id": key.key_id, "scopes": sorted(int(s) for s in key.scopes),
            "label": key.label, "created_at_ms": key.created_at_ms, "revoked": key.revoked}
