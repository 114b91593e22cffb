"""The audit log: batching, chaining, tamper evidence, nothing lost on failure."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from valetkey.core.audit import (
    BOUNDED_DETAILS,
    AuditEvent,
    AuditLog,
    AuditRefused,
    ChainedEvent,
    verify_chain,
)
from valetkey.core.clock import FrozenClock
from valetkey.errors import AuditUnavailable


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


class RefusingStore(MemoryStore):
    """Refuses, as a database would, every batch holding an event it cannot store.

    ``refuse(event)`` says which; a refused batch writes nothing (one transaction).
    """

    def __init__(self, refuse: Callable[[AuditEvent], bool]) -> None:
        super().__init__()
        self.refuse = refuse
        self.refused = 0

    async def append_audit(self, events: Sequence[ChainedEvent]) -> None:
        if any(self.refuse(e.event) for e in events):
            self.refused += 1
            raise AuditRefused("SQLSTATE 22001")
        await super().append_audit(events)


def _poison(e: AuditEvent) -> bool:
    return bool(e.details.get("poison"))


@pytest.mark.parametrize("poison_at", [[0], [3], [9], [2, 7], list(range(10))])
async def test_a_refused_batch_is_split_and_every_other_event_is_written(poison_at: list[int]) -> None:
    """The store refuses one batch; the writer isolates the refused events, writes the others in
    order, writes each refused one bounded and marked, and the chain verifies without a gap."""
    clock = FrozenClock()
    store = RefusingStore(_poison)
    log = AuditLog(store, clock)
    for i in range(10):
        details = {"i": i, "poison": True} if i in poison_at else {"i": i}
        log.record(dataclasses.replace(_event(i, clock), details=details))
    await log.flush()
    assert len(store.rows) == 10
    assert verify_chain(store.rows) is None
    assert [r.seq for r in store.rows] == list(range(1, 11))
    for i, row in enumerate(store.rows):
        if i in poison_at:
            assert row.event.details["clipped"] == "refused"
            assert '"poison":true' in row.event.details["details"]
        else:
            assert row.event.details == {"i": i}
    assert log.stats.clipped == len(poison_at)
    assert log.stats.dropped == 0
    assert log.stats.written == 10
    assert log.backlog == 0
    log.record(_event(10, clock))
    await log.flush()
    assert store.rows[-1].event.details == {"i": 10}
    assert verify_chain(store.rows) is None


async def test_an_event_refused_even_bounded_is_dropped_counted_and_the_chain_closes_over_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """When the bounded form is refused too, the event is dropped, counted and logged without its
    values; the rest of its batch and later events are written in one verifiable chain."""
    clock = FrozenClock()
    secret_value = "raw-value-qq81"
    store = RefusingStore(lambda e: e.actor.startswith("evil"))
    log = AuditLog(store, clock)
    for i in range(5):
        actor = f"evil-{secret_value}" if i == 2 else "tester"
        log.record(dataclasses.replace(_event(i, clock), actor=actor))
    await log.flush()
    log.record(_event(5, clock))
    await log.flush()
    assert [r.event.details["i"] for r in store.rows] == [0, 1, 3, 4, 5]
    assert [r.seq for r in store.rows] == [1, 2, 3, 4, 5]
    assert verify_chain(store.rows) is None
    assert log.stats.dropped == 1
    assert log.backlog == 0
    assert "audit event dropped" in caplog.text
    assert secret_value not in caplog.text


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("connector_uid", "api-key/" + "a" * 200),
        ("connector_uid", "é" * 131),
        ("actor", "x" * 10_000),
        ("subject", "user:" + "😀" * 400),
        ("reason", "r" * 65),
        ("details", {"message": "m" * 100_000}),
    ],
)
async def test_an_event_larger_than_its_columns_is_stored_bounded_with_a_hash_that_verifies(
    field: str, value: Any
) -> None:
    """An over-long field is clipped to its column (characters, not bytes) before it is hashed, so
    the stored row is exactly what the chain covers; the details say it was clipped."""
    clock = FrozenClock()
    store = MemoryStore()
    log = AuditLog(store, clock)
    log.record(dataclasses.replace(_event(0, clock), **{field: value}))
    log.record(_event(1, clock))
    await log.flush()
    first, second = store.rows
    assert verify_chain(store.rows) is None
    assert first.event.details["clipped"] == "too_long"
    assert first.event.details["fields"] == [field]
    assert len(first.event.details["details"]) <= BOUNDED_DETAILS
    width = {"connector_uid": 130, "actor": 300, "subject": 300, "reason": 64}
    if field in width:
        stored = getattr(first.event, field)
        assert stored == value[: width[field]]
    assert second.event.details == {"i": 1}
    assert log.stats.clipped == 1


async def test_an_event_at_the_column_width_is_stored_unchanged() -> None:
    """Exactly 130 characters of a multi-byte uid (390 bytes) fit the column and are kept whole."""
    clock = FrozenClock()
    store = MemoryStore()
    log = AuditLog(store, clock)
    uid = "日" * 130
    log.record(dataclasses.replace(_event(0, clock), connector_uid=uid))
    await log.flush()
    assert store.rows[0].event.connector_uid == uid
    assert store.rows[0].event.details == {"i": 0}
    assert log.stats.clipped == 0


async def test_after_an_outage_the_writer_continues_on_a_new_chain_without_reusing_a_seq() -> None:
    """A write that failed with the store unavailable may have committed: the retry goes to a new
    chain, so it cannot collide with a committed row, and both chains verify."""

    class CommitsThenFails(MemoryStore):
        def __init__(self) -> None:
            super().__init__()
            self.fail_after_commit = False

        async def append_audit(self, events: Sequence[ChainedEvent]) -> None:
            await super().append_audit(events)
            if self.fail_after_commit:
                self.fail_after_commit = False
                raise ConnectionResetError("lost at COMMIT")

    clock = FrozenClock()
    store = CommitsThenFails()
    log = AuditLog(store, clock)
    log.record(_event(0, clock))
    await log.flush()
    store.fail_after_commit = True
    log.record(_event(1, clock))
    with pytest.raises(ConnectionResetError):
        await log.flush()
    await log.flush()
    chains: dict[str, list[ChainedEvent]] = {}
    for row in store.rows:
        chains.setdefault(row.chain, []).append(row)
    assert len(chains) == 2
    assert all(verify_chain(rows) is None for rows in chains.values())
    assert len({(r.chain, r.seq) for r in store.rows}) == len(store.rows)
    assert [r.event.details["i"] for r in store.rows] == [0, 1, 1]  # at worst, twice


async def test_failing_writes_back_off_report_a_problem_and_recover() -> None:
    """Outages back off exponentially (capped), make ``problem()`` report after three failures
    in a row, and clear once a write succeeds."""
    clock = FrozenClock()
    store = MemoryStore()
    log = AuditLog(store, clock, interval=0.2, max_backoff=5.0)
    log.record(_event(0, clock))
    store.fail = True
    delays = []
    for _ in range(8):
        with pytest.raises(ConnectionError):
            await log.flush()
        delays.append(log._backoff())
    assert delays[:3] == [0.4, 0.8, 1.6]
    assert delays[-1] == 5.0
    assert log.problem() == "the last 8 audit writes failed"
    assert log.stats.failed_flushes == 8
    store.fail = False
    await log.flush()
    assert log.problem() is None
    assert log._backoff() == 0.2
    assert log.stats.last_write_at == clock.timestamp()


async def test_events_waiting_too_long_are_a_problem() -> None:
    """An event left unwritten for longer than ``stale_after`` makes the writer unhealthy."""
    clock = FrozenClock()
    log = AuditLog(MemoryStore(), clock, stale_after=30)
    log.record(_event(0, clock))
    assert log.problem() is None
    clock.advance(31)
    assert log.problem() == "audit events have waited 31 s to be written"
    await log.flush()
    assert log.problem() is None


async def test_admission_is_immediate_below_the_soft_limit_waits_above_it_and_refuses_at_the_hard_limit() -> None:
    """Below the soft limit ``admit`` returns at once; above it, it waits (bounded) for the writer;
    at the hard limit it refuses with a typed 503 carrying Retry-After."""
    clock = FrozenClock()
    store = MemoryStore()
    log = AuditLog(store, clock, soft_limit=3, hard_limit=5, max_wait=0.05)
    for i in range(2):
        log.record(_event(i, clock))
    await log.admit()
    assert log.stats.waited_requests == 0
    log.record(_event(2, clock))
    store.fail = True
    started = asyncio.get_running_loop().time()
    await log.admit()  # waits max_wait: the store is down and nothing drains
    assert asyncio.get_running_loop().time() - started >= 0.04
    assert log.stats.waited_requests == 1
    for i in range(3, 5):
        log.record(_event(i, clock))
    with pytest.raises(AuditUnavailable) as refused:
        await log.admit()
    assert refused.value.status == 503
    assert refused.value.details["retryAfterSeconds"] >= 1
    assert log.stats.refused_requests == 1
    assert log.problem() == "the audit backlog is above its soft limit"
    store.fail = False
    await log.flush()
    await log.admit()
    assert log.backlog == 0
    assert log.problem() is None
    assert log.stats.refused_requests == 1


async def test_a_waiting_request_goes_ahead_as_soon_as_the_writer_drains_the_backlog() -> None:
    """Above the soft limit a request waits only until a write commits, not the whole max_wait."""
    clock = FrozenClock()
    log = AuditLog(MemoryStore(), clock, soft_limit=2, hard_limit=10, max_wait=30, interval=0.01)
    for i in range(4):
        log.record(_event(i, clock))
    log.start()
    try:
        await asyncio.wait_for(log.admit(), 5)
    finally:
        await log.close()
    assert log.backlog == 0


async def test_a_revocation_never_waits_and_has_a_bounded_reserve_above_the_hard_limit() -> None:
    """Revocations pass without waiting above the soft limit and past the hard limit, up to a
    reserve of a tenth of it; beyond that they are refused too."""
    clock = FrozenClock()
    store = MemoryStore()
    store.fail = True
    log = AuditLog(store, clock, soft_limit=5, hard_limit=20, max_wait=10)
    for i in range(20):
        log.record(_event(i, clock))
    with pytest.raises(AuditUnavailable):
        await log.admit()
    await asyncio.wait_for(log.admit(revocation=True), 0.5)  # no wait, though max_wait is 10 s
    assert log.stats.waited_requests == 0
    log.record(_event(20, clock))
    await log.admit(revocation=True)
    log.record(_event(21, clock))
    with pytest.raises(AuditUnavailable):
        await log.admit(revocation=True)
