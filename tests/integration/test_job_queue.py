"""The job queue (``valetkey.store.jobs``) on both real stores: claims that never overlap, leases that
a dead worker's job outlives, backoff within its bounds, dead letters that stay visible, dedupe keys."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from valetkey.core.clock import FrozenClock, SystemClock
from valetkey.core.jobs import Job, JobFailed, JobWorker, PermanentFailure, RetryPolicy
from valetkey.crypto import KeyRing
from valetkey.store import tables as t
from valetkey.store.db import Database
from valetkey.store.jobs import JobStore

START = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def store(database_url: str, tmp_path: Path) -> AsyncIterator[JobStore]:
    db = Database(database_url)
    await db.migrate()
    keyring = KeyRing.load_or_create(tmp_path / "kek.json")
    try:
        yield JobStore(db, keyring, FrozenClock(START), max_attempts=3)
    finally:
        await db.close()


def _clock(store: JobStore) -> FrozenClock:
    clock = store.clock
    if not isinstance(clock, FrozenClock):
        raise TypeError("the fixture's store runs on a frozen clock")
    return clock


async def test_two_concurrent_claimers_never_get_the_same_job(
    database_url: str, tmp_path: Path
) -> None:
    """Two queues on separate connection pools (two replicas) claiming at once share out every
    due job between them, none twice (SKIP LOCKED on PostgreSQL, the single writer on SQLite)."""
    keyring = KeyRing.load_or_create(tmp_path / "kek.json")
    first_db, second_db = Database(database_url), Database(database_url)
    await first_db.migrate()
    try:
        first = JobStore(first_db, keyring, SystemClock())
        second = JobStore(second_db, keyring, SystemClock())
        ids = {await first.enqueue("work", {"n": n}) for n in range(60)}

        async def drain(queue: JobStore, worker: str) -> list[str]:
            got: list[str] = []
            while True:
                jobs = await queue.claim(worker, limit=3, lease_seconds=60)
                if not jobs:
                    return got
                got += [job.id for job in jobs]
                await asyncio.sleep(0)

        a, b, c, d = await asyncio.gather(
            drain(first, "a"), drain(second, "b"), drain(first, "c"), drain(second, "d")
        )
        claimed = a + b + c + d
        assert len(claimed) == len(set(claimed)) == 60
        assert set(claimed) == ids
        assert a
        assert b
    finally:
        await first_db.close()
        await second_db.close()


async def test_a_claim_leases_the_job_and_opens_its_sealed_payload(store: JobStore) -> None:
    """A claimed job carries its payload, an attempt counted and a lease; the row holds only the envelope."""
    job_id = await store.enqueue("webhook", {"url": "https://app.example/hook", "event": {"x": 1}})
    async with store.db.session() as s:
        raw = await s.scalar(select(t.Job.payload).where(t.Job.id == job_id))
    assert raw is not None
    assert b"app.example" not in raw
    (job,) = await store.claim("w1", limit=10, lease_seconds=30)
    assert (job.id, job.status, job.attempts) == (job_id, "running", 1)
    assert job.payload == {"url": "https://app.example/hook", "event": {"x": 1}}
    assert job.lease is not None
    assert job.lease_expires_at is not None
    assert await store.claim("w2", limit=10, lease_seconds=30) == []  # leased: not due
    assert await store.complete(job)
    done = await store.get(job_id)
    assert done is not None
    assert done.status == "done"
    assert done.payload == {}
    assert await store.claim("w2", limit=10, lease_seconds=30) == []


async def test_a_job_whose_worker_died_is_claimed_again_after_its_lease(store: JobStore) -> None:
    """A lease that ran out (its worker died) makes the job due again; the new holder records the
    outcome and the old one, back from the dead, records nothing."""
    clock = _clock(store)
    await store.enqueue("work", {})
    (stale,) = await store.claim("dead-worker", limit=1, lease_seconds=30)
    clock.advance(29)
    assert await store.claim("other", limit=1, lease_seconds=30) == []
    clock.advance(2)
    (fresh,) = await store.claim("other", limit=1, lease_seconds=30)
    assert fresh.id == stale.id
    assert fresh.attempts == 2
    assert fresh.lease != stale.lease
    assert not await store.complete(stale)
    assert await store.fail(stale, "late", retry_in=1) is None
    assert await store.complete(fresh)
    job = await store.get(fresh.id)
    assert job is not None
    assert job.status == "done"
    assert job.last_error is None


async def test_a_failed_attempt_is_retried_after_its_backoff_then_dead_lettered(
    store: JobStore,
) -> None:
    """Each failure queues the job again after the delay given; the last allowed attempt's failure
    dead-letters it, and the dead job stays listed with its error until retried."""
    clock = _clock(store)
    job_id = await store.enqueue("work", {}, team_id="team-a")
    for attempt in (1, 2):
        (job,) = await store.claim("w", limit=1, lease_seconds=30)
        assert job.attempts == attempt
        assert await store.fail(job, f"boom {attempt}", retry_in=10) == "queued"
        clock.advance(9)
        assert await store.claim("w", limit=1, lease_seconds=30) == []
        clock.advance(1)
    (job,) = await store.claim("w", limit=1, lease_seconds=30)
    assert await store.fail(job, "boom 3", retry_in=10) == "dead"
    clock.advance(3600)
    assert await store.claim("w", limit=1, lease_seconds=30) == []
    (dead,) = await store.list(team_id="team-a", status="dead", limit=10)
    assert (dead.id, dead.attempts, dead.last_error) == (job_id, 3, "boom 3")
    assert await store.list(team_id="team-b", status="dead", limit=10) == []
    assert (await store.counts()).dead == 1
    assert await store.retry(job_id, team_id="team-b") is None
    again = await store.retry(job_id, team_id="team-a")
    assert again is not None
    assert (again.status, again.attempts) == ("queued", 0)
    (job,) = await store.claim("w", limit=1, lease_seconds=30)
    assert job.id == job_id


async def test_a_worker_dying_on_the_last_attempt_dead_letters_the_job(store: JobStore) -> None:
    """A job whose last allowed attempt never recorded an outcome is dead-lettered, not run again."""
    clock = _clock(store)
    job_id = await store.enqueue("work", {}, max_attempts=1)
    await store.claim("dies", limit=1, lease_seconds=5)
    clock.advance(6)
    assert await store.claim("w", limit=1, lease_seconds=5) == []
    job = await store.get(job_id)
    assert job is not None
    assert job.status == "dead"
    assert job.last_error is not None


async def test_a_dedupe_key_stores_one_job(store: JobStore) -> None:
    """Enqueueing twice with one dedupe key stores one job and answers its id both times."""
    first = await store.enqueue("maintenance", {}, dedupe_key="maintenance:1")
    second = await store.enqueue("maintenance", {}, dedupe_key="maintenance:1")
    assert first == second
    assert len(await store.list(team_id=None, status=None, limit=10)) == 1


async def test_a_release_gives_the_job_back_without_counting_the_attempt(store: JobStore) -> None:
    """A job given back at shutdown is due at once, its attempt uncounted."""
    await store.enqueue("work", {})
    (job,) = await store.claim("w", limit=1, lease_seconds=30)
    assert await store.release(job)
    (again,) = await store.claim("w", limit=1, lease_seconds=30)
    assert (again.id, again.attempts) == (job.id, 1)


async def test_the_worker_runs_handlers_by_kind_with_backoff_and_dead_letters(
    store: JobStore,
) -> None:
    """The worker completes a job whose handler returns, retries one that raises JobFailed after
    a backoff within [d/2, d], and dead-letters at once one that raises PermanentFailure."""
    clock = _clock(store)
    ran: list[tuple[str, int]] = []

    async def ok(job: Job) -> None:
        ran.append(("ok", job.attempts))

    async def flaky(job: Job) -> None:
        ran.append(("flaky", job.attempts))
        if job.attempts < 2:
            raise JobFailed("receiver down")

    async def refused(job: Job) -> None:
        raise PermanentFailure("refused by the network policy")

    worker = JobWorker(
        store, clock, worker_id="w", job_timeout=5, lease_seconds=10, retry=RetryPolicy(4, 60)
    )
    for kind, handler in (("ok", ok), ("flaky", flaky), ("refused", refused)):
        worker.register(kind, handler)
    ids: dict[str, Any] = {
        kind: await store.enqueue(kind, {}) for kind in ("ok", "flaky", "refused")
    }
    assert await worker.run_due() == 3
    flaky_job = await store.get(ids["flaky"])
    assert flaky_job is not None
    assert flaky_job.status == "queued"
    delay = (flaky_job.run_at - START).total_seconds()
    assert 2 <= delay <= 4  # attempt 1 failed: d = 4 s
    refused_job = await store.get(ids["refused"])
    assert refused_job is not None
    assert refused_job.status == "dead"
    assert refused_job.attempts == 1
    clock.advance(4)
    assert await worker.run_due() == 1
    statuses = {k: getattr(await store.get(v), "status", None) for k, v in ids.items()}
    assert statuses == {"ok": "done", "flaky": "done", "refused": "dead"}
    assert sorted(ran) == [("flaky", 1), ("flaky", 2), ("ok", 1)]


async def test_a_periodic_job_runs_once_per_period_across_replicas(store: JobStore) -> None:
    """Two workers (two replicas) both schedule the maintenance round; it runs once per period."""
    clock = _clock(store)
    ran: list[str] = []

    async def tick(job: Job) -> None:
        ran.append(job.id)

    workers = [
        JobWorker(store, clock, worker_id=name, job_timeout=5, lease_seconds=10)
        for name in ("a", "b")
    ]
    for worker in workers:
        worker.register("maintenance", tick)
        worker.every("maintenance", 60)
    for _period in range(3):
        for worker in workers:
            await worker.schedule_periodic()
        assert [await worker.run_due() for worker in workers] == [0, 0]  # due at the period's end
        clock.advance(60)
        assert sum([await worker.run_due() for worker in workers]) == 1
    assert len(ran) == len(set(ran)) == 3
