"""Bulk provider revocation: bounded concurrency, a per-connector rate limit, failures counted.

Time is a fake clock handed to the token bucket: the provider reads it when each call arrives,
so the spacing of arrivals is exact and the test never sleeps.
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import timedelta

import pytest
from exchange_helpers import (
    IDENTITY,
    START,
    CountingProvider,
    Lent,
    MemoryAuditStore,
    MemoryExchangeStore,
    connector_of,
    view_of,
)

from valetkey.core.audit import AuditLog
from valetkey.core.clock import FrozenClock
from valetkey.core.gate import ProviderGate
from valetkey.core.models import Connector, Member, Role, Subject, TokenRequest
from valetkey.core.ports import LocalBus
from valetkey.core.providers import Capabilities, MintedToken, ProviderContext, RevokeResult
from valetkey.core.ratelimit import RateLimits, TokenBucket
from valetkey.core.revocation import RevocationRun, RevocationService
from valetkey.errors import ProviderError
from valetkey.providers.registry import ProviderRegistry

OWNER = Member(team_id=IDENTITY.team_id, member_id="mem_1", name="owner", role=Role.OWNER)


class FakeTime:
    """A monotonic clock that moves only when the bucket sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


class RevokingProvider(CountingProvider):
    """Declares revocation; records each call's arrival time and the calls in flight; refuses
    (raises or answers an error) for the tokens named in ``raise_for`` / ``refuse``."""

    def __init__(self, time: FakeTime) -> None:
        super().__init__()
        self.time = time
        self.arrivals: list[tuple[float, str]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.raise_for: set[str] = set()
        self.refuse: set[str] = set()

    def capabilities(self, connector: Connector) -> Capabilities:
        return Capabilities(self.subjects, scopable=True, short_lived=True, revocation=True)

    async def revoke(
        self, ctx: ProviderContext[object], connector: Connector, token: MintedToken
    ) -> RevokeResult:
        self.arrivals.append((self.time.now, token.token))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            for _ in range(3):
                await asyncio.sleep(0)  # other calls may start meanwhile
            if token.token in self.raise_for:
                raise ProviderError("the revocation endpoint answered 503")
            if token.token in self.refuse:
                return RevokeResult(revoked=False, error="invalid_client")
            return RevokeResult(revoked=True)
        finally:
            self.in_flight -= 1


async def _service(
    n: int, *, rate: float, burst: int = 1, concurrency: int = 4
) -> tuple[RevocationService, RevokingProvider, MemoryExchangeStore, FakeTime]:
    time = FakeTime()
    provider = RevokingProvider(time)
    connector = connector_of("counting")
    store = MemoryExchangeStore(view_of(connector))
    clock = FrozenClock(START)
    for i in range(n):
        await store.record_mint(
            identity=IDENTITY,
            connector=connector,
            request=TokenRequest(subject=Subject("app"), scopes=(f"s{i}",)),
            minted=MintedToken(token=f"at_{i}", expires_at=START + timedelta(hours=1)),
            key_hash=f"key{i}",
            serve_until=START + timedelta(hours=1),
        )
    service = RevocationService(
        store=store,
        providers=ProviderRegistry([provider]),
        audit=AuditLog(MemoryAuditStore(), clock),
        bus=LocalBus(),
        clock=clock,
        ctx=Lent(clock),
        gate=ProviderGate(concurrency=8),
        concurrency=concurrency,
        limits=RateLimits(rate, burst, monotonic=time.monotonic, sleep=time.sleep),
    )
    return service, provider, store, time


async def test_provider_calls_arrive_no_faster_than_the_rate() -> None:
    """At 10 per second (burst 1), 30 revocations arrive at least 0.1 s apart on the fake clock."""
    service, provider, _, time = await _service(30, rate=10.0)
    counts = await service.revoke(OWNER, "counting/main", None)
    assert counts.provider_revoked == 30
    times = [at for at, _ in provider.arrivals]
    assert len(times) == 30
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) == pytest.approx(0.1)
    assert time.now == pytest.approx(2.9)


async def test_a_burst_is_let_through_then_the_rate_holds() -> None:
    """Burst 5 at 2 per second: five calls at once, then one every half second."""
    service, provider, _, _ = await _service(9, rate=2.0, burst=5, concurrency=8)
    await service.revoke(OWNER, "counting/main", None)
    times = sorted(at for at, _ in provider.arrivals)
    assert times[:5] == [0.0] * 5
    assert times[5:] == pytest.approx([0.5, 1.0, 1.5, 2.0])


async def test_calls_in_flight_never_exceed_the_concurrency() -> None:
    """With a rate that never waits, at most ``concurrency`` provider calls run at once."""
    service, provider, _, _ = await _service(60, rate=10_000.0, burst=100, concurrency=3)
    await service.revoke(OWNER, "counting/main", None)
    assert provider.most_in_flight == 3
    assert len(provider.arrivals) == 60


async def test_failures_are_counted_and_do_not_stop_the_rest() -> None:
    """A call that raises and one the provider refuses are counted failed; every other token is
    revoked; the ledger records each outcome and no cache entry is left."""
    service, provider, store, _ = await _service(40, rate=10_000.0, burst=100)
    provider.raise_for = {"at_3", "at_17"}
    provider.refuse = {"at_20"}
    seen: list[int] = []

    def progress(run: RevocationRun) -> None:
        seen.append(run.done)

    run = await service.begin(OWNER, "counting/main", None, progress=progress)
    assert (run.found, run.deleted, run.total) == (40, 40, 40)
    counts = await run.result()
    assert counts.to_wire() == {
        "tokensFound": 40,
        "deleted": 40,
        "providerRevoked": 37,
        "providerSkipped": 0,
        "providerFailed": 3,
    }
    assert sorted(token for _, token in provider.arrivals) == sorted(f"at_{i}" for i in range(40))
    outcomes = {row.token.token: row.revoked for row in store.ledger.values()}
    assert outcomes["at_3"] == outcomes["at_17"] == "failed: provider_error"
    assert outcomes["at_20"] == "failed: invalid_client"
    assert sum(o == "revoked" for o in outcomes.values()) == 37
    assert store.cache == {}
    assert seen == sorted(seen)
    assert seen[-1] == 40


async def test_a_bucket_refuses_nonsense_settings() -> None:
    """A rate of zero or a burst below one is refused at construction."""
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(0)
    with pytest.raises(ValueError, match="burst"):
        RateLimits(1.0, 0)
