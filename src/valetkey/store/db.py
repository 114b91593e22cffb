"""Engines, sessions and migrations for the two supported stores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy.engine import Connection
from sqlalchemy.engine.url import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from valetkey.errors import InvalidRequest
from valetkey.private_paths import ensure_private_file, tighten

MIGRATIONS = Path(__file__).parent / "migrations"
#: Any 64-bit number unique to Valetkey: serializes migrations across replicas starting together.
_MIGRATION_LOCK = 0x76616C65746B6579


def normalize_url(url: str) -> str:
    """Map the URLs people write to the async drivers Valetkey uses.

    ``postgresql://`` and ``postgres://`` become ``postgresql+asyncpg://``; ``sqlite:///path``
    becomes ``sqlite+aiosqlite:///path``. Anything else is refused.
    """
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise InvalidRequest("the database URL is not a valid URL") from exc
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise InvalidRequest("SQLite needs a file path: sqlite:///path/to/valetkey.db")
        return parsed.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)
    raise InvalidRequest(
        f"unsupported database {backend!r}: use postgresql://… or sqlite:///path",
        field="database_url",
    )


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


class Database:
    """One engine and its session factory."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = normalize_url(url)
        kwargs: dict[str, Any] = {}
        if self.url.startswith("postgresql"):
            kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)
        # A failed statement's message never carries its parameters (secrets, tokens, hashes):
        # tracebacks of 500s are logged, and SQLAlchemy would print them there.
        self.engine: AsyncEngine = create_async_engine(self.url, hide_parameters=True, **kwargs)
        self.dialect = self.engine.dialect.name
        if self.dialect == "sqlite":
            private_sqlite_files(Path(str(make_url(self.url).database)))
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self.session = async_sessionmaker(self.engine, expire_on_commit=False)

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    async def migrate(self) -> None:
        """Apply every pending Alembic migration (serialized across replicas on PostgreSQL)."""
        async with self.engine.begin() as conn:
            if self.is_postgres:
                await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
            await conn.run_sync(_upgrade)

    async def close(self) -> None:
        await self.engine.dispose()

    def session_factory(self) -> async_sessionmaker[AsyncSession]:
        return self.session


#: Files SQLite keeps next to the database; it creates them with the database file's mode.
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


def private_sqlite_files(path: Path) -> None:
    """Create the SQLite database file 0600 before SQLite does (its WAL and SHM files then get
    the same mode), and tighten any existing database, WAL, SHM or journal file to 0600."""
    if not path.parent.is_dir():
        return  # SQLite reports the missing directory when it connects
    ensure_private_file(path)
    for suffix in SQLITE_COMPANIONS:
        companion = path.with_name(path.name + suffix)
        if companion.exists():
            tighten(companion, 0o600)


def _upgrade(connection: Connection) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
