"""Durable background work: the job queue's contract, the retry schedule, and the worker.

A job is a row in the database (``valetkey.store.jobs``), so work outlives the process that
asked for it: a broker killed mid-job loses nothing, and another replica, or the same one
after a restart, finishes it. The guarantee is **at least once, recorded once**:

* a worker *claims* due jobs, which takes a lease (``lease_seconds``) and counts an attempt;
* a handler runs under a deadline (``job_timeout``) shorter than the lease, so a live worker
  always finishes or gives up a job before anyone else may take it; only a worker that died
  (or lost the database for longer than the lease) has its job claimed again;
* the outcome is recorded only by the lease holder (``complete`` / ``fail`` compare the lease
  token), so a job is marked done once even if, after a crash, its effect was attempted twice.

What a handler does outside the database (an HTTP request) can therefore happen twice in
exactly one case: the worker died after the receiver answered and before ``complete``
committed. Receivers de-duplicate on the job id, which each attempt carries (the webhook's
``Valetkey-Delivery`` header and the signed ``delivery`` claim).

A job that fails is retried with exponential backoff and jitter (:func:`backoff`) until it has
had ``max_attempts`` attempts; then it is dead-lettered: kept, visible (``GET /v1/jobs``), and
redelivered only when someone asks (``POST /v1/jobs/{id}/retry``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from valetkey.core.clock import Clock
from valetkey.core.ports import JobQueue

__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "Job",
    "JobCounts",
    "JobFailed",
    "JobHandler",
    "JobQueue",
    "JobStatus",
    "JobWorker",
    "PermanentFailure",
    "RetryPolicy",
    "backoff",
]

log = logging.getLogger("valetkey.jobs")

JobStatus = Literal["queued", "running", "done", "dead"]

#: Attempts before a job is dead-lettered, unless it was enqueued with its own limit.
DEFAULT_MAX_ATTEMPTS = 10


@dataclass(frozen=True)
class Job:
    """One unit of background work as a worker (or an operator) sees it."""

    id: str
    kind: str
    #: Opened from its sealed form in the store; never logged.
    payload: Mapping[str, Any] = field(repr=False)
    status: JobStatus
    attempts: int
    max_attempts: int
    run_at: datetime
    created_at: datetime
    updated_at: datetime
    team_id: str | None = None
    last_error: str | None = None
    #: The lease token of the claim that handed this job to a worker (None when not running).
    lease: str | None = field(default=None, repr=False)
    lease_expires_at: datetime | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True)
class JobCounts:
    """How many jobs are due (waiting to run now), running (leased) and dead (dead-lettered)."""

    due: int = 0
    running: int = 0
    dead: int = 0


@dataclass(frozen=True)
class RetryPolicy:
    """The retry schedule: attempt *n* (1-based) failed → wait about ``base * 2**(n-1)``, at most ``cap``."""

    base_seconds: float = 2.0
    cap_seconds: float = 3600.0


def backoff(
    attempts: int, policy: RetryPolicy, *, rand: Callable[[], float] | None = None
) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt: exponential, capped, with jitter.

    "Equal jitter": half the exponential delay, plus a random part of the other half, so the
    wait is in ``[d/2, d]`` for ``d = min(cap, base * 2**(attempts-1))``; replicas retrying
    the same receiver after an outage spread out instead of arriving together.
    """
    exponent = min(max(attempts, 1) - 1, 62)
    delay = min(policy.cap_seconds, policy.base_seconds * (2.0**exponent))
    unit = rand() if rand is not None else secrets.randbelow(1 << 30) / (1 << 30)
    return delay / 2 + unit * delay / 2


