"""a user subject is (issuer, id): the issuer on grants, authorizations and the ledger

Existing rows belong to the app's own user namespace: grants get issuer "" (not NULL, so the
grants' unique key holds), authorizations and issued tokens NULL. Nothing changes for them.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("subject_issuer", sa.String(length=255), server_default="", nullable=False)
        )
        batch_op.drop_constraint("uq_grants_connector_id", type_="unique")
        batch_op.create_unique_constraint(
            "uq_grants_subject",
            [
                "connector_id",
                "project_id",
                "environment",
                "subject_type",
                "subject_id",
                "subject_issuer",
            ],
        )
    with op.batch_alter_table("authorizations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("user_issuer", sa.String(length=255), nullable=True))
    with op.batch_alter_table("issued_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("subject_issuer", sa.String(length=255), nullable=True))


def downgrade() -> None:
    # ALTER TABLE ... DROP COLUMN (SQLite >= 3.35), not a table copy: cached_tokens references
    # issued_tokens, and SQLite's foreign keys refuse dropping the referenced table.
    with op.batch_alter_table("issued_tokens", schema=None, recreate="never") as batch_op:
        batch_op.drop_column("subject_issuer")
    with op.batch_alter_table("authorizations", schema=None, recreate="never") as batch_op:
        batch_op.drop_column("user_issuer")
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.drop_constraint("uq_grants_subject", type_="unique")
        batch_op.create_unique_constraint(
            "uq_grants_connector_id",
            ["connector_id", "project_id", "environment", "subject_type", "subject_id"],
        )
        batch_op.drop_column("subject_issuer")
