"""The audit log and usage counters: recorded on the hot path, written in batches.

``AuditLog.record`` only appends to memory; a background task flushes every ``interval`` seconds
(or sooner when ``batch`` events are waiting), and ``close`` flushes what is left, so nothing is
lost on a clean shutdown.

What can go wrong while writing, and what the writer does about it:

- **The store is unavailable** (connection refused, database down or locked): the events stay
  queued and the writer retries with exponential backoff (``interval`` doubling up to
  ``max_backoff``), logging the first failure and then at most every 30 seconds, never a value.
  A write that failed this way may still have committed (a connection lost at COMMIT), so the
  next write starts a new chain: a retried event can never collide with a row that did commit
  (at worst it is stored twice, each copy in a verifiable chain).
- **The store refuses the data** (``AuditRefused``: a value too long for its column, a NUL byte,
  text the driver cannot encode): writing the same rows again can never work. The writer splits
  the batch in halves until it isolates each refused event, writes all the others in order,
  writes each refused event in its bounded form (``bounded``) and, if even that is refused,
  drops it: counted (``stats.dropped``) and logged as an error naming only its action.
- **An event is larger than its columns** (a field longer than its column, details longer than
  ``AUDIT_DETAILS``): it is written in its bounded form from the start, on every store alike
  (SQLite would keep it whole, PostgreSQL would refuse it); counted in ``stats.clipped``.

Backpressure: ``admit`` is awaited before any request that will be audited. Below
``soft_limit`` events waiting it returns at once; above it the request waits up to ``max_wait``
seconds for the writer to catch up; at ``hard_limit`` it is refused with ``AuditUnavailable``
(HTTP 503 with Retry-After): the broker does not act on what it cannot record. Revocations
(which only take access away) never wait and have a reserve of a tenth of ``hard_limit``.
``problem()`` says why the writer is unhealthy (``/readyz`` answers 503 with it).

Tamper evidence: each replica writes its own hash chain. Every event stores the SHA-256 of the
previous event of its chain and its own hash over a canonical encoding; ``verify_chain``
recomputes them. A removed or edited row breaks the chain. Only written events are chained: an
event gets its place (seq, previous hash) when a write of it is attempted, and the chain
advances only when that write commits, so a split batch, a bounded replacement or a dropped
event never leaves a gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from valetkey.core import limits
from valetkey.core.clock import Clock
from valetkey.core.ports import AuditStore
from valetkey.errors import AuditUnavailable

log = logging.getLogger("valetkey.audit")

GENESIS = "0" * 64


@dataclass(frozen=True, slots=True)
class AuditEvent:
    team_id: str
    at: datetime
    actor: str
    action: str
    decision: str  # "allowed" | "denied"
    reason: str
    connector_uid: str | None = None
    project_id: str | None = None
    environment: str | None = None
    subject: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ChainedEvent:
    event: AuditEvent
    chain: str
    seq: int
    prev_hash: str
    hash: str


def event_hash(
    prev_hash: str, chain: str, seq: int, event: AuditEvent, details_json: str | None = None
) -> str:
    """SHA-256 over a canonical encoding of the event and its place in the chain.

    Fields are joined with the ASCII unit separator (which no field may contain unescaped: each
    is JSON-encoded), the details as sorted-key JSON (``details_json``, when already encoded).
    """
    fields = (
        prev_hash,
        chain,
        str(seq),
        event.team_id,
        event.at.isoformat(),
        event.actor,
        event.action,
        event.decision,
        event.reason,
        event.connector_uid or "",
        event.project_id or "",
        event.environment or "",
        event.subject or "",
    )
    details = _dumps_sorted(event.details) if details_json is None else details_json
    encoded = "\x1f".join(_dumps(f) for f in fields) + "\x1f" + details
    return hashlib.sha256(encoded.encode()).hexdigest()


_dumps = json.JSONEncoder(ensure_ascii=True).encode
_dumps_sorted = json.JSONEncoder(ensure_ascii=True, sort_keys=True, separators=(",", ":"), default=str).encode


def verify_chain(rows: Sequence[ChainedEvent]) -> int | None:
    """Return the seq of the first broken link in one chain's rows (ordered by seq), or None."""
    prev = GENESIS
    expected_seq = 1
    for row in rows:
        if row.seq != expected_seq or row.prev_hash != prev:
            return row.seq
        if event_hash(prev, row.chain, row.seq, row.event) != row.hash:
            return row.seq
        prev = row.hash
        expected_seq += 1
    return None


