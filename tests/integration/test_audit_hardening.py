"""The audit log survives hostile input: bounded at the edge, a refused batch split, a slow store absorbed.

Issue 6 item 1: a token request for an over-long connector uid made PostgreSQL refuse the audit
batch, and the writer retried it forever (no later event or usage count written, /v1/audit and
/v1/usage answering 500). Each test below drives a real broker on both stores.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http.client
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx2
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select
from tests.conftest import ADMIN_URL

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


def _token(broker: RunningBroker, identity: str, uid: str) -> httpx2.Response:
    return httpx2.post(
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
        assert usage.json()["counters"]["tokenRequests"] == 1


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
        "team_x",
        datetime.now(UTC),
        "tester",
        "token.exchange",
        "allowed",
        "issued",
        connector_uid=UID,
        details={"i": i},
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
    text = httpx2.get(f"{broker.url}/metrics", timeout=10).text
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.labels
    }


def _wait_ready(broker: RunningBroker, timeout: float = 30) -> httpx2.Response:
    deadline = time.monotonic() + timeout
    while True:
        ready = httpx2.get(f"{broker.url}/readyz", timeout=10)
        if ready.status_code == 200 or time.monotonic() > deadline:
            return ready
        time.sleep(0.1)


def test_a_stalled_audit_store_slows_then_refuses_audited_requests_and_recovers(
    database_url: str, tmp_path: Path
) -> None:
    """With audit writes blocked: requests pass below the soft limit, wait above it, are refused
    with 503 audit_unavailable and Retry-After at the hard limit (token and management writes
    alike) while a revocation still passes (PostgreSQL); /readyz and /metrics say so; once writes
    resume everything admitted is written."""
    with running_broker(
        tmp_path / "data",
        database_url=database_url,
        audit_backlog_soft_limit=5,
        audit_backlog_hard_limit=10,
    ) as broker:
        postgres = database_url.startswith("postgres")
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
                if postgres:  # SQLite's lock holds every writer: the revocation could not commit
                    revoked = c.request(
                        "DELETE", f"/v1/connect/connectors/{UID}/tokens", json={"allTokens": True}
                    )
                    assert revoked.status_code == 200, revoked.text  # revocations use the reserve
            ready = httpx2.get(f"{broker.url}/readyz", timeout=10)
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
            revokes = c.get("/v1/audit", params={"action": "token.revoke"}).json()
            assert [e["reason"] for e in revokes] == (["revoked"] if postgres else [])
            assert c.get("/v1/usage").json()["counters"]["tokenRequests"] == 12
            assert c.get("/v1/projects/refused-prj").status_code == 404
        metrics = _scrape(broker)
        assert metrics["valetkey_audit_writer_healthy"] == 1
        assert metrics["valetkey_audit_events_dropped_total"] == 0
        assert metrics["valetkey_audit_last_write_timestamp_seconds"] > 0


# -- bounds at the edge: every entry point, a class of hostile values ----------------------------


#: Path values no parameter accepts: over the limit (in characters: one more than 130, 40 or 40,
#: ASCII or multi-byte), far over it, and characters no stored value may hold (sent
#: percent-encoded: NUL, CR LF, a Unicode line separator, a tab).
def _hostile(limit: int) -> list[str]:
    return [
        "a" * (limit + 1),
        "é" * (limit + 1),
        "😀" * (limit + 1),
        "b" * 10_000,
        "c" * 100_000,
        "x%00y",
        "x%0D%0Ay",
        "x%E2%80%A8y",
        "x%09y",
    ]


def _user(user_id: str) -> dict[str, Any]:
    return {"subject": {"type": "user", "id": user_id}}


def _refusal(response: httpx2.Response) -> tuple[int, str | None, str | None]:
    """(status, error code, field named) of a refusal; the HTTP server itself answers a 100 KB
    request line with a bare 400 before the app (h11's limit), which has neither."""
    try:
        error = response.json()["error"]
    except ValueError:
        return response.status_code, None, None
    field = error.get("field") or (error.get("problems") or [{}])[0].get("field")
    return response.status_code, error["code"], field


def _send(
    client: httpx2.Client, method: str, path: str, body: Any, headers: dict[str, str] | None = None
) -> httpx2.Response:
    """``client.request``, or for a request line longer than httpx2 builds (64 KB) the same request
    over ``http.client``."""
    if len(path) < 60_000:
        return client.request(method, path, json=body, headers=headers)
    url = httpx2.URL(str(client.base_url))
    conn = http.client.HTTPConnection(url.host, url.port, timeout=30)
    try:
        sent = {**dict(client.headers), **(headers or {}), "content-type": "application/json"}
        # The server may answer and close while the rest of the request is still being sent
        # (it refuses the request line as soon as it is too long): then read that answer.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.request(method, path, body=json.dumps(body).encode(), headers=sent)
        answer = conn.getresponse()
        return httpx2.Response(
            answer.status,
            headers=answer.getheaders(),
            content=answer.read(),
            request=httpx2.Request(method, "http://long.invalid/"),
        )
    finally:
        conn.close()


def _assert_refused(response: httpx2.Response, field: str, what: str) -> None:
    """A typed 400 naming ``field``; for a path parameter (``field`` given as ``uid|path``) a
    control character is refused before routing, naming ``path``."""
    status, code, named = _refusal(response)
    assert status == 400, f"{what}: {status} {response.text[:300]}"
    if code is None:  # only the 100 KB request line may be refused by the HTTP server itself
        assert response.request.url.host == "long.invalid", what
        return
    assert code == "invalid_request", f"{what}: {response.text[:300]}"
    assert named in field.split("|"), f"{what}: field {named!r}, expected {field!r}"


def test_over_long_and_malformed_values_are_refused_at_every_entry_point(
    broker: RunningBroker,
) -> None:
    """Path parameters, body fields, list items and counts, and query values over their limits or
    holding control characters get a typed 400 naming the field, on every route; nothing is
    stored, and the audit log and usage keep working."""
    identity = broker.setup_project(PROJECT, {UID: {"apiKey": API_KEY}})
    auth = {"authorization": f"Bearer {identity}"}
    app = {"subject": {"type": "app"}}
    with broker.admin() as admin, httpx2.Client(base_url=broker.url, timeout=30) as c:
        before = admin.get("/v1/projects").json()
        for bad in _hostile(130):
            connect: list[tuple[str, str, Any]] = [
                ("POST", f"/v1/connect/token/{bad}", app),
                ("GET", f"/v1/connect/connectors/{bad}", None),
                ("DELETE", f"/v1/connect/connectors/{bad}/tokens", {"allTokens": True}),
                ("POST", f"/v1/connect/authorize/{bad}", {"subject": {"type": "user", "id": "u"}}),
                ("POST", f"/v1/connect/authorize/{bad}/confirm", {"request": "r", "verifier": "v"}),
                ("POST", f"/v1/connect/token/{bad}/import", {"accessToken": "t"}),
            ]
            for method, path, body in connect:
                response = _send(c, method, path, body, auth)
                _assert_refused(response, "uid|path", f"{method} {path[:60]}")
            management: list[tuple[str, str, Any]] = [
                ("GET", f"/v1/connectors/{bad}", None),
                ("PATCH", f"/v1/connectors/{bad}", {"data": {}}),
                ("DELETE", f"/v1/connectors/{bad}", None),
                ("POST", f"/v1/connectors/{bad}/links", {"project": PROJECT, "environments": []}),
                ("POST", f"/v1/connectors/{bad}/detach", {"project": PROJECT}),
            ]
            for method, path, body in management:
                response = _send(admin, method, path, body)
                _assert_refused(response, "uid|path", f"{method} {path[:60]}")
        for bad in _hostile(40):
            for method, path, body, field in [
                ("GET", f"/v1/projects/{bad}", None, "project|path"),
                ("GET", f"/v1/projects/{bad}/environments", None, "project|path"),
                ("POST", f"/v1/projects/{bad}/environments", {"slug": "qa"}, "project|path"),
                ("POST", f"/v1/projects/{bad}/development-identity", {}, "project|path"),
                (
                    "POST",
                    f"/v1/projects/{bad}/access-tokens",
                    {"environment": "development"},
                    "project|path",
                ),
                ("DELETE", f"/v1/trust-bindings/{bad}", None, "binding_id|path"),
                ("DELETE", f"/v1/access-tokens/{bad}", None, "token_id|path"),
            ]:
                response = _send(admin, method, path, body)
                _assert_refused(response, field, f"{method} {path[:60]}")
        token, authorize, links = (
            f"/v1/connect/token/{UID}",
            f"/v1/connect/authorize/{UID}",
            (f"/v1/connectors/{UID}/links"),
        )
        tokens = f"/v1/projects/{PROJECT}/access-tokens"
        dev = {"environment": "development"}
        as_workload: list[tuple[str, str, dict[str, Any], str]] = [
            ("POST", token, _user("u" * 201), "subject.id"),
            ("POST", token, _user("é" * 201), "subject.id"),
            ("POST", token, _user("u\x00"), "subject.id"),
            ("POST", token, {**app, "scopes": ["s" * 201]}, "scopes"),
            ("POST", token, {**app, "scopes": ["read\r\n"]}, "scopes"),
            ("POST", token, {**app, "scopes": [f"s{i}" for i in range(101)]}, "scopes"),
            ("POST", token, {**app, "installationId": "i" * 10_000}, "installationId"),
            ("POST", token, {**app, "resources": ["r\r\nx"]}, "resources"),
            ("DELETE", f"/v1/connect/connectors/{UID}/tokens", _user("é" * 201), "subject.id"),
            (
                "DELETE",
                f"/v1/connect/connectors/{UID}/tokens",
                {"allTokens": True, "installationId": "i\x00"},
                "installationId",
            ),
            (
                "POST",
                authorize,
                {**_user("u"), "returnUrl": "https://a/" + "p" * 2000},
                "returnUrl",
            ),
            ("POST", authorize, {**_user("u"), "loginHint": "a\r\nb"}, "loginHint"),
            ("POST", f"{authorize}/confirm", {"request": "r\x00", "verifier": "v"}, "request"),
        ]
        for method, path, body, field in as_workload:
            response = c.request(method, path, json=body, headers=auth)
            _assert_refused(response, field, f"{method} {path} {field}")
        binding = {"issuer": "https://i", "audience": "a", "claims": {"sub": "x"}, **dev}
        as_member: list[tuple[str, dict[str, Any], str]] = [
            (f"{token}/import", {"project": "p" * 41, **dev, "accessToken": "t"}, "project"),
            ("/v1/projects", {"slug": "fine", "name": "n\x00"}, "name"),
            ("/v1/projects", {"slug": "fine", "name": "é" * 201}, "name"),
            ("/v1/members", {"name": "fine", "role": "r" * 17}, "role"),
            (tokens, {**dev, "name": "a\r\nb"}, "name"),
            (tokens, {**dev, "userId": "😀" * 201}, "userId"),
            (
                links,
                {"project": PROJECT, "environments": ["development"], "scopes": ["s" * 201]},
                "scopes.0",
            ),
            (links, {"project": PROJECT, "environments": ["development"] * 101}, "environments"),
            (
                f"/v1/projects/{PROJECT}/trust-bindings",
                {**binding, "algorithms": ["A" * 17]},
                "algorithms.0",
            ),
        ]
        for path, body, field in as_member:
            _assert_refused(admin.post(path, json=body), field, f"POST {path} {field}")
        for path, params, field in [
            ("/v1/connectors", {"search": "a\x00b"}, "search"),
            ("/v1/audit", {"action": "a\r\nb"}, "action"),
            ("/v1/audit", {"connector": "é" * 131}, "query.connector"),  # the route's own limit
            ("/v1/usage", {"month": "\x00"}, "month"),
            ("/v1/access-tokens", {"unknown": "q" * 2001}, "unknown"),
        ]:
            _assert_refused(admin.get(path, params=params), field, f"GET {path} {field}")
        assert admin.get("/v1/projects").json() == before  # nothing created
        assert _token(broker, identity, UID).status_code == 200
        audit = admin.get("/v1/audit", params={"action": "token.exchange"})
        assert audit.status_code == 200, audit.text
        assert [e["reason"] for e in audit.json()] == ["issued"]  # the refusals never reached it
        usage = admin.get("/v1/usage")
        assert usage.status_code == 200, usage.text
        assert usage.json()["counters"]["tokenRequests"] == 1


@pytest.mark.parametrize("uid", ["a" * 130, "é" * 130, "😀" * 130, "api-key/" + "日" * 122])
def test_a_uid_at_the_limit_is_looked_up_and_audited_whole(broker: RunningBroker, uid: str) -> None:
    """130 characters (up to 520 bytes of UTF-8) pass the edge, miss with 404, and their audit
    event is written whole on either store (the column counts characters like the check)."""
    identity = broker.setup_project(PROJECT, {UID: {"apiKey": API_KEY}})
    missed = _token(broker, identity, uid)
    assert missed.status_code == 404, missed.text
    with broker.admin() as c:
        events = c.get("/v1/audit", params={"connector": uid}).json()
        assert [(e["connector"], e["reason"]) for e in events] == [(uid, "not_found")]
        assert "clipped" not in events[0]["details"]


def _pg_admin(sql: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(ADMIN_URL, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


def test_an_unreachable_database_keeps_the_events_backs_off_and_recovers(
    postgres_url: str, tmp_path: Path
) -> None:
    """With the broker's PostgreSQL database refusing connections, audit writes fail and are
    retried with backoff (events kept, the writer reported unhealthy); once the database is back
    every event recorded meanwhile is written and /readyz answers 200."""
    name = postgres_url.rsplit("/", 1)[1]
    with running_broker(tmp_path / "data", database_url=postgres_url) as broker:
        identity = broker.setup_project(PROJECT, {UID: {"apiKey": API_KEY}})
        assert _token(broker, identity, UID).status_code == 200
        team_id = broker.broker.bootstrap_result.team_id
        try:
            _pg_admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            _pg_admin(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "  # noqa: S608 - our own name
                f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
            )
            for i in range(3):  # events recorded while the database is away (as a request would)
                broker.loop.call_soon_threadsafe(  # type: ignore[union-attr]
                    broker.broker.audit.record, _event(i, team_id=team_id, action="test.outage")
                )
            deadline = time.monotonic() + 20
            while _scrape(broker)["valetkey_audit_flush_failures_total"] < 3:
                assert time.monotonic() < deadline, "the writer did not retry"
                time.sleep(0.2)
            metrics = _scrape(broker)
            assert metrics["valetkey_audit_writer_healthy"] == 0
            assert metrics["valetkey_audit_backlog"] >= 3
            assert httpx2.get(f"{broker.url}/readyz", timeout=10).status_code == 503
        finally:
            _pg_admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        assert _wait_ready(broker).status_code == 200
        with broker.admin() as c:
            events = c.get("/v1/audit", params={"action": "test.outage"}).json()
            assert sorted(e["details"]["i"] for e in events) == [0, 1, 2]
            assert _token(broker, identity, UID).status_code == 200
            exchanges = c.get("/v1/audit", params={"action": "token.exchange"}).json()
            assert len(exchanges) == 2
            assert c.get("/v1/usage").json()["counters"]["tokenRequests"] == 2
        metrics = _scrape(broker)
        assert metrics["valetkey_audit_writer_healthy"] == 1
        assert metrics["valetkey_audit_events_dropped_total"] == 0
