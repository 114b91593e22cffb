"""SQLAlchemy 2 table definitions. One schema for SQLite (embedded default) and PostgreSQL.

Column widths for values that come from requests are the constants of ``valetkey.core.limits``,
the same ones the API checks at the edge: a value the edge accepts fits its column.

Secret-bearing columns are ``LargeBinary`` envelopes from ``valetkey.crypto``; the
only plaintext about a secret the database ever holds is a SHA-256 hash of a
random token (access tokens, member credentials, issued provider tokens).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from valetkey.core.limits import (
    ACTION,
    ACTOR,
    AUDIENCE,
    AUDIT_SUBJECT,
    DECISION,
    ID,
    ISSUER,
    NAME,
    REASON,
    SLUG,
    SUBJECT_ID,
    UID,
    UID_PART,
)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both stores (SQLite keeps no zone of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class Team(Base):
    __tablename__ = "teams"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    slug: Mapped[str] = mapped_column(String(SLUG), unique=True)
    name: Mapped[str] = mapped_column(String(NAME))
    created_at: Mapped[datetime]


class Member(Base):
    __tablename__ = "members"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id"), index=True)
    name: Mapped[str] = mapped_column(String(NAME))
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    __table_args__ = (UniqueConstraint("team_id", "name"),)


class MemberCredential(Base):
    """A management credential (``vk_pt_…``). Stored as a SHA-256 hash, shown once."""

    __tablename__ = "member_credentials"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    member_id: Mapped[str] = mapped_column(ForeignKey("members.id"), index=True)
    name: Mapped[str] = mapped_column(String(NAME))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    #: None: no expiry.
    expires_at: Mapped[datetime | None]
    #: Written at most once a minute per credential (``Management.authenticate``).
    last_used_at: Mapped[datetime | None]


class Project(Base):
    __tablename__ = "projects"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id"), index=True)
    slug: Mapped[str] = mapped_column(String(SLUG))
    name: Mapped[str] = mapped_column(String(NAME))
    created_at: Mapped[datetime]
    __table_args__ = (UniqueConstraint("team_id", "slug"),)


class Environment(Base):
    __tablename__ = "environments"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    slug: Mapped[str] = mapped_column(String(SLUG))
    created_at: Mapped[datetime]
    __table_args__ = (UniqueConstraint("project_id", "slug"),)


class Connector(Base):
    __tablename__ = "connectors"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id"), index=True)
    uid: Mapped[str] = mapped_column(String(UID))
    service: Mapped[str] = mapped_column(String(UID_PART))
    name: Mapped[str] = mapped_column(String(UID_PART))
    type: Mapped[str] = mapped_column(String(UID_PART))
    config: Mapped[dict[str, Any]]
    #: Envelope-encrypted JSON object of the provider's secret fields.
    secrets: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    deleted_at: Mapped[datetime | None]
    __table_args__ = (
        # One live connector per uid and team; soft-deleted ones keep their history.
        Index(
            "uq_connectors_live_uid",
            "team_id",
            "uid",
            unique=True,
            sqlite_where=text("deleted_at IS NULL"),
            postgresql_where=text("deleted_at IS NULL"),
        ),
    )


class ProjectLink(Base):
    __tablename__ = "project_links"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    connector_id: Mapped[str] = mapped_column(ForeignKey("connectors.id"), index=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    environments: Mapped[list[Any]]
    policy: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    __table_args__ = (UniqueConstraint("connector_id", "project_id"),)


class TrustBinding(Base):
    __tablename__ = "trust_bindings"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id"), index=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    environment: Mapped[str] = mapped_column(String(SLUG))
    issuer: Mapped[str] = mapped_column(String(ISSUER), index=True)
    audience: Mapped[str] = mapped_column(String(AUDIENCE))
    conditions: Mapped[dict[str, Any]]
    algorithms: Mapped[list[Any]]
    created_at: Mapped[datetime]


class TrustAudience(Base):
    """Which team owns an (issuer, audience) pair. A token is matched only against the bindings of
    the team that owns its (iss, aud): one team's binding never captures another team's tokens.

    Keyed by a SHA-256 of the pair (``trust_audience_key``), so the unique key that decides two
    concurrent claims stays small whatever the pair's length.
    """

    __tablename__ = "trust_audiences"
    key_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    issuer: Mapped[str] = mapped_column(String(500), index=True)
    audience: Mapped[str] = mapped_column(String(500))
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id"), index=True)
    created_at: Mapped[datetime]


class AccessToken(Base):
    """A project's workload credential (``vk_at_…``). Stored as a SHA-256 hash, shown once."""

    __tablename__ = "access_tokens"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id"), index=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    environment: Mapped[str] = mapped_column(String(SLUG))
    name: Mapped[str] = mapped_column(String(NAME))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[str | None] = mapped_column(String(SUBJECT_ID))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class IssuedToken(Base):
    """The ledger: one row per credential minted. Holds a hash of the token, never the token."""

    __tablename__ = "issued_tokens"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id"), index=True)
    connector_id: Mapped[str] = mapped_column(ForeignKey("connectors.id"), index=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    environment: Mapped[str] = mapped_column(String(40))
    subject_type: Mapped[str] = mapped_column(String(16))
    subject_id: Mapped[str | None] = mapped_column(String(200))
    #: A user subject's issuer (NULL: the app's own users, or not a user).
    subject_issuer: Mapped[str | None] = mapped_column(String(255))
    scopes: Mapped[list[Any] | None] = mapped_column(JSON)
    installation_id: Mapped[str | None] = mapped_column(String(200))
    token_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    #: How revocation went at the provider: "revoked", "skipped", "failed: …".
    revocation: Mapped[str | None] = mapped_column(String(300))


class CachedToken(Base):
    """A minted provider token shared by identical requests, encrypted, until close to expiry."""

    __tablename__ = "cached_tokens"
    key_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    connector_id: Mapped[str] = mapped_column(ForeignKey("connectors.id"), index=True)
    issued_token_id: Mapped[str] = mapped_column(ForeignKey("issued_tokens.id"), index=True)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    expires_at: Mapped[datetime | None]


class AuditEvent(Base):
    """Append-only. Each row carries the hash of the previous row of its chain (tamper evidence)."""

    __tablename__ = "audit_events"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    team_id: Mapped[str] = mapped_column(String(ID), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    actor: Mapped[str] = mapped_column(String(ACTOR))
    action: Mapped[str] = mapped_column(String(ACTION))
    decision: Mapped[str] = mapped_column(String(DECISION))
    reason: Mapped[str] = mapped_column(String(REASON))
    connector_uid: Mapped[str | None] = mapped_column(String(UID), index=True)
    project_id: Mapped[str | None] = mapped_column(String(ID), index=True)
    environment: Mapped[str | None] = mapped_column(String(SLUG))
    subject: Mapped[str | None] = mapped_column(String(AUDIT_SUBJECT))
    details: Mapped[dict[str, Any]]
    chain: Mapped[str] = mapped_column(String(40))
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    __table_args__ = (UniqueConstraint("chain", "seq"),)


class UsageCounter(Base):
    __tablename__ = "usage_counters"
    team_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    month: Mapped[str] = mapped_column(String(7), primary_key=True)  # YYYY-MM
    metric: Mapped[str] = mapped_column(String(64), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))


class Setting(Base):
    """Small broker-wide values (schema facts, the bootstrap marker)."""

    __tablename__ = "settings"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Grant(Base):
    """What the broker keeps to mint a subject's tokens later: a refresh token, an imported token.

    Scoped to (connector, project, environment, subject): consent given in one environment is
    never used from another. ``payload`` is the encrypted token set; ``version`` increases on
    every refresh, so a replica can tell that another one refreshed first.

    ``refresh_claim`` (a random id) and ``claim_expires_at`` are set, in a short transaction of
    their own, by the one request refreshing the grant at the provider; the result is stored
    only if the claim and ``version`` are still the ones it claimed (compare-and-set). A claim
    whose holder died is taken over once it has expired.
    """

    __tablename__ = "grants"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id"), index=True)
    connector_id: Mapped[str] = mapped_column(ForeignKey("connectors.id"), index=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    environment: Mapped[str] = mapped_column(String(40))
    subject_type: Mapped[str] = mapped_column(String(16))
    subject_id: Mapped[str] = mapped_column(String(200))
    #: A user subject's issuer; "" for the app's own users (not NULL, so that the unique key
    #: below holds: NULLs are distinct in a unique constraint).
    subject_issuer: Mapped[str] = mapped_column(String(255), server_default="")
    #: "active" | "needs_consent"
    status: Mapped[str] = mapped_column(String(16))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    scopes: Mapped[list[Any] | None] = mapped_column(JSON)
    provider_subject: Mapped[str | None] = mapped_column(String(300))
    source: Mapped[str] = mapped_column(String(16))  # "consent" | "import"
    version: Mapped[int] = mapped_column(Integer)
    failure: Mapped[str | None] = mapped_column(String(300))
    refresh_claim: Mapped[str | None] = mapped_column(String(40))
    claim_expires_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    __table_args__ = (
        UniqueConstraint(
            "connector_id",
            "project_id",
            "environment",
            "subject_type",
            "subject_id",
            "subject_issuer",
            name="uq_grants_subject",
        ),
    )


class Authorization(Base):
    """A consent in progress. ``state`` and the app's ``verifier`` are kept only as hashes;
    the PKCE verifier, nonce and provider device code are encrypted; all are single-use."""

    __tablename__ = "authorizations"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id"), index=True)
    connector_id: Mapped[str] = mapped_column(ForeignKey("connectors.id"), index=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    environment: Mapped[str] = mapped_column(String(40))
    user_id: Mapped[str] = mapped_column(String(200))
    #: Who issued ``user_id`` (NULL: the app's own users).
    user_issuer: Mapped[str | None] = mapped_column(String(255))
    #: "callback" | "webhook" | "device"
    mode: Mapped[str] = mapped_column(String(16))
    #: "pending" | "confirming" | "completed" | "failed" | "denied" | "expired"
    status: Mapped[str] = mapped_column(String(16))
    state_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    verifier_hash: Mapped[str] = mapped_column(String(64))
    user_code: Mapped[str | None] = mapped_column(String(16), unique=True)
    scopes: Mapped[list[Any] | None] = mapped_column(JSON)
    return_url: Mapped[str | None] = mapped_column(Text)
    webhook_url: Mapped[str | None] = mapped_column(Text)
    #: Encrypted: PKCE verifier, nonce, provider device code, and the token set awaiting confirmation.
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    error: Mapped[str | None] = mapped_column(String(300))
    expires_at: Mapped[datetime]
    created_at: Mapped[datetime]
    completed_at: Mapped[datetime | None]


class Job(Base):
    """A unit of background work (``valetkey.core.jobs``): a webhook, a maintenance round.

    ``payload`` is a sealed envelope (AAD ``valetkey:job:<id>``). A worker claims a due job by
    setting ``lease`` (a random token) and ``lease_expires_at`` and counting an attempt; only
    the lease holder records the outcome. ``dedupe_key`` (unique; NULLs are distinct) makes an
    enqueue idempotent. Dead jobs (attempts exhausted) are kept until retried.
    """

    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    #: None: the broker's own work (maintenance), listed to no team.
    team_id: Mapped[str | None] = mapped_column(String(40), index=True)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    #: "queued" | "running" | "done" | "dead"
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    max_attempts: Mapped[int] = mapped_column(Integer)
    run_at: Mapped[datetime]
    lease: Mapped[str | None] = mapped_column(String(40))
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(String(300))
    dedupe_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    __table_args__ = (Index("ix_jobs_status_run_at", "status", "run_at"),)