class JobFailed(Exception):
    """A handler's failure that is worth retrying; ``reason`` is stored as the job's last error.

    The reason must hold no secret: it is shown to operators (``GET /v1/jobs``).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PermanentFailure(JobFailed):
    """A failure no retry can fix (the URL is refused by the network policy): dead-letter now."""


#: A handler gets the claimed job; returning means done, ``JobFailed`` means retry (or dead).
JobHandler = Callable[[Job], Awaitable[None]]


class JobWorker:
    """Runs due jobs: up to ``concurrency`` at once, each under ``job_timeout``, leased for longer.

    The worker polls every ``poll_seconds`` (jobs enqueued by other replicas, retries coming
    due) and at once when this process enqueues (``wake``). Handlers are registered by kind;
    a kind with no handler fails like any other failure (a newer replica may know it).
    """

    def __init__(
        self,
        queue: JobQueue,
        clock: Clock,
        *,
        worker_id: str,
        concurrency: int = 4,
        job_timeout: float = 30.0,
        lease_seconds: float = 90.0,
        poll_seconds: float = 1.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        if lease_seconds <= job_timeout:
            raise ValueError("a job's lease must outlast its timeout, or a live worker is doubled")
        self.queue = queue
        self.clock = clock
        self.worker_id = worker_id
        self.concurrency = concurrency
        self.job_timeout = job_timeout
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self.retry = retry or RetryPolicy()
        self.counts = JobCounts()
        self._handlers: dict[str, JobHandler] = {}
        self._periodic: list[tuple[str, float]] = []
        self._scheduled: dict[str, int] = {}  # kind -> the last period enqueued from here
        self._wake = asyncio.Event()
        self._running: dict[str, asyncio.Task[None]] = {}
        self._loop: asyncio.Task[None] | None = None
        self._stopping = False

    def register(self, kind: str, handler: JobHandler) -> None:
        self._handlers[kind] = handler

    def every(self, kind: str, seconds: float) -> None:
        """Run ``kind`` once per period of ``seconds`` across all replicas (a deduplicated job
        per period, enqueued by every replica, claimed by one)."""
        self._periodic.append((kind, seconds))

    def wake(self) -> None:
        """Look for due jobs now (something was enqueued here)."""
        self._wake.set()

    def start(self) -> None:
        self._stopping = False
        self._loop = asyncio.get_running_loop().create_task(self._run(), name="valetkey-jobs")

    async def _run(self) -> None:
        next_counts = 0.0
        loop = asyncio.get_running_loop()
        while not self._stopping:
            try:
                await self.schedule_periodic()
                free = self.concurrency - len(self._running)
                if free > 0:
                    for job in await self.queue.claim(
                        self.worker_id, limit=free, lease_seconds=self.lease_seconds
                    ):
                        task = loop.create_task(self._execute(job), name=f"valetkey-job-{job.id}")
                        self._running[job.id] = task
                        task.add_done_callback(functools.partial(self._finished, job.id))
                if loop.time() >= next_counts:
                    self.counts = await self.queue.counts()
                    next_counts = loop.time() + 5.0
            except asyncio.CancelledError:
                raise
            except Exception:  # the database is away: the next round tries again
                log.exception("job queue round failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_seconds)

    def _finished(self, job_id: str, _task: asyncio.Task[None]) -> None:
        self._running.pop(job_id, None)
        self._wake.set()  # a slot is free

    async def schedule_periodic(self) -> None:
        """Enqueue this period's job of each periodic kind (once per period from this worker)."""
        now = self.clock.timestamp()
        for kind, seconds in self._periodic:
            period = int(now // seconds)
            if self._scheduled.get(kind) == period:
                continue
            # Due at the end of the period: a replica that starts runs it one period later.
            due = datetime.fromtimestamp((period + 1) * seconds, tz=self.clock.now().tzinfo)
            await self.queue.enqueue(
                kind, {}, run_at=due, dedupe_key=f"{kind}:{period}", max_attempts=2
            )
            self._scheduled[kind] = period

    async def _execute(self, job: Job) -> None:
        handler = self._handlers.get(job.kind)
        try:
            if handler is None:
                raise JobFailed(f"no handler for job kind {job.kind!r} on this broker")
            async with asyncio.timeout(self.job_timeout):
                await handler(job)
        except asyncio.CancelledError:
            if self._stopping:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.queue.release(job))
            raise
        except PermanentFailure as exc:
            await self._record_failure(job, exc.reason, retry=False)
        except JobFailed as exc:
            await self._record_failure(job, exc.reason, retry=True)
        except TimeoutError:
            await self._record_failure(job, f"timed out after {self.job_timeout:g} s", retry=True)
        except Exception as exc:  # a handler bug: retried, and visible as the last error
            log.exception("job %s (%s) raised", job.id, job.kind)
            await self._record_failure(job, f"internal error: {type(exc).__name__}", retry=True)
        else:
            if not await self.queue.complete(job):
                log.warning("job %s (%s) finished after its lease was lost", job.id, job.kind)

    async def _record_failure(self, job: Job, reason: str, *, retry: bool) -> None:
        delay = backoff(job.attempts, self.retry) if retry else None
        status = await self.queue.fail(job, reason, retry_in=delay)
        if status == "dead":
            log.error(
                "job %s (%s) dead after %d attempt(s): %s", job.id, job.kind, job.attempts, reason
            )
        else:
            log.warning("job %s (%s) attempt %d failed: %s", job.id, job.kind, job.attempts, reason)

    async def run_due(self) -> int:
        """Claim and run due jobs until none is due (tests, and the CLI's one-shot use)."""
        ran = 0
        while True:
            jobs = await self.queue.claim(
                self.worker_id, limit=self.concurrency, lease_seconds=self.lease_seconds
            )
            if not jobs:
                return ran
            await asyncio.gather(*(self._execute(job) for job in jobs))
            ran += len(jobs)

    async def close(self, grace_seconds: float = 5.0) -> None:
        """Stop claiming; let running jobs finish for ``grace_seconds``, then give them back."""
        self._stopping = True
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
            self._loop = None
        running = list(self._running.values())
        if running:
            _done, pending = await asyncio.wait(running, timeout=grace_seconds)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
