"""The provider gate: per-connector slots, a bounded wait, a deadline, and a bounded map of connectors."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from valetkey.core.gate import ProviderGate
from valetkey.errors import InvalidRequest, ProviderBusy, ProviderTimeout
from valetkey.server.settings import Settings


class _Provider:
    """A stand-in call that records how many run at once."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.running = 0
        self.most = 0
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await asyncio.sleep(self.seconds)
            return "token"
        finally:
            self.running -= 1


async def test_calls_beyond_the_slots_wait_then_are_refused_busy() -> None:
    """With 2 slots and 4 waiters, 20 calls run 2 at a time; the rest are refused provider_busy, some at once."""
    gate = ProviderGate(concurrency=2, wait_seconds=0.2, timeout_seconds=5, max_waiting=4)
    slow = _Provider(1.0)
    started = time.monotonic()

    refusals: list[ProviderBusy] = []

    async def one() -> tuple[str, float]:
        try:
            return await gate.call("con_a", slow), time.monotonic() - started
        except ProviderBusy as exc:
            refusals.append(exc)
            return "busy", time.monotonic() - started

    results = await asyncio.gather(*(one() for _ in range(20)))
    assert (slow.most, slow.calls) == (2, 2)
    assert {(e.status, e.details["retryAfterSeconds"]) for e in refusals} == {(503, 1)}
    assert [r for r, _ in results].count("token") == 2
    busy = [t for r, t in results if r == "busy"]
    assert len(busy) == 18
    assert sum(1 for t in busy if t < 0.1) == 14  # beyond the 4 waiters: refused at once
    assert all(t < 0.5 for t in busy)  # the waiters: after the 0.2 s wait


async def test_a_waiter_gets_a_slot_freed_within_its_wait() -> None:
    """A call waiting for a slot runs as soon as one frees, within the wait."""
    gate = ProviderGate(concurrency=1, wait_seconds=1.0, timeout_seconds=5)
    quick = _Provider(0.05)
    assert await asyncio.gather(*(gate.call("con_a", quick) for _ in range(3))) == ["token"] * 3
    assert quick.most == 1


async def test_a_hung_call_ends_at_the_deadline() -> None:
    """A provider that never answers is cancelled at the deadline with provider_timeout (504)."""
    gate = ProviderGate(concurrency=2, wait_seconds=0.1, timeout_seconds=0.2)
    hung = _Provider(30)
    started = time.monotonic()
    with pytest.raises(ProviderTimeout) as caught:
        await gate.call("con_a", hung)
    assert 0.15 < time.monotonic() - started < 1.0
    assert (caught.value.status, caught.value.code) == (504, "provider_timeout")
    assert (hung.running, gate.in_flight("con_a")) == (0, 0)


async def test_a_timeout_raised_by_the_call_itself_is_not_the_deadline() -> None:
    """A TimeoutError raised inside the call propagates as it is, not as provider_timeout."""
    gate = ProviderGate(timeout_seconds=5)

    async def fails() -> str:
        raise TimeoutError("the call's own")

    with pytest.raises(TimeoutError, match="the call's own"):
        await gate.call("con_a", fails)


async def test_a_saturated_connector_does_not_slow_another() -> None:
    """While connector A's slots and queue are full of hung calls, B's calls run at once."""
    gate = ProviderGate(concurrency=2, wait_seconds=0.5, timeout_seconds=3)
    hung, quick = _Provider(30), _Provider(0.01)
    stuck = [asyncio.create_task(gate.call("con_a", hung)) for _ in range(12)]
    await asyncio.sleep(0.05)
    started = time.monotonic()
    assert await asyncio.gather(*(gate.call("con_b", quick) for _ in range(10))) == ["token"] * 10
    assert time.monotonic() - started < 0.3
    for task in stuck:
        task.cancel()
    await asyncio.gather(*stuck, return_exceptions=True)
    assert gate.in_flight("con_a") == 0


async def test_the_map_of_connectors_stays_bounded() -> None:
    """Slot records of idle connectors are dropped beyond max_connectors; busy ones are kept."""
    gate = ProviderGate(concurrency=1, wait_seconds=0.1, timeout_seconds=5, max_connectors=10)
    hung = _Provider(30)
    busy = asyncio.create_task(gate.call("con_busy", hung))
    await asyncio.sleep(0.01)
    quick = _Provider(0)
    for i in range(200):
        await gate.call(f"con_{i}", quick)
    assert len(gate) <= 10
    assert gate.in_flight("con_busy") == 1  # still counted: its slot was not forgotten
    with pytest.raises(ProviderBusy):
        await gate.call("con_busy", quick)
    busy.cancel()
    await asyncio.gather(busy, return_exceptions=True)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"provider_concurrency": 100, "outbound_connections": 100}, "provider_concurrency"),
        ({"provider_concurrency": 0}, "provider_concurrency"),
        ({"provider_timeout_seconds": 0}, "provider_timeout_seconds"),
        ({"provider_wait_seconds": -1}, "provider_timeout_seconds"),
    ],
)
def test_settings_refuse_limits_that_let_one_connector_take_the_pool(
    overrides: dict[str, float], field: str, tmp_path: Path
) -> None:
    """A per-connector concurrency not below the outbound pool, or a non-positive deadline, is refused."""
    with pytest.raises(InvalidRequest) as caught:
        Settings(data_dir=tmp_path, **overrides)  # type: ignore[arg-type]
    assert caught.value.details["field"] == field


def test_settings_read_the_limits_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """VALETKEY_PROVIDER_* and VALETKEY_OUTBOUND_CONNECTIONS are read; a non-number is refused by name."""
    monkeypatch.setenv("VALETKEY_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("VALETKEY_PROVIDER_CONCURRENCY", "3")
    monkeypatch.setenv("VALETKEY_PROVIDER_WAIT", "0.5")
    monkeypatch.setenv("VALETKEY_PROVIDER_TIMEOUT", "4")
    monkeypatch.setenv("VALETKEY_OUTBOUND_CONNECTIONS", "30")
    settings = Settings.from_env()
    assert (
        settings.provider_concurrency,
        settings.provider_wait_seconds,
        settings.provider_timeout_seconds,
        settings.outbound_connections,
    ) == (3, 0.5, 4.0, 30)
    monkeypatch.setenv("VALETKEY_PROVIDER_TIMEOUT", "soon")
    with pytest.raises(InvalidRequest, match="VALETKEY_PROVIDER_TIMEOUT"):
        Settings.from_env()
