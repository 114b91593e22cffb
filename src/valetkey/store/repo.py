"""The store behind the exchange, the audit log and identity verification.

Implements ``core.ports.ExchangeStore``, ``core.audit.AuditStore`` and
``identity.verifier.IdentityStore`` over SQLAlchemy, encrypting every secret with
the key ring. Rows never leave this module: callers get domain values.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy import insert as insert_rows
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError

from valetkey.core.audit import AuditRefused, ChainedEvent
from valetkey.core.clock import Clock
from valetkey.core.models import Connector, Identity, Link, Policy, Subject, TokenRequest
from valetkey.core.ports import CachedMint, ConnectorView, RevocationTarget, RevokedSet
from valetkey.core.providers import MintedToken
from valetkey.crypto import KeyRing
from valetkey.identity.bindings import TrustBinding
from valetkey.store import tables as t
from valetkey.store.db import Database
from valetkey.store.ids import new_id

#: The ledger's ``revocation`` outcomes written in bulk (a provider's own outcome is per token).
SKIPPED_UNHELD = "skipped: the broker no longer holds this token"
SKIPPED_NO_REVOCATION = "skipped: the provider cannot revoke this credential"
PENDING = "pending: revocation at the provider is under way"
#: Ids per ``IN (...)`` list (SQLite allows 32,766 bound values; PostgreSQL 65,535).
ID_SLICE = 1_000


def _count(result: Any) -> int:
    return int(result.rowcount or 0)


def secrets_aad(connector_id: str) -> bytes:
    return f"valetkey:connector-secrets:{connector_id}".encode()


def cache_aad(key_hash: str) -> bytes:
    return f"valetkey:cached-token:{key_hash}".encode()


def trust_audience_key(issuer: str, audience: str) -> str:
    """The key of an (issuer, audience) pair in ``trust_audiences`` (unambiguous: JSON of both)."""
    return hashlib.sha256(json.dumps([issuer, audience]).encode()).hexdigest()


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def connector_from_row(row: t.Connector, keyring: KeyRing) -> Connector:
    return Connector(
        id=row.id,
        team_id=row.team_id,
        uid=row.uid,
        service=row.service,
        name=row.name,
        type=row.type,
        config=dict(row.config),
        secrets=keyring.decrypt_json(row.secrets, aad=secrets_aad(row.id)),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def link_from_row(row: t.ProjectLink) -> Link:
    return Link(
        id=row.id,
        connector_id=row.connector_id,
        project_id=row.project_id,
        environments=tuple(row.environments),
        policy=Policy.from_json(row.policy),
    )


def _minted_to_json(minted: MintedToken) -> dict[str, Any]:
    return {
        "token": minted.token,
        "expiresAt": None if minted.expires_at is None else minted.expires_at.isoformat(),
        "scopes": None if minted.scopes is None else list(minted.scopes),
        "tokenType": minted.token_type,
        "installationId": minted.installation_id,
        "metadata": dict(minted.metadata),
        "refreshToken": minted.refresh_token,
    }


def _minted_from_json(data: Mapping[str, Any]) -> MintedToken:
    expires = data.get("expiresAt")
    scopes = data.get("scopes")
    return MintedToken(
        token=data["token"],
        expires_at=None if expires is None else datetime.fromisoformat(expires),
        scopes=None if scopes is None else tuple(scopes),
        token_type=data.get("tokenType", "Bearer"),
        installation_id=data.get("installationId"),
        metadata=data.get("metadata") or {},
        refresh_token=data.get("refreshToken"),
    )


def refusal(exc: BaseException) -> str | None:
    """Why the database refused a statement's data (no value quoted), or None if ``exc`` is not that.

    A refusal is deterministic: the same rows would be refused again. It is a PostgreSQL data
    exception or integrity violation (SQLSTATE class 22 or 23: a value too long for its column,
    a NUL byte, text not in UTF-8, a constraint), SQLAlchemy's ``DataError``/``IntegrityError``
    (SQLite), a value that could not be bound (not JSON-serializable, a naive datetime), or text
    the driver cannot encode (a lone surrogate). Everything else (a connection refused or lost,
    a lock timeout, a read-only database) is an outage, not a refusal.
    """
    if isinstance(exc, UnicodeError):
        return type(exc).__name__
    if isinstance(exc, DataError | IntegrityError):
        return type(exc).__name__
    if isinstance(exc, DBAPIError):
        orig = exc.orig
        state = str(getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None) or "")
        return f"SQLSTATE {state}" if state[:2] in ("22", "23") else None
    if isinstance(exc, StatementError):  # raised while binding parameters, before the database
        cause = exc.orig
        return type(cause).__name__ if isinstance(cause, TypeError | ValueError) else None
    return None


class Repository:
    def __init__(self, db: Database, keyring: KeyRing, clock: Clock) -> None:
        self.db = db
        self.keyring = keyring
        self.clock = clock

    # -- ExchangeStore ------------------------------------------------------------------

    async def connector_view(self, team_id: str, uid: str) -> ConnectorView | None:
        async with self.db.session() as s:
            row = await s.scalar(
                select(t.Connector).where(
                    t.Connector.team_id == team_id,
                    # Addressed by uid (service/name) or by opaque id, as the Connect API allows.
                    t.Connector.uid == uid if "/" in uid else t.Connector.id == uid,
                    t.Connector.deleted_at.is_(None),
                )
            )
            if row is None:
                return None
            links = (
                await s.scalars(select(t.ProjectLink).where(t.ProjectLink.connector_id == row.id))
            ).all()
            return ConnectorView(
                connector=connector_from_row(row, self.keyring),
                links={link.project_id: link_from_row(link) for link in links},
            )

    async def load_cached(self, key_hash: str) -> CachedMint | None:
        async with self.db.session() as s:
            row = await s.get(t.CachedToken, key_hash)
            if row is None:
                return None
            issued = await s.get(t.IssuedToken, row.issued_token_id)
            if issued is None or issued.revoked_at is not None:
                return None
            data = self.keyring.decrypt_json(row.payload, aad=cache_aad(key_hash))
            return CachedMint(_minted_from_json(data), row.issued_token_id, row.expires_at)

    async def record_mint(
        self,
        *,
        identity: Identity,
        connector: Connector,
        request: TokenRequest,
        minted: MintedToken,
        key_hash: str,
        serve_until: datetime | None,
    ) -> str:
        issued_id = new_id("tok")
        now = self.clock.now()
        payload = self.keyring.encrypt_json(_minted_to_json(minted), aad=cache_aad(key_hash))
        scopes = minted.scopes if minted.scopes is not None else request.scopes
        async with self.db.session.begin() as s:
            s.add(
                t.IssuedToken(
                    id=issued_id,
                    team_id=identity.team_id,
                    connector_id=connector.id,
                    project_id=identity.project_id,
                    environment=identity.environment,
                    subject_type=request.subject.type,
                    subject_id=request.subject.id,
                    subject_issuer=request.subject.issuer,
                    scopes=None if scopes is None else list(scopes),
                    installation_id=minted.installation_id or request.installation_id,
                    token_hash=token_hash(minted.token),
                    created_at=now,
                    expires_at=minted.expires_at,
                    revoked_at=None,
                    revocation=None,
                )
            )
            await s.flush()
            # An upsert: two replicas minting the same key at once must both succeed.
            insert = pg_insert if self.db.is_postgres else sqlite_insert
            cached = {
                "connector_id": connector.id,
                "issued_token_id": issued_id,
                "payload": payload,
                "expires_at": serve_until,
            }
            await s.execute(
                insert(t.CachedToken)
                .values(key_hash=key_hash, **cached)
                .on_conflict_do_update(index_elements=["key_hash"], set_=cached)
            )
        return issued_id

    async def revoke_issued(
        self,
        team_id: str,
        connector_id: str,
        *,
        subject: Subject | None,
        project_id: str | None,
        environment: str | None,
        now: datetime,
        at_provider: bool,
    ) -> RevokedSet:
        """A few set-based statements in one transaction, whatever the number of tokens.

        The matching rows are those of ``active`` (the connector index, then the filters); the
        ones without a cache row are marked first, so the rest are the tokens the broker holds.
        """
        issued = t.IssuedToken
        active = [
            issued.team_id == team_id,
            issued.connector_id == connector_id,
            issued.revoked_at.is_(None),
            or_(issued.expires_at.is_(None), issued.expires_at > now),
        ]
        if subject is not None:
            active.append(issued.subject_type == subject.type)
            active.append(
                issued.subject_id.is_(None) if subject.id is None else issued.subject_id == subject.id
            )
            active.append(
                issued.subject_issuer.is_(None)
                if subject.issuer is None
                else issued.subject_issuer == subject.issuer
            )
        if project_id is not None:
            active.append(issued.project_id == project_id)
        if environment is not None:
            active.append(issued.environment == environment)
        held = (
            select(t.CachedToken.key_hash)
            .where(t.CachedToken.issued_token_id == issued.id)
            .exists()
        )
        targets: list[RevocationTarget] = []
        async with self.db.session.begin() as s:
            unheld = await s.execute(
                update(issued)
                .where(*active, ~held)
                .values(revoked_at=now, revocation=SKIPPED_UNHELD)
                .execution_options(synchronize_session=False)
            )
            if at_provider:
                rows = (
                    await s.execute(
                        select(
                            issued.id,
                            issued.subject_type,
                            issued.subject_id,
                            issued.subject_issuer,
                            issued.project_id,
                            issued.environment,
                            t.CachedToken.key_hash,
                            t.CachedToken.payload,
                        )
                        .join(t.CachedToken, t.CachedToken.issued_token_id == issued.id)
                        .where(*active)
                        .order_by(issued.created_at)
                    )
                ).all()
                # By id, in slices: exactly the rows read (one minted meanwhile stays active).
                ids = [row.id for row in rows]
                for start in range(0, len(ids), ID_SLICE):
                    await s.execute(
                        update(issued)
                        .where(issued.id.in_(ids[start : start + ID_SLICE]))
                        .values(revoked_at=now, revocation=PENDING)
                        .execution_options(synchronize_session=False)
                    )
                for row in rows:
                    data = self.keyring.decrypt_json(row.payload, aad=cache_aad(row.key_hash))
                    targets.append(
                        RevocationTarget(
                            issued_id=row.id,
                            subject=Subject(row.subject_type, row.subject_id, row.subject_issuer),
                            project_id=row.project_id,
                            environment=row.environment,
                            token=_minted_from_json(data),
                        )
                    )
                found = skipped = _count(unheld)
                found += len(rows)
            else:
                marked = await s.execute(
                    update(issued)
                    .where(*active)
                    .values(revoked_at=now, revocation=SKIPPED_NO_REVOCATION)
                    .execution_options(synchronize_session=False)
                )
                await s.execute(
                    delete(t.CachedToken)
                    .where(
                        t.CachedToken.connector_id == connector_id,
                        # Correlated on the ledger's primary key: one index probe per cache row
                        # (an IN subquery was planned as a nested loop of scans on PostgreSQL).
                        select(issued.id)
                        .where(issued.id == t.CachedToken.issued_token_id, issued.revoked_at == now)
                        .exists(),
                    )
                    .execution_options(synchronize_session=False)
                )
                found = skipped = _count(unheld) + _count(marked)
        return RevokedSet(found=found, skipped=skipped, targets=targets)

    async def record_revocations(self, outcomes: Mapping[str, str]) -> None:
        """One UPDATE per distinct outcome and one DELETE, per slice of ``ID_SLICE`` ids."""
        by_outcome: dict[str, list[str]] = {}
        for issued_id, outcome in outcomes.items():
            by_outcome.setdefault(outcome[:300], []).append(issued_id)
        async with self.db.session.begin() as s:
            for outcome, ids in by_outcome.items():
                for start in range(0, len(ids), ID_SLICE):
                    part = ids[start : start + ID_SLICE]
                    await s.execute(
                        update(t.IssuedToken)
                        .where(t.IssuedToken.id.in_(part))
                        .values(revocation=outcome)
                        .execution_options(synchronize_session=False)
                    )
                    await s.execute(
                        delete(t.CachedToken)
                        .where(t.CachedToken.issued_token_id.in_(part))
                        .execution_options(synchronize_session=False)
                    )

    async def purge_expired_cache(self, now: datetime) -> int:
        """Drop cache rows whose token has expired at the provider (the ledger keeps its rows).

        A row only past the broker's serving horizon (a link's max lifetime) is kept until the
        provider's expiry: revocation still needs the token to revoke it at the provider.
        """
        expired = select(t.IssuedToken.id).where(
            t.IssuedToken.expires_at.is_not(None), t.IssuedToken.expires_at < now
        )
        async with self.db.session.begin() as s:
            result = await s.execute(
                delete(t.CachedToken).where(
                    t.CachedToken.expires_at.is_not(None),
                    t.CachedToken.expires_at < now,
                    t.CachedToken.issued_token_id.in_(expired),
                )
            )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    # -- AuditStore ---------------------------------------------------------------------

    async def append_audit(self, events: Sequence[ChainedEvent]) -> None:
        """Insert ``events`` in one transaction, as Core executemany statements of at most
        100 rows: the event loop builds and binds one slice while the driver writes the previous
        one, so no single step holds the loop for long (~420 rows in one statement held it 4-8 ms).

        Values are written exactly as hashed (the audit writer bounds them to the columns first).
        A refusal of the data raises ``AuditRefused`` (see ``refusal``); anything else propagates.
        """
        table = t.Base.metadata.tables[t.AuditEvent.__tablename__]
        per_statement = 100
        try:
            async with self.db.session.begin() as s:
                for start in range(0, len(events), per_statement):
                    rows = [
                        {
                            "team_id": e.event.team_id,
                            "at": e.event.at,
                            "actor": e.event.actor,
                            "action": e.event.action,
                            "decision": e.event.decision,
                            "reason": e.event.reason,
                            "connector_uid": e.event.connector_uid,
                            "project_id": e.event.project_id,
                            "environment": e.event.environment,
                            "subject": e.event.subject,
                            "details": dict(e.event.details),
                            "chain": e.chain,
                            "seq": e.seq,
                            "prev_hash": e.prev_hash,
                            "hash": e.hash,
                        }
                        for e in events[start : start + per_statement]
                    ]
                    await s.execute(insert_rows(table), rows)
        except Exception as exc:
            what = refusal(exc)
            if what is None:
                raise
            raise AuditRefused(what) from None  # the original quotes the values: not kept

    async def add_usage(self, counts: Mapping[tuple[str, str, str], int]) -> None:
        insert = pg_insert if self.db.is_postgres else sqlite_insert
        async with self.db.session.begin() as s:
            for (team_id, month, metric), n in sorted(counts.items()):
                stmt = insert(t.UsageCounter).values(
                    team_id=team_id, month=month, metric=metric, count=n
                )
                stmt = stmt.on_conflict_do_update(
                    index_elements=["team_id", "month", "metric"],
                    set_={"count": t.UsageCounter.count + n},
                )
                await s.execute(stmt)

    # -- IdentityStore ------------------------------------------------------------------

    async def bindings_for_issuer(self, issuer: str) -> Sequence[TrustBinding]:
        """The bindings of ``issuer`` that belong to the team owning their (issuer, audience).

        A binding of any other team on an owned pair (only possible for bindings that overlapped
        before owners existed) is never returned, so it is never selected.
        """
        async with self.db.session() as s:
            rows = (
                await s.execute(
                    select(t.TrustBinding, t.Project.slug)
                    .join(t.Project, t.Project.id == t.TrustBinding.project_id)
                    .join(
                        t.TrustAudience,
                        and_(
                            t.TrustAudience.issuer == t.TrustBinding.issuer,
                            t.TrustAudience.audience == t.TrustBinding.audience,
                            t.TrustAudience.team_id == t.TrustBinding.team_id,
                        ),
                    )
                    .where(t.TrustBinding.issuer == issuer, t.TrustAudience.issuer == issuer)
                )
            ).all()
        return [binding_from_row(row, slug) for row, slug in rows]

    async def shadowed_bindings(self) -> int:
        """How many bindings are never selected: their (issuer, audience) is another team's."""
        async with self.db.session() as s:
            owned = (
                select(t.TrustAudience.key_hash)
                .where(
                    t.TrustAudience.issuer == t.TrustBinding.issuer,
                    t.TrustAudience.audience == t.TrustBinding.audience,
                    t.TrustAudience.team_id == t.TrustBinding.team_id,
                )
                .exists()
            )
            return int(
                await s.scalar(select(func.count()).select_from(t.TrustBinding).where(~owned))
                or 0
            )

    async def access_token_identity(self, token_hash_: str) -> Identity | None:
        now = self.clock.now()
        async with self.db.session() as s:
            found = (
                await s.execute(
                    select(t.AccessToken, t.Project.slug)
                    .join(t.Project, t.Project.id == t.AccessToken.project_id)
                    .where(
                        t.AccessToken.token_hash == token_hash_,
                        t.AccessToken.revoked_at.is_(None),
                        or_(t.AccessToken.expires_at.is_(None), t.AccessToken.expires_at > now),
                    )
                )
            ).first()
        if found is None:
            return None
        row, slug = found
        return Identity(
            team_id=row.team_id,
            project_id=row.project_id,
            project_slug=slug,
            environment=row.environment,
            kind="access_token",
            subject=row.id,
            expires_at=row.expires_at,
            user_id=row.user_id,
        )

    async def member_for_credential(
        self, token_hash_: str
    ) -> tuple[t.Member, t.MemberCredential] | None:
        async with self.db.session() as s:
            found = (
                await s.execute(
                    select(t.Member, t.MemberCredential)
                    .join(t.MemberCredential, t.MemberCredential.member_id == t.Member.id)
                    .where(
                        and_(
                            t.MemberCredential.token_hash == token_hash_,
                            t.MemberCredential.revoked_at.is_(None),
                        )
                    )
                )
            ).first()
        return None if found is None else (found[0], found[1])

    async def touch_credential(self, credential_id: str, now: datetime, stale: datetime) -> None:
        """Record a member credential's use, unless some replica recorded one after ``stale``."""
        async with self.db.session.begin() as s:
            await s.execute(
                update(t.MemberCredential)
                .where(
                    t.MemberCredential.id == credential_id,
                    or_(
                        t.MemberCredential.last_used_at.is_(None),
                        t.MemberCredential.last_used_at < stale,
                    ),
                )
                .values(last_used_at=now)
            )


def binding_from_row(row: t.TrustBinding, project_slug: str) -> TrustBinding:
    return TrustBinding(
        id=row.id,
        team_id=row.team_id,
        project_id=row.project_id,
        project_slug=project_slug,
        environment=row.environment,
        issuer=row.issuer,
        audience=row.audience,
        conditions=dict(row.conditions),
        algorithms=tuple(row.algorithms),
        created_at=row.created_at,
    )
