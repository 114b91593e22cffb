"""The audit log: batching, chaining, tamper evidence, nothing lost on failure."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import pytest

from valetkey.core.audit import AuditEvent, AuditLog, ChainedEvent, verify_chain
from valetkey.core.clock import FrozenClock


class MemoryStore:
    def __init__(self) -> None:
        self.rows: list[ChainedEvent] = []
        self.usage: dict[tuple[str, str, str], int] = {}
        self.fail = False
        self.writes: list[int] = []

    async def append_audit(self, events: Sequence[ChainedEvent]) -> None:
        if self.fail:
            raise ConnectionError("store down")
        self.writes.append(len(events))
        self.rows.extend(events)

    async def add_usage(self, counts: Mapping[tuple[str, str, str], int]) -> None:
        if self.fail:
            raise ConnectionError("store down")
        for key, n in counts.items():
            self.usage[key] = self.usage.get(key, 0) + n


def _event(i: int, clock: FrozenClock) -> AuditEvent:
    return AuditEvent(
        "team", clock.now(), "tester", "token.exchange", "allowed", "issued", details={"i": i}
    )


async def test_events_are_written_in_order_as_one_verifiable_chain() -> None:
    """Recorded events reach the store in order, in bounded writes, and their hash chain verifies."""
    clock = FrozenClock(datetime(2026, 11, 30, 23, 59, tzinfo=UTC))
    store = MemoryStore()
    log = AuditLog(store, clock, max_write=100)
    for i in range(250):
        log.record(_event(i, clock))
    await log.flush()
    assert [r.event.details["i"] for r in store.rows] == list(range(250))
    assert store.writes == [100, 100, 50]
    assert verify_chain(store.rows) is None


async def test_an_edited_or_removed_row_breaks_the_chain() -> None:
    """Changing one event, or dropping one, is detected at that row."""
    clock = FrozenClock()
    store = MemoryStore()
    log = AuditLog(store, clock)
    for i in range(5):
        log.record(_event(i, clock))
    await log.flush()
    edited = list(store.rows)
    edited[2] = dataclasses.replace(
        edited[2], event=dataclasses.replace(edited[2].event, decision="denied")
    )
    assert verify_chain(edited) == 3
    assert verify_chain(store.rows[:2] + store.rows[3:]) == 4


async def test_a_failed_write_keeps_every_event_and_count_for_the_next_flush() -> None:
    """A store outage loses nothing: the next flush writes the same chain and the same counts."""
    clock = FrozenClock()
    store = MemoryStore()
    log = AuditLog(store, clock)
    log.record(_event(0, clock))
    log.count("team", "token_requests")
    store.fail = True
    with pytest.raises(ConnectionError):
        await log.flush()
    log.record(_event(1, clock))
    log.count("team", "token_requests")
    store.fail = False
    await log.flush()
    assert [r.seq for r in store.rows] == [1, 2]
    assert verify_chain(store.rows) is None
    assert store.usage == {("team", clock.now().strftime("%Y-%m"), "token_requests"): 2}


async def test_usage_counts_roll_over_at_the_month_boundary() -> None:
    """Counts are kept per calendar month (UTC), switching exactly at midnight on the 1st."""
    clock = FrozenClock(datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC))
    store = MemoryStore()
    log = AuditLog(store, clock)
    log.count("team", "token_requests")
    clock.advance(1)
    log.count("team", "token_requests")
    await log.flush()
    assert store.usage == {
        ("team", "2026-11", "token_requests"): 1,
        ("team", "2026-12", "token_requests"): 1,
    }
