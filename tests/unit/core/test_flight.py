"""Single flight: one load per key for concurrent callers, its outcome shared, callers independent."""

from __future__ import annotations

import asyncio

import pytest

from valetkey.core.flight import SingleFlight


async def test_concurrent_callers_share_one_load() -> None:
    """Fifty concurrent calls for one key run the load once and all get its value."""
    flight: SingleFlight[str, int] = SingleFlight()
    calls = 0

    async def load() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return 42

    results = await asyncio.gather(*(flight.run("k", load) for _ in range(50)))
    assert results == [42] * 50
    assert calls == 1
    assert len(flight) == 0


async def test_an_error_reaches_every_caller_and_is_not_kept() -> None:
    """A failed load raises in every waiting caller; the next call loads again."""
    flight: SingleFlight[str, int] = SingleFlight()
    attempts = 0

    async def load() -> int:
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(0.01)
        if attempts == 1:
            raise ConnectionError("store down")
        return 7

    outcomes = await asyncio.gather(*(flight.run("k", load) for _ in range(5)), return_exceptions=True)
    assert all(isinstance(o, ConnectionError) for o in outcomes)
    assert await flight.run("k", load) == 7
    assert attempts == 2


async def test_a_caller_going_away_does_not_cancel_the_load_for_the_others() -> None:
    """Cancelling the first caller leaves the load running; the second caller still gets the value."""
    flight: SingleFlight[str, int] = SingleFlight()
    release = asyncio.Event()

    async def load() -> int:
        await release.wait()
        return 1

    first = asyncio.create_task(flight.run("k", load))
    second = asyncio.create_task(flight.run("k", load))
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    release.set()
    assert await second == 1


async def test_loads_in_flight_are_bounded() -> None:
    """Beyond the limit a new key is refused with the configured error; a key in flight still joins."""
    flight: SingleFlight[str, int] = SingleFlight(limit=3, full=lambda: LookupError("full"))
    release = asyncio.Event()

    async def load() -> int:
        await release.wait()
        return 1

    running = [asyncio.create_task(flight.run(f"k{i}", load)) for i in range(3)]
    await asyncio.sleep(0)
    with pytest.raises(LookupError, match="full"):
        await flight.run("k-new", load)
    joined = asyncio.create_task(flight.run("k0", load))
    release.set()
    assert await asyncio.gather(*running, joined) == [1, 1, 1, 1]
    assert len(flight) == 0
