"""The audit log survives hostile input: bounded at the edge, a refused batch split, a slow store absorbed.

Issue 6 item 1: a token request for an over-long connector uid made PostgreSQL refuse the audit
batch, and the writer retried it forever (no later event or usage count written, /v1/audit and
/v1/usage answering 500). Each test below drives a real broker on both stores.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from valetkey.core.audit import AuditEvent, AuditLog, ChainedEvent, verify_chain
from valetkey.core.clock import SystemClock
from valetkey.crypto import KeyRing
from valetkey.store import tables as t
from valetkey.store.db import Database
from valetkey.store.repo import Repository
from valetkey.testing import RunningBroker, running_broker

PROJECT = "audit-prj"
UID = "api-key/audit-key"
API_KEY = "sk-audit-8d2"


def _token(broker: RunningBroker, identity: str, uid: str) -> httpx.Response:
    return httpx.post(
        f"{broker.url}/v1/connect/token/{uid}",
        json={"subject": {"type": "app"}},
        headers={"authorization": f"Bearer {identity}"},
        timeout=30,
    )


def test_an_over_long_uid_does_not_stop_the_audit_log(broker: RunningBroker) -> None:
    """After a token request for a 200-character uid, a valid exchange is still audited and usage answers."""
    identity = broker.setup_project(PROJECT, {UID: {"apiKey": API_KEY}})
    hostile = _token(broker, identity, "api-key/" + "a" * 200)
    assert hostile.status_code in (400, 404), hostile.text
    assert _token(broker, identity, UID).status_code == 200
    with broker.admin() as c:
        audit = c.get("/v1/audit", params={"connector": UID, "action": "token.exchange"})
        assert audit.status_code == 200, audit.text
        assert [e["reason"] for e in audit.json()] == ["issued"]
        usage = c.get("/v1/usage")
        assert usage.status_code == 200, usage.text
        assert usage.json()["counters"]["token_requests"] == 1


# -- the writer against the real stores, poison injected directly (past the edge) ---------------


async def _stored_chain(db: Database) -> list[ChainedEvent]:
    """Every audit row as stored, rebuilt as chained events (ordered by chain and seq)."""
    async with db.session() as s:
        rows = (await s.scalars(select(t.AuditEvent).order_by(t.AuditEvent.id))).all()
    return [
        ChainedEvent(
            AuditEvent(
                team_id=r.team_id,
                at=r.at,
                actor=r.actor,
                action=r.action,
                decision=r.decision,
                reason=r.reason,
                connector_uid=r.connector_uid,
                project_id=r.project_id,
                environment=r.environment,
                subject=r.subject,
                details=r.details,
            ),
            r.chain,
            r.seq,
            r.prev_hash,
            r.hash,
        )
        for r in rows
    ]


def _event(i: int, **changes: Any) -> AuditEvent:
    event = AuditEvent(
        "team_x", datetime.now(UTC), "tester", "token.exchange", "allowed", "issued",
        connector_uid=UID, details={"i": i},
    )
    return dataclasses.replace(event, **changes)


#: Events no edge would let through, each refused by the stores named (or over its columns).
POISON = [
    pytest.param({"actor": "evil\ud800"}, {"sqlite", "postgresql"}, id="lone-surrogate"),
    pytest.param(
        {"details": {"i": -1, "when": datetime.now(UTC)}}, {"sqlite", "postgresql"}, id="not-json"
    ),
    pytest.param({"subject": "user:a\x00b"}, {"postgresql"}, id="nul"),  # SQLite keeps NUL
    pytest.param(
        {"connector_uid": "api-key/" + "a" * 100_000}, {"sqlite", "postgresql"}, id="100k-uid"
    ),
    pytest.param({"connector_uid": "é" * 131}, {"sqlite", "postgresql"}, id="multibyte-limit+1"),
]


@pytest.mark.parametrize(("poison", "refused_by"), POISON)
async def test_a_poison_event_does_not_stop_the_writer_on_a_real_store(
    database_url: str, tmp_path: Path, poison: dict[str, Any], refused_by: set[str]
) -> None:
    """A poison event in the middle of a batch: the rest of the batch is written in order, the
    poison is stored bounded and marked, later events are written, and the stored chain verifies."""
    db = Database(database_url)
    await db.migrate()
    try:
        repo = Repository(db, KeyRing.load_or_create(tmp_path / "kek.json"), SystemClock())
        log = AuditLog(repo, SystemClock())
        for i in range(6):
            log.record(_event(i, **poison) if i == 3 else _event(i))
        await log.flush()
        log.record(_event(6))
        await log.flush()
        stored = await _stored_chain(db)
        dialect = db.dialect
    finally:
        await db.close()
    assert verify_chain(stored) is None
    assert [r.seq for r in stored] == list(range(1, 8))
    if dialect not in refused_by:  # this store keeps the value whole: nothing to bound
        assert [r.event.details.get("i") for r in stored] == list(range(7))
        assert log.stats.clipped == 0
        return
    assert [r.event.details.get("i") for r in stored] == [0, 1, 2, None, 4, 5, 6]
    bounded_row = stored[3].event
    assert bounded_row.details["clipped"] in ("refused", "too_long")
    assert len(bounded_row.connector_uid or "") <= 130
    assert "\x00" not in (bounded_row.subject or "")
    assert log.stats.dropped == 0
    assert log.stats.clipped == 1
    assert log.backlog == 0


# -- backpressure: a real store made slow ------------------------------------------------------


@contextlib.contextmanager
def audit_table_locked(database_url: str) -> Iterator[None]:
    """Hold a lock that blocks every write to ``audit_events`` (readers and other tables unaffected).

    PostgreSQL: ``LOCK TABLE audit_events IN ACCESS EXCLUSIVE MODE`` in an open transaction, on a
    connection of its own. SQLite: ``BEGIN EXCLUSIVE`` (in WAL mode: no other writer, readers go on).
    """
    if database_url.startswith("sqlite"):
        conn = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    locked, release = threading.Event(), threading.Event()

    async def hold() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            async with conn.transaction():
                await conn.execute("LOCK TABLE audit_events IN ACCESS EXCLUSIVE MODE")
                locked.set()
                await asyncio.get_running_loop().run_in_executor(None, release.wait)
        finally:
            await conn.close()

    thread = threading.Thread(target=asyncio.run, args=(hold(),), daemon=True)
    thread.start()
    assert locked.wait(10), "could not lock audit_events"
    try:
        yield
    finally:
        release.set()
        thread.join(10)


def _scrape(broker: RunningBroker) -> dict[str, float]:
    text = httpx.get(f"{broker.url}/metrics", timeout=10).text
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.labels
    }


def _wait_ready(broker: RunningBroker, timeout: float = 30) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        ready = httpx.get(f"{broker.url}/readyz", timeout=10)
        if ready.status_code == 200 or time.monotonic() > deadline:
            return ready
        time.sleep(0.1)


def test_a_stalled_audit_store_slows_then_refuses_audited_requests_and_recovers(
    database_url: str, tmp_path: Path
) -> None:
    """With audit writes blocked: requests pass below the soft limit, wait above it, are refused
    with 503 audit_unavailable and Retry-After at the hard limit (token and management writes
    alike); /readyz and /metrics say so; once writes resume everything admitted is written."""
    with running_broker(
        tmp_path / "data",
        database_url=database_url,
        audit_backlog_soft_limit=5,
        audit_backlog_hard_limit=10,
    ) as broker:
        identity = broker.setup_project(PROJECT, {UID: {"apiKey": API_KEY}})
        assert _token(broker, identity, UID).status_code == 200
        with broker.admin() as c:
            assert c.get("/v1/audit").status_code == 200  # everything so far written
        with audit_table_locked(database_url):
            answers = []
            for _ in range(12):
                started = time.monotonic()
                answers.append((_token(broker, identity, UID), time.monotonic() - started))
            statuses = [r.status_code for r, _ in answers]
            assert statuses == [200] * 10 + [503] * 2
            assert all(took < 0.4 for _, took in answers[:5])  # below the soft limit: no wait
            assert all(took >= 0.4 for _, took in answers[5:10])  # above it: waited for the writer
            refused = answers[10][0]
            assert refused.json()["error"]["code"] == "audit_unavailable"
            assert int(refused.headers["retry-after"]) >= 1
            with broker.admin() as c:
                write = c.post("/v1/projects", json={"slug": "refused-prj"})
                assert write.status_code == 503, write.text
                assert write.json()["error"]["code"] == "audit_unavailable"
                assert c.get(f"/v1/connectors/{UID}").status_code == 200  # reads still served
            ready = httpx.get(f"{broker.url}/readyz", timeout=10)
            assert ready.status_code == 503
            assert "backlog" in ready.json()["audit"]
            metrics = _scrape(broker)
            assert metrics["valetkey_audit_backlog"] >= 10
            assert metrics["valetkey_audit_backlog_hard_limit"] == 10
            assert metrics["valetkey_audit_requests_refused_total"] >= 2
            assert metrics["valetkey_audit_requests_waited_total"] >= 5
            assert metrics["valetkey_audit_writer_healthy"] == 0
        assert _wait_ready(broker).status_code == 200
        assert _token(broker, identity, UID).status_code == 200
        with broker.admin() as c:
            events = c.get("/v1/audit", params={"action": "token.exchange", "limit": 100}).json()
            assert len(events) == 12  # 1 + 10 admitted + 1 after; the refused ones never acted
            assert c.get("/v1/usage").json()["counters"]["token_requests"] == 12
            assert c.get("/v1/projects/refused-prj").status_code == 404
        metrics = _scrape(broker)
        assert metrics["valetkey_audit_writer_healthy"] == 1
        assert metrics["valetkey_audit_events_dropped_total"] == 0
        assert metrics["valetkey_audit_last_write_timestamp_seconds"] > 0
