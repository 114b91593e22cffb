"""A token bucket per connector: how fast the broker's bulk work may call one provider.

Bulk revocation (``core.revocation``) sends one RFC 7009 request per token; a team revoking
100,000 tokens must not flood its provider (which would refuse or throttle the team's other
traffic). Each connector gets a bucket of ``burst`` tokens refilled at ``rate`` per second;
a call takes one token, waiting for it when the bucket is empty. The limit is per broker
process (per replica): N replicas revoking the same connector at once send at most N x rate.

Time is injected (``monotonic`` and ``sleep``), so tests drive the bucket with a fake clock
and read the arrival times at a stand-in provider.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

__all__ = ["DEFAULT_REVOKE_RATE", "RateLimits", "TokenBucket"]

#: Provider revocation requests per second per connector (per replica), unless configured.
DEFAULT_REVOKE_RATE = 20.0
_EPSILON = 1e-9
#: Connectors whose buckets are kept; the least recently used are dropped beyond that.
MAX_BUCKETS = 10_000


class TokenBucket:
    """``burst`` tokens, refilled at ``rate`` per second; ``take`` waits for one."""

    def __init__(
        self,
        rate: float,
        burst: int = 1,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst at least 1")
        self.rate = rate
        self.burst = burst
        self._monotonic = monotonic
        self._sleep = sleep
        self._tokens = float(burst)
        self._at = monotonic()
        self._lock = asyncio.Lock()

    async def take(self) -> None:
        """Take one token, waiting until one is there (callers are served in arrival order)."""
        async with self._lock:
            while True:
                now = self._monotonic()
                self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
                self._at = now
                if self._tokens >= 1 - _EPSILON:  # rounding must not leave a wait of 1e-17 s
                    self._tokens = max(0.0, self._tokens - 1)
                    return
                await self._sleep((1 - self._tokens) / self.rate)


class RateLimits:
    """One ``TokenBucket`` per connector id, made on first use, at most ``MAX_BUCKETS`` kept."""

    def __init__(
        self,
        rate: float = DEFAULT_REVOKE_RATE,
        burst: int = 1,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        TokenBucket(rate, burst)  # checks the values once, here
        self.rate = rate
        self.burst = burst
        self._monotonic = monotonic
        self._sleep = sleep
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def bucket(self, connector_id: str) -> TokenBucket:
        bucket = self._buckets.get(connector_id)
        if bucket is None:
            bucket = TokenBucket(
                self.rate, self.burst, monotonic=self._monotonic, sleep=self._sleep
            )
            self._buckets[connector_id] = bucket
            while len(self._buckets) > MAX_BUCKETS:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(connector_id)
        return bucket