class AuditRefused(Exception):
    """Raised by an ``AuditStore`` when the database refused a batch's data, not for an outage.

    Writing the same rows again can never succeed (a value too long for its column, a byte the
    database does not store, text the driver cannot encode); nothing of the batch was written.
    ``what`` describes the refusal without any value (an SQLSTATE, an exception type).
    """

    def __init__(self, what: str) -> None:
        self.what = what
        super().__init__(what)


#: The text fields of an event and the width of the column that holds each.
_FIELD_LIMITS: tuple[tuple[str, int], ...] = (
    ("team_id", limits.ID),
    ("actor", limits.ACTOR),
    ("action", limits.ACTION),
    ("decision", limits.DECISION),
    ("reason", limits.REASON),
    ("connector_uid", limits.UID),
    ("project_id", limits.ID),
    ("environment", limits.SLUG),
    ("subject", limits.AUDIT_SUBJECT),
)
#: Characters of the original details kept (as JSON text) in an event's bounded form.
BOUNDED_DETAILS = 2000


def _safe(value: str, limit: int) -> str:
    """``value`` as text every store keeps: a lone surrogate becomes ``?``, NUL becomes U+FFFD,
    and the result is clipped to ``limit`` characters."""
    return value.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")[:limit]


def _too_long(event: AuditEvent, details_json: str) -> list[str]:
    """The names of the fields of ``event`` longer than their columns."""
    over = [
        name
        for name, limit in _FIELD_LIMITS
        if (value := getattr(event, name)) is not None and len(value) > limit
    ]
    if len(details_json) > limits.AUDIT_DETAILS:
        over.append("details")
    return over


def bounded(event: AuditEvent, why: str, fields: Sequence[str] = ()) -> AuditEvent:
    """``event`` in a form every store accepts, marked as such.

    Each text field is made storable (``_safe``: lone surrogates and NUL replaced) and clipped to
    its column;
    the details become ``{"clipped": why, "fields": [...], "details": "<the original details as
    JSON text, clipped to BOUNDED_DETAILS characters>"}``; a naive timestamp is taken as UTC.
    """
    changes: dict[str, Any] = {
        name: _safe(value, limit)
        for name, limit in _FIELD_LIMITS
        if (value := getattr(event, name)) is not None
    }
    original = _safe(_dumps_sorted(event.details), BOUNDED_DETAILS)
    changes["details"] = {"clipped": why, "fields": list(fields), "details": original}
    if event.at.tzinfo is None:
        changes["at"] = event.at.replace(tzinfo=UTC)
    return dataclasses.replace(event, **changes)


@dataclass(slots=True)
class AuditStats:
    """Running totals of the writer since start, read by the metrics endpoint."""

    written: int = 0  #: events written
    clipped: int = 0  #: events written in their bounded form (too long, or refused whole)
    dropped: int = 0  #: events the store refused even in bounded form: lost
    refused_batches: int = 0  #: writes the store refused for their data (each then split)
    failed_flushes: int = 0  #: flushes that failed because the store was unavailable
    waited_requests: int = 0  #: requests that waited for the writer (backlog above the soft limit)
    refused_requests: int = 0  #: requests refused because the backlog was full
    last_write_at: float | None = None  #: when a write last committed (epoch seconds)


#: Defaults (see docs): ~1 KB per event held, so the hard limit holds the memory to ~50 MB.
SOFT_LIMIT = 10_000
HARD_LIMIT = 50_000
MAX_WAIT = 0.5
MAX_BACKOFF = 5.0
#: The writer is unhealthy after this many failed flushes in a row ...
FAILING_AFTER = 3
#: ... or when the oldest waiting event has waited this long (seconds).
STALE_AFTER = 30.0
#: A failing writer logs again at most this often (seconds).
_LOG_EVERY = 30.0


