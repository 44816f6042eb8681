"""Merchants, API keys and scopes.

An API key is the bearer token ``ftx1.<merchant_id>.<key_id>.<secret>``: the gateway can
route it to the merchant's shard without a lookup table, and the shard stores only
``sha256(secret)``. The operator key (may create merchants) is configured, not stored.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from enum import IntEnum
from typing import NamedTuple

from flashtx.engine.errors import (
    AlreadyExists,
    FailedPrecondition,
    IdempotencyConflict,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)

__all__ = [
    "ApiKeyRecord",
    "MerchantDirectory",
    "MerchantRecord",
    "Principal",
    "Scope",
    "hash_secret",
    "parse_token",
]

TOKEN_PREFIX = "ftx1"
OPERATOR = "__operator__"
_MERCHANT_ID = re.compile(r"[a-z0-9_-]{3,40}")
_CURRENCY = re.compile(r"[A-Z]{3}")


class Scope(IntEnum):
    """Numbers equal flashtx.v1.Scope."""

    CHANNEL = 1
    SAAS = 2
    ADMIN = 3
    # Platform operator: creates merchants. Not a merchant scope; never in the API.
    OPERATOR = 100


class Principal(NamedTuple):
    """Who is calling: one merchant and its scopes (or the operator)."""

    merchant_id: str
    key_id: str
    scopes: frozenset[Scope]
    payment_window_s: int
    cart_hold_s: int = 0  # the merchant's cart reservation policy (0: at checkout)
    currency: str = ""  # ISO 4217: the merchant's; every order it places records it

    def require(self, scope: Scope) -> None:
        # admin may do everything a channel or SaaS key may, for its own merchant.
        if scope in self.scopes or (Scope.ADMIN in self.scopes and scope != Scope.OPERATOR):
            return
        raise PermissionDenied(f"this key lacks the {scope.name.lower()} scope",
                               scope=scope.name.lower())


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_token(token: str) -> tuple[str, str, str]:
    """Splits a bearer token into (merchant_id, key_id, secret)."""
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != TOKEN_PREFIX or not all(parts[1:]):
        raise Unauthenticated("malformed API key")
    return parts[1], parts[2], parts[3]


@dataclass(slots=True)
class ApiKeyRecord:
    key_id: str
    secret_hash: str
    scopes: frozenset[Scope]
    label: str
    created_at_ms: int
    revoked: bool = False
    request_id: str = ""  # the client's id of the CreateApiKey that made it ("": none)
    # Made here and never used: a retry of its request may still answer it with a new
    # secret (the first answer was lost). Once a call used it, or it was loaded from the
    # database, a retry never changes the credential.
    unused: bool = False


@dataclass(slots=True)
class MerchantRecord:
    merchant_id: str
    name: str
    created_at_ms: int
    payment_window_s: int
    keys: dict[str, ApiKeyRecord] = field(default_factory=dict)
    cart_hold_s: int = 0
    currency: str = "USD"  # ISO 4217, fixed at creation


class MerchantDirectory:
    def __init__(self, merchants_max: int, keys_per_merchant_max: int) -> None:
        self.merchants: dict[str, MerchantRecord] = {}
        self._merchants_max = merchants_max
        self._keys_max = keys_per_merchant_max

    def create(self, merchant_id: str, name: str, payment_window_s: int, now_ms: int,
               cart_hold_s: int = 0, request_id: str = "", currency: str = "USD"
               ) -> tuple[MerchantRecord, ApiKeyRecord, str, bool]:
        """Creates a merchant and its first admin key; returns the key's token once, and
        whether this was a replay: a `request_id` that created this merchant, with the
        same fields, answers it again with a new secret for its admin key."""
        if not _MERCHANT_ID.fullmatch(merchant_id):
            raise InvalidArgument("merchant_id", "must match [a-z0-9_-]{3,40}")
        existing = self.merchants.get(merchant_id)
        if existing is not None:
            admin = next((k for k in existing.keys.values()
                          if request_id and k.request_id == request_id), None)
            if admin is None or (existing.name, existing.payment_window_s,
                                 existing.cart_hold_s, existing.currency) != (
                                     name, payment_window_s, cart_hold_s, currency):
                raise AlreadyExists(f"merchant {merchant_id} exists", merchant_id=merchant_id)
            key, token = self.create_key(merchant_id, admin.scopes, admin.label, now_ms,
                                         request_id)
            return existing, key, token, True
        if len(self.merchants) >= self._merchants_max:
            raise FailedPrecondition("this merchant shard is full")
        if not _CURRENCY.fullmatch(currency):
            raise InvalidArgument("currency", "must be an ISO 4217 code: three capital letters")
        merchant = MerchantRecord(merchant_id, name, now_ms, payment_window_s,
                                  cart_hold_s=cart_hold_s, currency=currency)
        self.merchants[merchant_id] = merchant
        key, token = self.create_key(merchant_id, frozenset({Scope.ADMIN}), "admin", now_ms,
                                     request_id)
        return merchant, key, token, False

    def get(self, merchant_id: str) -> MerchantRecord:
        merchant = self.merchants.get(merchant_id)
        if merchant is None:
            raise NotFound(f"no merchant {merchant_id}")
        return merchant

    def create_key(self, merchant_id: str, scopes: frozenset[Scope], label: str,
                   now_ms: int, request_id: str = "") -> tuple[ApiKeyRecord, str]:
        """A new key and its token. A `request_id` already used answers that key again
        with a new secret (the first answer never arrived: its secret stops working);
        used for other scopes or another label, it is IdempotencyConflict."""
        merchant = self.get(merchant_id)
        if not scopes or Scope.OPERATOR in scopes:
            raise InvalidArgument("scopes", "name one or more of channel, saas, admin")
        if request_id:
            for existing in merchant.keys.values():
                if existing.request_id != request_id:
                    continue
                if (existing.scopes, existing.label, existing.revoked) != (scopes, label, False):
                    raise IdempotencyConflict(f"request_id {request_id} made another key",
                                              request_id=request_id)
                if not existing.unused:
                    raise AlreadyExists(
                        f"request_id {request_id} made key {existing.key_id}, which is in"
                        " use: a retry does not change its secret (create another key)",
                        request_id=request_id, key_id=existing.key_id)
                secret = secrets.token_urlsafe(24)
                existing.secret_hash = hash_secret(secret)
                return existing, f"{TOKEN_PREFIX}.{merchant_id}.{existing.key_id}.{secret}"
        if len(merchant.keys) >= self._keys_max:
            raise FailedPrecondition(f"a merchant holds at most {self._keys_max} keys")
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(24)
        key = ApiKeyRecord(key_id, hash_secret(secret), scopes, label, now_ms,
                           request_id=request_id, unused=True)
        merchant.keys[key_id] = key
        return key, f"{TOKEN_PREFIX}.{merchant_id}.{key_id}.{secret}"

    def revoke_key(self, merchant_id: str, key_id: str) -> ApiKeyRecord:
        key = self.get(merchant_id).keys.get(key_id)
        if key is None:
            raise NotFound(f"no key {key_id}", key_id=key_id)
        key.revoked = True
        return key

    def authenticate(self, token: str) -> Principal:
        merchant_id, key_id, secret = parse_token(token)
        merchant = self.merchants.get(merchant_id)
        key = merchant.keys.get(key_id) if merchant else None
        if merchant is None or key is None or not hmac.compare_digest(
                key.secret_hash, hash_secret(secret)):
            raise Unauthenticated("unknown API key")
        if key.revoked:
            raise Unauthenticated("API key revoked")
        key.unused = False
        return Principal(merchant_id, key_id, key.scopes, merchant.payment_window_s,
                         merchant.cart_hold_s, merchant.currency)


def operator_principal() -> Principal:
    return Principal(OPERATOR, OPERATOR, frozenset({Scope.OPERATOR}), 0)


__all__ += ["OPERATOR", "TOKEN_PREFIX", "operator_principal"]
