"""The job queue on both stores (``valetkey.core.jobs.JobQueue``): one ``jobs`` table.

Claiming is one short transaction. On PostgreSQL it selects due rows ``FOR UPDATE SKIP
LOCKED``, so replicas claiming at once take different jobs without waiting for each other; on
SQLite the transaction's first statement is a write, which takes the database's one write lock
before anything is read, so claims are serialized (the single writer) and never overlap.
Every later change (complete, fail, release) is a compare-and-set on the claim's lease token:
a worker whose lease expired and was taken over records nothing.

Payloads are sealed with the key ring (AAD ``valetkey:job:<id>``) and re-wrapped by key
rotation like every other envelope; listing jobs never opens them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import CursorResult

from valetkey.core.clock import Clock
from valetkey.core.jobs import DEFAULT_MAX_ATTEMPTS, Job, JobCounts, JobStatus
from valetkey.crypto import DecryptionError, KeyRing
from valetkey.store import tables as t
from valetkey.store.db import Database
from valetkey.store.ids import new_id

__all__ = ["JobStore", "job_aad"]

#: The longest last error kept (the column's width).
ERROR_WIDTH = 300


def job_aad(job_id: str) -> bytes:
    return f"valetkey:job:{job_id}".encode()


def _rows(result: Any) -> int:
    return int(cast(CursorResult[Any], result).rowcount)


class JobStore:
    """Jobs in the broker's database. ``on_enqueue`` is called after each enqueue (the worker's wake)."""

    def __init__(
        self,
        db: Database,
        keyring: KeyRing,
        clock: Clock,
        *,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> None:
        self.db = db
        self.max_attempts = max_attempts
        self.keyring = keyring
        self.clock = clock
        self.on_enqueue: Callable[[], None] | None = None
        # SQLite has one writer anyway; claims from this process queue here instead of in
        # SQLite's busy handler.
        self._claiming = asyncio.Lock()

    # -- enqueue ----------------------------------------------------------------------------

    async def enqueue(
        self,
        kind: str,
        payload: Mapping[str, Any],
        *,
        team_id: str | None = None,
        run_at: datetime | None = None,
        dedupe_key: str | None = None,
        max_attempts: int | None = None,
    ) -> str:
        now = self.clock.now()
        job_id = new_id("job")
        values = {
            "id": job_id,
            "kind": kind,
            "team_id": team_id,
            "payload": self.keyring.encrypt_json(dict(payload), aad=job_aad(job_id)),
            "status": "queued",
            "attempts": 0,
            "max_attempts": max_attempts or self.max_attempts,
            "run_at": run_at or now,
            "dedupe_key": dedupe_key,
            "created_at": now,
            "updated_at": now,
        }
        async with self.db.session.begin() as s:
            if dedupe_key is None:
                s.add(t.Job(**values))
            else:
                insert = pg_insert if self.db.is_postgres else sqlite_insert
                result = await s.execute(
                    insert(t.Job)
                    .values(**values)
                    .on_conflict_do_nothing(index_elements=["dedupe_key"])
                )
                if _rows(result) == 0:
                    existing = await s.scalar(
                        select(t.Job.id).where(t.Job.dedupe_key == dedupe_key)
                    )
                    return str(existing)
        if self.on_enqueue is not None:
            self.on_enqueue()
        return job_id

    # -- claim and outcomes -----------------------------------------------------------------

    async def claim(self, worker: str, *, limit: int, lease_seconds: float) -> Sequence[Job]:
        if limit <= 0:
            return []
        # A plain read first: most polls find nothing due, and then take no lock at all (on
        # SQLite the claim below holds the one write lock, which the exchange also needs).
        async with self.db.session() as s:
            due = await s.scalar(select(t.Job.id).where(self._due(self.clock.now())).limit(1))
        if due is None:
            return []
        if self.db.is_postgres:
            return await self._claim(worker, limit, lease_seconds)
        async with self._claiming:
            return await self._claim(worker, limit, lease_seconds)

    async def _claim(self, worker: str, limit: int, lease_seconds: float) -> list[Job]:
        now = self.clock.now()
        until = now + timedelta(seconds=lease_seconds)
        claimed: list[Job] = []
        async with self.db.session.begin() as s:
            if not self.db.is_postgres:
                # A write first: SQLite's write lock, held until commit, before the read below.
                await s.execute(update(t.Job).where(t.Job.id == "").values(status=t.Job.status))
            rows = (
                await s.scalars(
                    select(t.Job)
                    .where(self._due(now))
                    .order_by(t.Job.run_at, t.Job.id)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                    .execution_options(populate_existing=True)
                )
            ).all()
            for row in rows:
                if row.attempts >= row.max_attempts:
                    # Its worker died on the last attempt: nobody knows how that one ended.
                    row.status = "dead"
                    row.last_error = (
                        "the worker running the last attempt stopped before recording it"
                    )
                    row.lease = row.lease_owner = row.lease_expires_at = None
                    row.finished_at = row.updated_at = now
                    continue
                try:
                    payload = self.keyring.decrypt_json(row.payload, aad=job_aad(row.id))
                except DecryptionError:
                    row.status = "dead"
                    row.last_error = "the payload cannot be opened with the key ring's keys"
                    row.lease = row.lease_owner = row.lease_expires_at = None
                    row.finished_at = row.updated_at = now
                    continue
                row.status = "running"
                row.attempts += 1
                row.lease = new_id("lse")
                row.lease_owner = worker[:64]
                row.lease_expires_at = until
                row.updated_at = now
                claimed.append(self._job(row, payload))
        return claimed

    @staticmethod
    def _due(now: datetime) -> Any:
        return or_(
            and_(t.Job.status == "queued", t.Job.run_at <= now),
            and_(t.Job.status == "running", t.Job.lease_expires_at <= now),
        )

    def _held(self, job: Job) -> Any:
        return and_(t.Job.id == job.id, t.Job.status == "running", t.Job.lease == job.lease)

    async def _settle(self, job: Job, **values: Any) -> bool:
        """Apply ``values`` and give up the lease, if ``job``'s lease is still held: True then."""
        async with self.db.session.begin() as s:
            result = await s.execute(
                update(t.Job)
                .where(self._held(job))
                .values(lease=None, lease_owner=None, lease_expires_at=None, **values)
            )
        return _rows(result) == 1

    async def complete(self, job: Job) -> bool:
        now = self.clock.now()
        return await self._settle(job, status="done", finished_at=now, updated_at=now)

    async def fail(self, job: Job, error: str, *, retry_in: float | None) -> JobStatus | None:
        now = self.clock.now()
        status: JobStatus = (
            "dead" if retry_in is None or job.attempts >= job.max_attempts else "queued"
        )
        values: dict[str, Any] = {"status": status, "last_error": error[:ERROR_WIDTH], "updated_at": now}
        if status == "dead":
            values["finished_at"] = now
        else:
            values["run_at"] = now + timedelta(seconds=retry_in or 0.0)
        return status if await self._settle(job, **values) else None

    async def release(self, job: Job) -> bool:
        now = self.clock.now()
        return await self._settle(
            job, status="queued", attempts=t.Job.attempts - 1, run_at=now, updated_at=now
        )

    async def retry(self, job_id: str, *, team_id: str | None) -> Job | None:
        now = self.clock.now()
        where = [t.Job.id == job_id, t.Job.status == "dead"]
        if team_id is not None:
            where.append(t.Job.team_id == team_id)
        async with self.db.session.begin() as s:
            result = await s.execute(
                update(t.Job)
                .where(*where)
                .values(status="queued", attempts=0, run_at=now, finished_at=None, updated_at=now)
            )
        if _rows(result) != 1:
            return None
        if self.on_enqueue is not None:
            self.on_enqueue()
        return await self.get(job_id)

    # -- reading ----------------------------------------------------------------------------

    async def get(self, job_id: str) -> Job | None:
        async with self.db.session() as s:
            row = await s.get(t.Job, job_id, populate_existing=True)
            return None if row is None else self._job(row)

    async def list(
        self, *, team_id: str | None, status: JobStatus | None, limit: int
    ) -> Sequence[Job]:
        query = select(t.Job).order_by(t.Job.created_at.desc(), t.Job.id.desc()).limit(limit)
        if team_id is not None:
            query = query.where(t.Job.team_id == team_id)
        if status is not None:
            query = query.where(t.Job.status == status)
        async with self.db.session() as s:
            return [self._job(row) for row in (await s.scalars(query)).all()]

    async def counts(self) -> JobCounts:
        now = self.clock.now()
        async with self.db.session() as s:
            by_status = dict(
                (
                    await s.execute(
                        select(t.Job.status, func.count())
                        .where(t.Job.status.in_(("running", "dead")))
                        .group_by(t.Job.status)
                    )
                ).all()
            )
            due = await s.scalar(select(func.count()).select_from(t.Job).where(self._due(now)))
        return JobCounts(
            due=int(due or 0),
            running=int(by_status.get("running", 0)),
            dead=int(by_status.get("dead", 0)),
        )

    async def purge_finished(self, before: datetime) -> int:
        async with self.db.session.begin() as s:
            result = await s.execute(
                delete(t.Job).where(t.Job.status == "done", t.Job.finished_at < before)
            )
        return _rows(result)

    @staticmethod
    def _job(row: t.Job, payload: Mapping[str, Any] | None = None) -> Job:
        """A row as a ``Job``; the payload only when given (listing never opens it)."""
        return Job(
            id=row.id,
            kind=row.kind,
            payload=payload or {},
            status=cast(JobStatus, row.status),
            attempts=row.attempts,
            max_attempts=row.max_attempts,
            run_at=row.run_at,
            created_at=row.created_at,
            updated_at=row.updated_at,
            team_id=row.team_id,
            last_error=row.last_error,
            lease=row.lease,
            lease_expires_at=row.lease_expires_at,
            finished_at=row.finished_at,
        )
