"""Alembic environment. Run through ``valetkey.store.db.migrate`` (never alembic.ini)."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from valetkey.store.tables import Base

config = context.config


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is None:  # pragma: no cover - only reached by a misuse of alembic's own CLI
    raise RuntimeError("run migrations with `valetkey migrate`, not with alembic directly")
run(connection)
