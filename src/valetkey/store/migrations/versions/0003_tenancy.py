"""tenancy: (issuer, audience) owners for trust bindings; member credential expiry and last use

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 03:45:00

``trust_audiences`` gives each (issuer, audience) pair of the trust bindings one owning team.
Existing bindings are backfilled: the team of the earliest binding of a pair owns it. Bindings
of other teams on a pair owned by someone else stay in place but are never selected; the
broker warns about them at start and lists them with ``active: false``.
"""

from __future__ import annotations

import hashlib
import json

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _key(issuer: str, audience: str) -> str:
    # The same as valetkey.store.repo.trust_audience_key (kept here so the migration is frozen).
    return hashlib.sha256(json.dumps([issuer, audience]).encode()).hexdigest()


def upgrade() -> None:
    op.create_table(
        "trust_audiences",
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("issuer", sa.String(length=500), nullable=False),
        sa.Column("audience", sa.String(length=500), nullable=False),
        sa.Column("team_id", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["team_id"], ["teams.id"], name=op.f("fk_trust_audiences_team_id_teams")
        ),
        sa.PrimaryKeyConstraint("key_hash", name=op.f("pk_trust_audiences")),
    )
    with op.batch_alter_table("trust_audiences", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_trust_audiences_issuer"), ["issuer"], unique=False)
        batch_op.create_index(batch_op.f("ix_trust_audiences_team_id"), ["team_id"], unique=False)
    with op.batch_alter_table("member_credentials", schema=None) as batch_op:
        batch_op.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))

    bind = op.get_bind()
    rows = bind.execute(
        sa.text(
            "SELECT issuer, audience, team_id, created_at FROM trust_bindings "
            "ORDER BY created_at, id"
        )
    ).all()
    owners: dict[str, dict[str, object]] = {}
    for issuer, audience, team_id, created_at in rows:
        key = _key(issuer, audience)
        if key not in owners:
            owners[key] = {
                "key_hash": key,
                "issuer": issuer,
                "audience": audience,
                "team_id": team_id,
                "created_at": created_at,  # the binding's own value, as the driver read it
            }
    if owners:
        table = sa.table(
            "trust_audiences",
            sa.column("key_hash"),
            sa.column("issuer"),
            sa.column("audience"),
            sa.column("team_id"),
            sa.column("created_at"),  # untyped: written back exactly as read
        )
        op.bulk_insert(table, list(owners.values()))


def downgrade() -> None:
    with op.batch_alter_table("member_credentials", schema=None) as batch_op:
        batch_op.drop_column("last_used_at")
        batch_op.drop_column("expires_at")
    with op.batch_alter_table("trust_audiences", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_trust_audiences_team_id"))
        batch_op.drop_index(batch_op.f("ix_trust_audiences_issuer"))
    op.drop_table("trust_audiences")
