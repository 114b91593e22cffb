"""Work done next to the data directory rather than over HTTP: the database check before
``serve``, and key-encryption-key rotation (``valetkey keys rotate``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select, text
from sqlalchemy.engine.url import make_url
from sqlalchemy.exc import SQLAlchemyError

from valetkey.cli.errors import CliError, DatabaseUnreachable
from valetkey.core.audit import AuditEvent, AuditLog
from valetkey.core.clock import Clock, SystemClock
from valetkey.crypto import KeyRing
from valetkey.server.settings import Settings
from valetkey.services.keys import KeysService
from valetkey.store import tables as t
from valetkey.store.db import Database
from valetkey.store.keys import KeyRepository
from valetkey.store.repo import Repository

__all__ = ["RotationReport", "check_database", "rotate_keys"]


def _describe(exc: Exception) -> str:
    """The driver's exception type only: its message may echo the URL."""
    orig = getattr(exc, "orig", None)
    return type(orig or exc).__name__


def _sqlite_path(db: Database) -> Path | None:
    if db.dialect != "sqlite":
        return None
    name = make_url(db.url).database
    return Path(name) if name else None


async def check_database(settings: Settings) -> None:
    """Refuse, with a clean error, a database that cannot be reached (before uvicorn starts)."""
    db = Database(settings.resolved_database_url)
    try:
        path = _sqlite_path(db)
        if path is not None and not path.parent.is_dir():
            if settings.database_url is None:
                return  # the broker creates its own data directory
            raise DatabaseUnreachable(
                f"the SQLite file's directory {path.parent} does not exist",
                hint="Create it, or fix --database-url.",
            )
        try:
            async with db.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except (SQLAlchemyError, OSError) as exc:
            raise DatabaseUnreachable(
                f"cannot connect to the database ({_describe(exc)})",
                hint="Check --database-url / VALETKEY_DATABASE_URL: "
                "host, port, user, database name.",
            ) from exc
    finally:
        await db.close()


@dataclass
class RotationReport:
    """What ``keys rotate`` did."""

    new_kek: str
    previous: list[str]
    rewrapped: dict[str, int]
    retired: list[str]
    kept: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "activeKek": self.new_kek,
            "previousKeks": self.previous,
            "rewrapped": self.rewrapped,
            "retired": self.retired,
            "kept": self.kept,
        }


def _keyring_path(settings: Settings) -> Path:
    if settings.kek:
        raise CliError(
            "the key-encryption keys come from VALETKEY_KEK, not from a key file: "
            "`keys rotate` cannot change them",
            hint=(
                "Put a new key first in VALETKEY_KEK (new-id:KEY,old-id:OLDKEY), "
                "restart the brokers, run `valetkey keys rotate` with the same VALETKEY_KEK "
                "to re-wrap, then drop the old key."
            ),
        )
    path = settings.keys_dir / "kek.json"
    if not path.is_file():
        raise CliError(
            f"no key file at {path}",
            hint="Point --data-dir (or VALETKEY_DATA_DIR) at the broker's data directory.",
        )
    return path


async def rotate_keys(
    settings: Settings,
    *,
    clock: Clock | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> RotationReport:
    """Rotate the KEK: a new active key, every record re-wrapped under it, unused old keys retired.

    Safe while a broker serves from the same key file and database: a broker meeting a
    record wrapped by a KEK it does not know re-reads the key file.
    """
    clock = clock or SystemClock()
    path = _keyring_path(settings)
    db = Database(settings.resolved_database_url)
    try:
        sqlite = _sqlite_path(db)
        if sqlite is not None and not sqlite.is_file():
            raise DatabaseUnreachable(
                f"no database at {sqlite}",
                hint="Point --data-dir or --database-url at the broker's store.",
            )
        keyring = KeyRing.load_or_create(path, clock=clock)
        repo = Repository(db, keyring, clock)
        audit = AuditLog(repo, clock)
        keys = KeysService(KeyRepository(db, keyring))
        try:
            async with db.session() as s:
                teams = list((await s.scalars(select(t.Team.id))).all())
        except SQLAlchemyError as exc:
            raise DatabaseUnreachable(
                f"cannot read the Valetkey tables ({_describe(exc)})",
                hint="Check --database-url, and that the broker has started once against it.",
            ) from exc
        previous = keyring.kek_ids
        progress(f"key file {path}: {len(previous)} key(s), active {keyring.active_id}")
        new = keyring.rotate()
        # Running brokers look at the key file at most once per RELOAD_CHECK_SECONDS before they
        # encrypt: after this wait, nothing new is written under an old key.
        progress(f"new active key {new}; waiting for running brokers to pick it up")
        await asyncio.sleep(2 * KeyRing.RELOAD_CHECK_SECONDS)
        progress("re-wrapping records")
        done = await keys.rewrap_all()
        counts = {
            "connectors": done.connectors,
            "cachedTokens": done.cached_tokens,
            "grants": done.grants,
            "authorizations": done.authorizations,
            "jobs": done.jobs,
            "droppedCacheEntries": done.dropped_cache_entries,
        }
        progress(
            f"re-wrapped {counts['connectors']} connector secret(s), "
            f"{counts['cachedTokens']} cached token(s), {counts['grants']} grant(s), "
            f"{counts['authorizations']} pending authorization(s), {counts['jobs']} job(s); "
            f"dropped {counts['droppedCacheEntries']} unreadable cache entr(ies)"
        )
        in_use = await keys.kek_ids_in_use()
        unused = [k for k in keyring.kek_ids if k != new and k not in in_use]
        retired = keyring.retire(unused) if unused else []
        kept = sorted(k for k in keyring.kek_ids if k != new)
        progress(
            f"retired {len(retired)} old key(s)"
            + (f"; still in use: {', '.join(kept)}" if kept else "")
        )
        for team_id in teams:
            audit.record(
                AuditEvent(
                    team_id=team_id,
                    at=clock.now(),
                    actor="local:valetkey keys rotate",
                    action="keys.rotate",
                    decision="allowed",
                    reason="ok",
                    details={"activeKek": new, "retired": retired, "rewrapped": counts},
                )
            )
        await audit.flush()
        return RotationReport(new, previous, counts, retired, kept)
    finally:
        await db.close()
