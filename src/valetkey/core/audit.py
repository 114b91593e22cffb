"""The audit log and usage counters: recorded on the hot path, written in batches.

``AuditLog.record`` only appends to memory; a background task flushes every
``interval`` seconds (or sooner when ``batch`` events are waiting), and ``close``
flushes what is left, so nothing is lost on a clean shutdown. A flush that fails
keeps its events and retries on the next tick.

Tamper evidence: each replica writes its own hash chain. Every event stores the
SHA-256 of the previous event of its chain and its own hash over a canonical
encoding; ``verify_chain`` recomputes them. A removed or edited row breaks the chain.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from valetkey.core.clock import Clock

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


def event_hash(prev_hash: str, chain: str, seq: int, event: AuditEvent) -> str:
    """SHA-256 over a canonical encoding of the event and its place in the chain.

    Fields are joined with the ASCII unit separator (which no field may contain unescaped: each
    is JSON-encoded), the details as sorted-key JSON.
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
    encoded = "\x1f".join(_dumps(f) for f in fields) + "\x1f" + _dumps_sorted(event.details)
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


class AuditStore(Protocol):
    async def append_audit(self, events: Sequence[ChainedEvent]) -> None: ...

    async def add_usage(self, counts: Mapping[tuple[str, str, str], int]) -> None:
        """Add ``count`` to each (team_id, month, metric)."""
        ...


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
    ) -> None:
        self._store = store
        self._clock = clock
        self._interval = interval
        self._batch = batch
        self._max_write = max_write
        self.chain = "ch_" + secrets.token_hex(8)
        self._seq = 0
        self._last_hash = GENESIS
        self._raw: list[AuditEvent] = []  # recorded, not chained yet
        self._chained: list[ChainedEvent] = []  # chained, not written yet (kept on failure)
        self._usage: dict[tuple[str, str, str], int] = {}
        self._month: tuple[float, float, str] = (0.0, 0.0, "")  # [start, end) of the cached month
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()
        self._stopping = False

    @property
    def backlog(self) -> int:
        return len(self._raw) + len(self._chained)

    def record(self, event: AuditEvent) -> None:
        """Queue ``event`` for chaining and writing. Never blocks, never awaits."""
        self._raw.append(event)
        if len(self._raw) >= self._batch:
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

    async def _chain(self, events: list[AuditEvent]) -> None:
        for n, event in enumerate(events, 1):
            self._seq += 1
            digest = event_hash(self._last_hash, self.chain, self._seq, event)
            self._chained.append(ChainedEvent(event, self.chain, self._seq, self._last_hash, digest))
            self._last_hash = digest
            if n % 64 == 0:
                await asyncio.sleep(0)  # hashing a large backlog must not stall requests

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="valetkey-audit-flush")

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            try:
                await self.flush()
            except Exception:  # a store outage must not kill the writer; events stay queued
                log.exception("audit flush failed; %d events kept for retry", self.backlog)

    async def flush(self) -> None:
        """Write everything recorded so far (in steps of ``max_write``), then the usage counts."""
        async with self._flush_lock:
            # Only what was recorded before this flush began: under sustained load it still ends.
            remaining = len(self._raw)
            while remaining or self._chained:
                if len(self._chained) < self._max_write and remaining:
                    take = min(self._max_write - len(self._chained), remaining)
                    events, self._raw = self._raw[:take], self._raw[take:]
                    remaining -= take
                    await self._chain(events)
                step = self._chained[: self._max_write]
                await self._store.append_audit(step)  # on failure, everything stays queued
                del self._chained[: len(step)]
                if remaining or self._chained:
                    await asyncio.sleep(0)  # let requests run between steps
            usage, self._usage = self._usage, {}
            try:
                if usage:
                    await self._store.add_usage(usage)
            except BaseException:
                _merge(self._usage, usage.items())
                raise

    async def close(self) -> None:
        """Stop the writer without interrupting a flush (a cancelled insert may have committed),
        then flush the rest."""
        if self._task is not None:
            self._stopping = True
            self._wake.set()
            await self._task
            self._task = None
        await self.flush()


def _merge(
    into: dict[tuple[str, str, str], int], items: Iterable[tuple[tuple[str, str, str], int]]
) -> None:
    for key, n in items:
        into[key] = into.get(key, 0) + n
