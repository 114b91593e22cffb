"""Benchmark revoke-all over a large ledger, through the service and through the HTTP API.

    .venv/bin/python bench/bench_revoke.py                          # SQLite in a temp dir
    .venv/bin/python bench/bench_revoke.py --database-url postgresql://postgres@127.0.0.1:5432/test

Runs a real broker in a thread (``valetkey.testing.running_broker``) with a temporary data
directory, creates a project and an api-key connector (no revocation endpoint) through the
management API, then fills the ledger straight through the store: ``--tokens`` issued tokens
(default 100,000), each with its encrypted cache row, inserted in bulk. It then times
revoke-all twice on fresh ledgers: once through the service (``ExchangeService.revoke`` on the
broker's own loop) and once through ``DELETE /v1/connect/connectors/{uid}/tokens``, and checks
that every token is marked revoked and every cache row is gone.

With ``--database-url`` pointing at PostgreSQL, a fresh database is created on that server and
dropped afterwards; the given database itself is only used to run CREATE/DROP.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import shlex
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import func, select

from valetkey.core.models import Member, Role
from valetkey.store import tables as t
from valetkey.testing import RunningBroker, fill_ledger, running_broker

UID = "api-key/bench"
PATH = "/v1/connect/connectors/api-key%2Fbench/tokens"


@contextlib.contextmanager
def fresh_postgres(admin_url: str) -> Iterator[str]:
    name = f"valetkey_bench_{secrets.token_hex(4)}"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(admin_url, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{admin_url.rsplit('/', 1)[0]}/{name}"
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def fill(broker: Any, team_id: str, connector_id: str, project_id: str, n: int) -> None:
    """Insert ``n`` issued tokens with cache rows, in bulk (5,000 per statement)."""
    await fill_ledger(broker, team_id, connector_id, project_id, n, value_format="sk_{}", batch=5_000)


async def remaining(broker: Any, connector_id: str) -> tuple[int, int]:
    """(unrevoked issued tokens, cache rows) of the connector."""
    async with broker.db.session() as s:
        live = await s.scalar(
            select(func.count())
            .select_from(t.IssuedToken)
            .where(t.IssuedToken.connector_id == connector_id, t.IssuedToken.revoked_at.is_(None))
        )
        rows = await s.scalar(
            select(func.count())
            .select_from(t.CachedToken)
            .where(t.CachedToken.connector_id == connector_id)
        )
    return int(live or 0), int(rows or 0)


def ids(running: RunningBroker) -> tuple[str, str, str, str]:
    with running.admin() as c:
        c.post("/v1/projects", json={"slug": "bench"}).raise_for_status()
        c.post(
            "/v1/connectors",
            json={"service": "api-key", "name": "bench", "data": {"apiKey": "sk-bench"}},
        ).raise_for_status()
        c.post(
            f"/v1/connectors/{UID}/links",
            json={"project": "bench", "environments": ["development"]},
        ).raise_for_status()
        me = c.get("/v1/me").json()
    connector = running.run(running.broker.repo.connector_view(me["team"], UID))
    project_id = next(iter(connector.links))
    return me["team"], me["member"], connector.connector.id, project_id


def bench(database_url: str | None, n: int) -> list[tuple[str, float, dict[str, Any]]]:
    results = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_broker(Path(tmp) / "data", database_url=database_url) as running,
    ):
        broker = running.broker
        team_id, member_id, connector_id, project_id = ids(running)
        member = Member(team_id=team_id, member_id=member_id, name="bench", role=Role.OWNER)
        for how in ("service", "http"):
            t0 = time.perf_counter()
            running.run(fill(broker, team_id, connector_id, project_id, n), timeout=600)
            filled = time.perf_counter() - t0
            t0 = time.perf_counter()
            if how == "service":
                counts = running.run(
                    broker.exchange.revoke(member, UID, None), timeout=600
                ).to_wire()
            else:
                with running.admin(timeout=600) as c:
                    answer = c.request("DELETE", PATH, json={"allTokens": True})
                    answer.raise_for_status()
                    counts = answer.json()
            took = time.perf_counter() - t0
            live, rows = running.run(remaining(broker, connector_id))
            if live or rows or counts["tokensFound"] != n:
                raise SystemExit(f"revoke-all left {live} live tokens, {rows} cache rows: {counts}")
            print(f"  filled {n} in {filled:.1f} s; revoke-all via {how}: {took:.3f} s  {counts}")
            results.append((how, took, counts))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database-url", default=None, help="a PostgreSQL admin URL (default: SQLite)"
    )
    parser.add_argument("--tokens", type=int, default=100_000)
    args = parser.parse_args()
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    store = "postgresql" if args.database_url else "sqlite"
    print(f"$ {command}")
    print(
        f"revoke-all, {args.tokens} issued tokens, api-key connector (no revocation endpoint), {store}"
    )
    if args.database_url:
        with fresh_postgres(args.database_url) as url:
            results = bench(url, args.tokens)
    else:
        results = bench(None, args.tokens)
    for how, took, _ in results:
        print(f"{store:10s} {how:8s} {args.tokens:>7d} tokens  {took:7.3f} s")


if __name__ == "__main__":
    main()
