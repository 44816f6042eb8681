"""MerchantShard: merchant profiles and API keys (key: merchant)."""

from __future__ import annotations

from typing import Any

from actors import clock
from engine.config import Config
from engine.merchants import MerchantDirectory, Principal, Scope


class MerchantShard:
    def __init__(self, index: int, config: Config) -> None:
        self.index = index
        self._config = config
        self._directory = MerchantDirectory(config.merchants_max, config.api_keys_per_merchant_max)

    async def create(self, merchant_id: str, name: str,
                     payment_window_s: int) -> tuple[dict[str, Any], dict[str, Any], str]:
        window_s = payment_window_s or self._config.payment_window_s_default
        merchant, key, token = self._directory.create(merchant_id, name, window_s,
                                                      clock.now_ms())
        return _merchant(merchant), _key(key), token

    async def get(self, merchant_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        merchant = self._directory.get(merchant_id)
        return _merchant(merchant), [_key(k) for k in merchant.keys.values()]

    async def create_key(self, merchant_id: str, scopes: list[int],
                         label: str) -> tuple[dict[str, Any], str]:
        key, token = self._directory.create_key(
            merchant_id, frozenset(Scope(s) for s in scopes), label, clock.now_ms())
        return _key(key), token

    async def revoke_key(self, merchant_id: str, key_id: str) -> dict[str, Any]:
        return _key(self._directory.revoke_key(merchant_id, key_id))

    async def authenticate(self, token: str) -> Principal:
        return self._directory.authenticate(token)


def _merchant(merchant: Any) -> dict[str, Any]:
    return {"merchant_id": merchant.merchant_id, "name": merchant.name,
            "created_at_ms": merchant.created_at_ms,
            "payment_window_s": merchant.payment_window_s}


def _key(key: Any) -> dict[str, Any]:
    return {"key_id": key.key_id, "scopes": sorted(int(s) for s in key.scopes),
            "label": key.label, "created_at_ms": key.created_at_ms, "revoked": key.revoked}
