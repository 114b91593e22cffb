"""Concurrent identical requests merge into one broker call, in threads and in tasks."""

from __future__ import annotations

import asyncio
import threading

import pytest
from sdk_helpers import FakeBroker, TickingClock

from valetkey.errors import BrokerUnavailable, ValetkeyError
from valetkey.sdk.client import AsyncClient, Client
from valetkey.sdk.single_flight import AsyncSingleFlight, SyncSingleFlight


async def test_fifty_async_calls_make_one_request(broker: FakeBroker, clock: TickingClock) -> None:
    """50 concurrent identical get_token calls on the async client cause exactly 1 request."""
    broker.delay = 0.05
    async with AsyncClient(identity="i", clock=clock, transport=broker.async_transport()) as c:
        tokens = await asyncio.gather(
            *(c.get_token("slack/mybot", scopes=["b", "a"] if n % 2 else ["a", "b"])
              for n in range(50))
        )
        assert len(c._flight) == 0
    assert set(tokens) == {"tok-1"}
    assert len(broker.token_calls) == 1


async def test_async_different_requests_are_not_merged(
    broker: FakeBroker, clock: TickingClock
) -> None:
    """Concurrent calls for different subjects each make their own request."""
    broker.delay = 0.02
    async with AsyncClient(identity="i", clock=clock, transport=broker.async_transport()) as c:
        await asyncio.gather(*(c.get_token("slack/mybot", user=f"u{n % 5}") for n in range(25)))
    assert len(broker.token_calls) == 5


async def test_async_error_reaches_every_waiter_and_is_not_kept(
    broker: FakeBroker, clock: TickingClock
) -> None:
    """A failed shared fetch raises in all 50 callers; the next call fetches again."""
    broker.delay = 0.05
    broker.script.append((503, {"error": {"code": "broker_unavailable", "message": "busy"}}))
    async with AsyncClient(identity="i", clock=clock, transport=broker.async_transport()) as c:
        results = await asyncio.gather(
            *(c.get_token("slack/mybot") for _ in range(50)), return_exceptions=True
        )
        assert all(isinstance(r, BrokerUnavailable) for r in results)
        assert len(broker.token_calls) == 1
        assert await c.get_token("slack/mybot") == "tok-2"
    assert len(broker.token_calls) == 2


async def test_cancelling_one_waiter_spares_the_others(
    broker: FakeBroker, clock: TickingClock
) -> None:
    """Cancelling the caller that started the fetch does not cancel it for the rest."""
    broker.delay = 0.05
    async with AsyncClient(identity="i", clock=clock, transport=broker.async_transport()) as c:
        first = asyncio.ensure_future(c.get_token("slack/mybot"))
        await asyncio.sleep(0.01)
        others = [asyncio.ensure_future(c.get_token("slack/mybot")) for _ in range(5)]
        first.cancel()
        assert set(await asyncio.gather(*others)) == {"tok-1"}
        with pytest.raises(asyncio.CancelledError):
            await first
        assert await c.get_token("slack/mybot") == "tok-1"
    assert len(broker.token_calls) == 1


def test_threads_make_one_request(broker: FakeBroker, clock: TickingClock) -> None:
    """30 threads asking for the same token at once cause exactly 1 request."""
    broker.delay = 0.1
    barrier = threading.Barrier(30)
    tokens: list[str] = []
    with Client(identity="i", clock=clock, transport=broker.transport()) as client:

        def work() -> None:
            barrier.wait()
            tokens.append(client.get_token("slack/mybot", scopes=["x", "y"]))

        threads = [threading.Thread(target=work) for _ in range(30)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(client._flight) == 0
    assert tokens == ["tok-1"] * 30
    assert len(broker.token_calls) == 1


def test_threads_share_an_error_and_do_not_keep_it(broker: FakeBroker, clock: TickingClock) -> None:
    """Threads waiting on a failed fetch all raise; a later call succeeds."""
    broker.delay = 0.1
    broker.script.append((500, {"error": {"code": "provider_error", "message": "boom"}}))
    barrier = threading.Barrier(10)
    errors: list[ValetkeyError] = []
    with Client(identity="i", clock=clock, transport=broker.transport()) as client:

        def work() -> None:
            barrier.wait()
            try:
                client.get_token("slack/mybot")
            except ValetkeyError as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(errors) == 10
        assert {e.code for e in errors} == {"provider_error"}
        assert client.get_token("slack/mybot") == "tok-2"


def test_sync_single_flight_rechecks_after_waiting() -> None:
    """The leader reads first, so a value stored by an earlier leader is not loaded again."""
    flight: SyncSingleFlight[str] = SyncSingleFlight()
    loads: list[int] = []

    def load() -> str:
        loads.append(1)
        return "loaded"

    assert flight.run("k", lambda: "cached", load) == "cached"
    assert loads == []
    assert flight.run("k", lambda: None, load) == "loaded"
    assert loads == [1]


async def test_async_single_flight_forgets_finished_fetches() -> None:
    """After a fetch finishes, the next run for the key starts a new one."""
    flight: AsyncSingleFlight[int] = AsyncSingleFlight()
    counter = iter(range(10))

    async def load() -> int:
        await asyncio.sleep(0)
        return next(counter)

    assert await flight.run("k", load) == 0
    assert await flight.run("k", load) == 1
    assert len(flight) == 0