class AuditLog:
    """Events are appended in memory on the request path (no hashing, no I/O); the writer chains
    them in order and writes at most ``max_write`` per transaction, so a backlog after a burst is
    drained in bounded steps instead of one long stall."""

    def __init__(
        self,
        store: AuditStore,
        clock: Clock,
        *,
        interval: float = 0.2,
        batch: int = 500,
        max_write: int = 2000,
        soft_limit: int = SOFT_LIMIT,
        hard_limit: int = HARD_LIMIT,
        max_wait: float = MAX_WAIT,
        max_backoff: float = MAX_BACKOFF,
        stale_after: float = STALE_AFTER,
    ) -> None:
        if not 0 < soft_limit <= hard_limit:
            raise ValueError("the audit backlog needs 0 < soft_limit <= hard_limit")
        self._store = store
        self._clock = clock
        self._interval = interval
        self._batch = batch
        self._max_write = max_write
        self.soft_limit = soft_limit
        self.hard_limit = hard_limit
        self._max_wait = max_wait
        self._max_backoff = max_backoff
        self._stale_after = stale_after
        self.chain = _new_chain()
        self._seq = 0
        self._last_hash = GENESIS
        self._new_chain_next = False  # set after an outage: the failed write may have committed
        self._raw: list[AuditEvent] = []  # recorded, not written yet (in order)
        self._usage: dict[tuple[str, str, str], int] = {}
        self._month: tuple[float, float, str] = (0.0, 0.0, "")  # [start, end) of the cached month
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()  # set (and replaced) whenever a write commits
        self._task: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()
        self._stopping = False
        self._failures = 0  # flushes failed in a row (store unavailable)
        self._last_failure_log = -math.inf
        self.stats = AuditStats()

    @property
    def backlog(self) -> int:
        return len(self._raw)

    def record(self, event: AuditEvent) -> None:
        """Queue ``event`` for chaining and writing. Never blocks, never awaits."""
        self._raw.append(event)
        if len(self._raw) >= self._batch and not self._failures:
            self._wake.set()

    def count(self, team_id: str, metric: str, n: int = 1) -> None:
        key = (team_id, self._month_of(self._clock.timestamp()), metric)
        self._usage[key] = self._usage.get(key, 0) + n

    def _month_of(self, ts: float) -> str:
        start, end, label = self._month
        if not start <= ts < end:
            now = datetime.fromtimestamp(ts, UTC)
            first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
            following = (first + timedelta(days=32)).replace(day=1)
            label = first.strftime("%Y-%m")
            self._month = (first.timestamp(), following.timestamp(), label)
        return label

    # -- backpressure and health ------------------------------------------------------------

    async def admit(self, *, revocation: bool = False) -> None:
        """Return when a request that will be audited may go ahead; raise ``AuditUnavailable`` if not.

        At once below ``soft_limit``; above it, after the writer brought the backlog under it or
        ``max_wait`` passed; refused while ``hard_limit`` events are waiting. A ``revocation`` (a
        request that only takes access away) never waits and may use a reserve of a tenth of
        ``hard_limit`` above it: refusing it would keep a leaked credential usable while the
        database is slow, and the reserve keeps memory bounded all the same.
        """
        waiting = len(self._raw)
        if waiting < self.soft_limit:
            return
        if revocation:
            self._refuse_if_full(self.hard_limit + self.hard_limit // 10)
            return
        self._refuse_if_full(self.hard_limit)
        self.stats.waited_requests += 1
        if not self._failures:
            self._wake.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._max_wait):
                while len(self._raw) >= self.soft_limit:
                    await self._progress.wait()
        self._refuse_if_full(self.hard_limit)

    def _refuse_if_full(self, limit: int) -> None:
        if len(self._raw) >= limit:
            self.stats.refused_requests += 1
            retry = max(1, math.ceil(self._backoff()))
            raise AuditUnavailable(
                "the broker cannot record this request in its audit log now; retry later",
                retryAfterSeconds=retry,
            )

    def problem(self) -> str | None:
        """Why the writer is unhealthy (for ``/readyz``), or None."""
        if self._failures >= FAILING_AFTER:
            return f"the last {self._failures} audit writes failed"
        if len(self._raw) >= self.soft_limit:
            return "the audit backlog is above its soft limit"
        if self._raw:
            waited = self._clock.timestamp() - self._raw[0].at.timestamp()
            if waited > self._stale_after:
                return f"audit events have waited {int(waited)} s to be written"
        return None

    def _backoff(self) -> float:
        """Seconds until the writer's next attempt: ``interval``, doubling per failure in a row."""
        if not self._failures:
            return self._interval
        return float(min(self._max_backoff, self._interval * 2 ** min(self._failures, 30)))

    # -- the writer -------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="valetkey-audit-flush")

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                # While failing, only close() wakes the writer early: no retry storm.
                await asyncio.wait_for(self._wake.wait(), self._backoff())
            self._wake.clear()
            with contextlib.suppress(Exception):  # flush logged it; the events stay queued
                await self.flush()

    async def flush(self) -> None:
        """Write everything recorded so far (in steps of ``max_write``), then the usage counts.

        Raises what the store raised when it is unavailable (the events and counts stay queued);
        a refusal of the data never raises (see the module docstring).
        """
        async with self._flush_lock:
            # Only what was recorded before this flush began: under sustained load it still ends.
            remaining = len(self._raw)
            try:
                while remaining:
                    step = min(self._max_write, remaining)
                    await self._write(step)
                    remaining -= step
                    if remaining:
                        await asyncio.sleep(0)  # let requests run between steps
                usage, self._usage = self._usage, {}
                try:
                    if usage:
                        await self._store.add_usage(usage)
                except BaseException:
                    _merge(self._usage, usage.items())
                    raise
            except Exception as exc:
                self._failed(exc)
                raise
            if self._failures:
                log.warning("audit writes resumed after %d failed attempts", self._failures)
                self._failures = 0

    async def _write(self, n: int) -> None:
        """Write the first ``n`` waiting events; split on a refusal until each refused one is isolated."""
        try:
            await self._append(self._raw[:n], n)
        except AuditRefused:
            self.stats.refused_batches += 1
            if n > 1:
                half = n // 2
                await self._write(half)
                await self._write(n - half)
                return
            await self._write_refused(self._raw[0])

    async def _write_refused(self, event: AuditEvent) -> None:
        """The store refused ``event`` alone: write its bounded form, or drop it and say so."""
        action = _safe(event.action, limits.ACTION)
        try:
            await self._append([bounded(event, "refused")], 1, clipped=1)
        except AuditRefused as exc:
            del self._raw[0]
            self.stats.dropped += 1
            log.error(
                "audit event dropped: the store refused it even in bounded form (action %r, %s)",
                action,
                exc.what,
            )
            return
        log.warning(
            "audit event written in bounded form: the store refused it whole (action %r)", action
        )

    async def _append(self, events: list[AuditEvent], consume: int, *, clipped: int = 0) -> None:
        """Chain ``events`` after the last written one and write them; on success, take the first
        ``consume`` waiting events off the queue. The chain advances only if the write commits."""
        if self._new_chain_next:
            self.chain, self._seq, self._last_hash = _new_chain(), 0, GENESIS
            self._new_chain_next = False
        seq, prev = self._seq, self._last_hash
        rows: list[ChainedEvent] = []
        for n, event in enumerate(events, 1):
            details_json = _dumps_sorted(event.details)
            over = _too_long(event, details_json)
            if over:
                event = bounded(event, "too_long", over)
                details_json = _dumps_sorted(event.details)
                clipped += 1
            seq += 1
            digest = event_hash(prev, self.chain, seq, event, details_json)
            rows.append(ChainedEvent(event, self.chain, seq, prev, digest))
            prev = digest
            if n % 64 == 0:
                await asyncio.sleep(0)  # hashing a large backlog must not stall requests
        try:
            await self._store.append_audit(rows)
        except AuditRefused:
            raise
        except BaseException:
            # Unavailable, or cancelled: the write may have committed. Never reuse these seqs.
            self._new_chain_next = True
            raise
        self._seq, self._last_hash = seq, prev
        del self._raw[:consume]
        self.stats.written += len(rows)
        self.stats.clipped += clipped
        self.stats.last_write_at = self._clock.timestamp()
        self._progress.set()
        self._progress = asyncio.Event()

    def _failed(self, exc: Exception) -> None:
        self._failures += 1
        self.stats.failed_flushes += 1
        now = self._clock.timestamp()
        if self._failures == 1 or now - self._last_failure_log >= _LOG_EVERY:
            self._last_failure_log = now
            log.error(
                "audit write failed (%s); %d events kept, retrying in %.1f s (failure %d in a row)",
                _describe(exc),
                len(self._raw),
                self._backoff(),
                self._failures,
            )

    async def close(self) -> None:
        """Stop the writer without interrupting a flush (a cancelled insert may have committed),
        then flush the rest."""
        if self._task is not None:
            self._stopping = True
            self._wake.set()
            await self._task
            self._task = None
        await self.flush()


def _new_chain() -> str:
    return "ch_" + secrets.token_hex(8)


def _describe(exc: BaseException) -> str:
    """An exception's type and SQLSTATE, never its message (which may quote the values)."""
    orig = getattr(exc, "orig", None)
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    name = type(exc).__name__ if orig is None else f"{type(exc).__name__}/{type(orig).__name__}"
    return name if state is None else f"{name}, SQLSTATE {state}"


def _merge(
    into: dict[tuple[str, str, str], int], items: Iterable[tuple[tuple[str, str, str], int]]
) -> None:
    for key, n in items:
        into[key] = into.get(key, 0) + n
