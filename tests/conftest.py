"""Shared fixtures: the two real stores (SQLite and PostgreSQL) and a running broker on each.

PostgreSQL is the machine's server at 127.0.0.1:5432 (override the admin URL with
VALETKEY_TEST_POSTGRES). Each test that asks for it gets a fresh database of its own.
Without PostgreSQL the postgres cases are skipped — except under CI=true, where a
missing PostgreSQL fails the run.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from valetkey.testing import RunningBroker, running_broker

ADMIN_URL = os.environ.get("VALETKEY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
_pg_state: dict[str, object] = {}


def _pg_run(sql: str) -> None:
    async def go() -> None:
        conn = await asyncpg.connect(ADMIN_URL, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(go())


def postgres_available() -> bool:
    if "ok" not in _pg_state:
        try:
            _pg_run("SELECT 1")
            _pg_state["ok"] = True
        except Exception as exc:  # any failure to connect means "not here"
            _pg_state["ok"] = False
            _pg_state["why"] = f"{type(exc).__name__}: {exc}"
    return bool(_pg_state["ok"])


def require_postgres() -> None:
    if postgres_available():
        return
    why = _pg_state.get("why")
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(
            f"PostgreSQL is required under CI=true and is not reachable at {ADMIN_URL}: {why}"
        )
    pytest.skip(f"PostgreSQL not reachable at {ADMIN_URL}: {why}")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped afterwards."""
    require_postgres()
    name = f"valetkey_t_{secrets.token_hex(6)}"
    _pg_run(f'CREATE DATABASE "{name}"')
    base = ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        _pg_run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each store in turn: a SQLite file, then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    yield request.getfixturevalue("postgres_url")


@pytest.fixture
def broker(database_url: str, tmp_path: Path) -> Iterator[RunningBroker]:
    """A real broker on a loopback port, on each store."""
    with running_broker(tmp_path / "data", database_url=database_url) as running:
        yield running


@pytest.fixture
def sqlite_broker(tmp_path: Path) -> Iterator[RunningBroker]:
    """A real broker on its embedded default store (SQLite)."""
    with running_broker(tmp_path / "data") as running:
        yield running
