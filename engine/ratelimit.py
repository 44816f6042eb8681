"""Token buckets: per-key rate limits as a pure function of time."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["RateLimits", "TokenBucket"]


@dataclass(slots=True)
class TokenBucket:
    """`rate_per_s` tokens a second, at most `burst` saved up. One order is one token.

    A call that costs more than the burst (a batch bigger than the burst) passes when the
    bucket is full and leaves it in debt: the next calls wait until the debt is paid back,
    so the average rate holds and such a call is never refused forever."""

    rate_per_s: float
    burst: float
    tokens: float
    updated_ms: int

    @classmethod
    def full(cls, rate_per_s: float, burst: float, now_ms: int) -> TokenBucket:
        return cls(rate_per_s, burst, burst, now_ms)

    def take(self, count: int, now_ms: int) -> int:
        """Takes `count` tokens and returns 0, or takes nothing and returns how many
        milliseconds until the call would pass (`count` tokens, or a full bucket when
        `count` is more than the burst)."""
        elapsed_s = max(0, now_ms - self.updated_ms) / 1000
        self.tokens = min(self.burst, self.tokens + elapsed_s * self.rate_per_s)
        self.updated_ms = now_ms
        if count <= self.tokens or self.tokens >= self.burst:
            self.tokens -= count
            return 0
        missing = min(count, self.burst) - self.tokens
        return max(1, int(missing / self.rate_per_s * 1000) + 1)


class RateLimits:
    """One rate for many names (API keys, merchants): a bucket per name, made full when
    the name is first seen; past `names_max` names the one seen first is forgotten (it
    starts full again), so memory is bounded whatever names callers send."""

    __slots__ = ("rate_per_s", "burst", "names_max", "_buckets")

    def __init__(self, rate_per_s: float, burst: float, names_max: int) -> None:
        self.rate_per_s, self.burst, self.names_max = rate_per_s, burst, names_max
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def take(self, name: str, count: int, now_ms: int) -> int:
        """``TokenBucket.take`` on `name`'s bucket: 0, or the milliseconds to wait."""
        bucket = self._buckets.get(name)
        if bucket is None:
            bucket = self._buckets[name] = TokenBucket.full(self.rate_per_s, self.burst,
                                                            now_ms)
            if len(self._buckets) > self.names_max:
                self._buckets.popitem(last=False)
        return bucket.take(count, now_ms)

    def __len__(self) -> int:
        return len(self._buckets)

    def clear(self) -> None:
        """Forgets every name (the clock the buckets were read on moved)."""
        self._buckets.clear()
