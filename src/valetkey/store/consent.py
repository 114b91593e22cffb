"""Grants and pending authorizations over SQLAlchemy (``core.grants.GrantStore``, ``core.consent.ConsentStore``).

Refresh single flight: ``refresh_grant`` first UPDATEs the grant row (a no-op write). On
PostgreSQL that takes the row lock; on SQLite it takes the database write lock. Either way a
second refresher — in this process or another replica — waits until the first commits, then
reads (a new SELECT, in a transaction that began after the first one committed) the grant the
first one stored, and its refresher sees that the access token changed.

The encrypted payload also records ``obtainedAt``, when the current access token was stored,
so that ``Grant.fresh`` can cap its buffer at half the token's lifetime.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.exc import IntegrityError

from valetkey.core.clock import Clock
from valetkey.core.consent import PendingAuthorization, Status
from valetkey.core.grants import Grant, GrantScope, Refresher, merge_refreshed
from valetkey.core.models import Subject
from valetkey.crypto import KeyRing
from valetkey.errors import InvalidGrant
from valetkey.providers.base import TokenSet
from valetkey.store import tables as t
from valetkey.store.db import Database
from valetkey.store.ids import new_id


def grant_aad(grant_id: str) -> bytes:
    return f"valetkey:grant:{grant_id}".encode()


def authorization_aad(authorization_id: str) -> bytes:
    return f"valetkey:authorization:{authorization_id}".encode()


def tokens_to_json(tokens: TokenSet) -> dict[str, Any]:
    return {
        "accessToken": tokens.access_token,
        "expiresAt": None if tokens.expires_at is None else tokens.expires_at.isoformat(),
        "refreshToken": tokens.refresh_token,
        "scopes": None if tokens.scopes is None else list(tokens.scopes),
        "tokenType": tokens.token_type,
        "providerSubject": tokens.provider_subject,
        "idClaims": dict(tokens.id_claims),
    }


def tokens_from_json(data: Mapping[str, Any]) -> TokenSet:
    exp = data.get("expiresAt")
    scopes = data.get("scopes")
    return TokenSet(
        access_token=data["accessToken"],
        expires_at=None if exp is None else datetime.fromisoformat(exp),
        refresh_token=data.get("refreshToken"),
        scopes=None if scopes is None else tuple(scopes),
        token_type=data.get("tokenType", "Bearer"),
        provider_subject=data.get("providerSubject"),
        id_claims=data.get("idClaims") or {},
    )


class ConsentRepository:
    def __init__(self, db: Database, keyring: KeyRing, clock: Clock) -> None:
        self.db = db
        self.keyring = keyring
        self.clock = clock

    # -- grants -------------------------------------------------------------------------------

    def _grant(self, row: t.Grant) -> Grant:
        data = self.keyring.decrypt_json(row.payload, aad=grant_aad(row.id))
        tokens = tokens_from_json(data)
        obtained = data.get("obtainedAt")
        return Grant(
            id=row.id,
            team_id=row.team_id,
            connector_id=row.connector_id,
            project_id=row.project_id,
            environment=row.environment,
            subject=Subject(row.subject_type, row.subject_id, row.subject_issuer or None),  # type: ignore[arg-type]
            status=row.status,  # type: ignore[arg-type]
            tokens=tokens,
            version=row.version,
            source=row.source,
            failure=row.failure,
            obtained_at=row.updated_at if obtained is None else datetime.fromisoformat(obtained),
        )

    def _payload(self, grant_id: str, tokens: TokenSet, obtained_at: datetime) -> bytes:
        data = tokens_to_json(tokens)
        data["obtainedAt"] = obtained_at.isoformat()
        return self.keyring.encrypt_json(data, aad=grant_aad(grant_id))

    async def get_grant(self, scope: GrantScope) -> Grant | None:
        async with self.db.session() as s:
            row = await s.scalar(self._grant_query(scope))
            return None if row is None else self._grant(row)

    @staticmethod
    def _grant_query(scope: GrantScope) -> Any:
        return select(t.Grant).where(
            t.Grant.connector_id == scope.connector_id,
            t.Grant.project_id == scope.project_id,
            t.Grant.environment == scope.environment,
            t.Grant.subject_type == scope.subject.type,
            t.Grant.subject_id == (scope.subject.id or ""),
            t.Grant.subject_issuer == (scope.subject.issuer or ""),
        )

    async def save_grant(self, scope: GrantScope, tokens: TokenSet, *, source: str) -> Grant:
        now = self.clock.now()
        for _attempt in range(3):
            try:
                async with self.db.session.begin() as s:
                    row = await s.scalar(self._grant_query(scope))
                    if row is None:
                        row = t.Grant(
                            id=new_id("grt"),
                            team_id=scope.team_id,
                            connector_id=scope.connector_id,
                            project_id=scope.project_id,
                            environment=scope.environment,
                            subject_type=scope.subject.type,
                            subject_id=scope.subject.id or "",
                            subject_issuer=scope.subject.issuer or "",
                            version=0,
                            created_at=now,
                        )
                        s.add(row)
                    row.status = "active"
                    row.payload = self._payload(row.id, tokens, now)
                    row.scopes = None if tokens.scopes is None else list(tokens.scopes)
                    row.provider_subject = tokens.provider_subject
                    row.source = source
                    row.version = (row.version or 0) + 1
                    row.failure = None
                    row.updated_at = now
                    await s.flush()
                    return self._grant(row)
            except IntegrityError:  # created concurrently: update it instead
                continue
        raise RuntimeError("could not save the grant")

    async def refresh_grant(self, grant_id: str, refresher: Refresher) -> Grant:
        async with self.db.session() as s, s.begin():
            # The no-op write takes the lock (row lock on PostgreSQL, write lock on SQLite).
            await s.execute(update(t.Grant).where(t.Grant.id == grant_id).values(version=t.Grant.version))
            fresh = select(t.Grant).where(t.Grant.id == grant_id).execution_options(populate_existing=True)
            row = await s.scalar(fresh)
            if row is None:
                raise InvalidGrant("the grant was removed")
            current = self._grant(row)
            try:
                new = await refresher(current)
            except InvalidGrant as exc:
                row.status = "needs_consent"
                row.failure = (exc.message or "invalid_grant")[:300]
                row.updated_at = self.clock.now()
                row.version += 1
                await s.commit()
                raise
            if new is None:
                return current
            merged = merge_refreshed(current.tokens, new)
            now = self.clock.now()
            same_access = merged.access_token == current.tokens.access_token
            obtained = current.obtained_at if same_access and current.obtained_at is not None else now
            row.payload = self._payload(row.id, merged, obtained)
            row.scopes = None if merged.scopes is None else list(merged.scopes)
            row.version += 1
            row.updated_at = now
            await s.flush()
            return self._grant(row)

    async def delete_grants(
        self,
        team_id: str,
        connector_id: str,
        *,
        subject: Subject | None,
        project_id: str | None,
        environment: str | None,
    ) -> Sequence[Grant]:
        query = select(t.Grant).where(t.Grant.team_id == team_id, t.Grant.connector_id == connector_id)
        if subject is not None:
            query = query.where(
                t.Grant.subject_type == subject.type,
                t.Grant.subject_id == (subject.id or ""),
                t.Grant.subject_issuer == (subject.issuer or ""),
            )
        if project_id is not None:
            query = query.where(t.Grant.project_id == project_id)
        if environment is not None:
            query = query.where(t.Grant.environment == environment)
        async with self.db.session.begin() as s:
            rows = (await s.scalars(query)).all()
            grants = [self._grant(row) for row in rows]
            if rows:
                await s.execute(delete(t.Grant).where(t.Grant.id.in_([r.id for r in rows])))
        return grants

    # -- pending authorizations -----------------------------------------------------------

    def _secret_payload(self, p: PendingAuthorization) -> dict[str, Any]:
        return {
            "codeVerifier": p.code_verifier,
            "nonce": p.nonce,
            "deviceCode": p.device_code,
            "providerUrl": p.provider_url,
            "tokens": None if p.tokens is None else tokens_to_json(p.tokens),
        }

    def _pending(self, row: t.Authorization) -> PendingAuthorization:
        secret = self.keyring.decrypt_json(row.payload, aad=authorization_aad(row.id))
        meta = secret.get("meta") or {}
        next_poll = meta.get("nextPollAt")
        return PendingAuthorization(
            id=row.id,
            team_id=row.team_id,
            connector_id=row.connector_id,
            project_id=row.project_id,
            environment=row.environment,
            user_id=row.user_id,
            mode=row.mode,  # type: ignore[arg-type]
            status=row.status,  # type: ignore[arg-type]
            verifier_hash=row.verifier_hash,
            scopes=None if row.scopes is None else tuple(row.scopes),
            return_url=row.return_url,
            webhook_url=row.webhook_url,
            expires_at=row.expires_at,
            created_at=row.created_at,
            code_verifier=secret.get("codeVerifier"),
            nonce=secret.get("nonce"),
            device_code=secret.get("deviceCode"),
            provider_url=secret.get("providerUrl"),
            user_code=row.user_code,
            interval=int(meta.get("interval", 5)),
            confirm=bool(meta.get("confirm", True)),
            next_poll_at=None if next_poll is None else datetime.fromisoformat(next_poll),
            tokens=None if secret.get("tokens") is None else tokens_from_json(secret["tokens"]),
            error=row.error,
            user_issuer=row.user_issuer,
        )

    async def create_authorization(self, pending: PendingAuthorization, *, state_hash: str | None) -> None:
        payload = self._secret_payload(pending)
        payload["meta"] = {"interval": pending.interval, "confirm": pending.confirm}
        async with self.db.session.begin() as s:
            s.add(
                t.Authorization(
                    id=pending.id,
                    team_id=pending.team_id,
                    connector_id=pending.connector_id,
                    project_id=pending.project_id,
                    environment=pending.environment,
                    user_id=pending.user_id,
                    user_issuer=pending.user_issuer,
                    mode=pending.mode,
                    status=pending.status,
                    state_hash=state_hash,
                    verifier_hash=pending.verifier_hash,
                    user_code=pending.user_code,
                    scopes=None if pending.scopes is None else list(pending.scopes),
                    return_url=pending.return_url,
                    webhook_url=pending.webhook_url,
                    payload=self.keyring.encrypt_json(payload, aad=authorization_aad(pending.id)),
                    error=None,
                    expires_at=pending.expires_at,
                    created_at=pending.created_at,
                    completed_at=None,
                )
            )

    async def take_by_state(self, state_hash: str) -> PendingAuthorization | None:
        async with self.db.session.begin() as s:
            result = await s.execute(
                update(t.Authorization)
                .where(t.Authorization.state_hash == state_hash, t.Authorization.status == "pending")
                .values(status="exchanging")
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                return None
            row = await s.scalar(select(t.Authorization).where(t.Authorization.state_hash == state_hash))
            return None if row is None else self._pending(row)

    async def get_authorization(self, authorization_id: str) -> PendingAuthorization | None:
        async with self.db.session() as s:
            row = await s.get(t.Authorization, authorization_id)
            return None if row is None else self._pending(row)

    async def stale_authorizations(
        self, now: datetime, *, confirm_grace: timedelta, limit: int = 200
    ) -> Sequence[PendingAuthorization]:
        async with self.db.session() as s:
            rows = (
                await s.scalars(
                    select(t.Authorization)
                    .where(
                        or_(
                            and_(t.Authorization.status == "pending", t.Authorization.expires_at <= now),
                            and_(
                                t.Authorization.status == "confirming",
                                t.Authorization.expires_at <= now - confirm_grace,
                            ),
                        )
                    )
                    .order_by(t.Authorization.expires_at)
                    .limit(limit)
                )
            ).all()
            return [self._pending(row) for row in rows]

    async def by_user_code(self, user_code: str) -> PendingAuthorization | None:
        async with self.db.session() as s:
            row = await s.scalar(select(t.Authorization).where(t.Authorization.user_code == user_code))
            return None if row is None else self._pending(row)

    async def latest_device_authorization(
        self, connector_id: str, project_id: str, environment: str, user_id: str, issuer: str | None = None
    ) -> PendingAuthorization | None:
        async with self.db.session() as s:
            row = await s.scalar(
                select(t.Authorization)
                .where(
                    t.Authorization.connector_id == connector_id,
                    t.Authorization.project_id == project_id,
                    t.Authorization.environment == environment,
                    t.Authorization.user_id == user_id,
                    _issuer_is(issuer),
                    t.Authorization.mode == "device",
                )
                .order_by(t.Authorization.created_at.desc())
                .limit(1)
            )
            return None if row is None else self._pending(row)

    async def update_authorization(
        self,
        authorization_id: str,
        *,
        expect: Sequence[Status] | None = None,
        due_by: datetime | None = None,
        **changes: Any,
    ) -> bool:
        async with self.db.session.begin() as s:
            # A no-op write first: it locks the row (PostgreSQL) or the database (SQLite), so the
            # checks below and the change are one atomic compare-and-set across replicas.
            await s.execute(
                update(t.Authorization)
                .where(t.Authorization.id == authorization_id)
                .values(status=t.Authorization.status)
            )
            query = select(t.Authorization).where(t.Authorization.id == authorization_id)
            row = await s.scalar(query.execution_options(populate_existing=True))
            if row is None or (expect is not None and row.status not in expect):
                return False
            current = self._pending(row)
            if due_by is not None and current.next_poll_at is not None and current.next_poll_at > due_by:
                return False  # another request polled the provider within the interval
            secret = self._secret_payload(current)
            meta: dict[str, Any] = {"interval": current.interval, "confirm": current.confirm}
            if current.next_poll_at is not None:
                meta["nextPollAt"] = current.next_poll_at.isoformat()
            for key, value in changes.items():
                if key == "status":
                    row.status = value
                elif key == "error":
                    row.error = None if value is None else str(value)[:300]
                elif key == "completed_at":
                    row.completed_at = value
                elif key == "tokens":
                    secret["tokens"] = None if value is None else tokens_to_json(value)
                elif key == "interval":
                    meta["interval"] = int(value)
                elif key == "next_poll_at":
                    meta["nextPollAt"] = value.isoformat()
                else:
                    raise ValueError(f"unknown authorization field {key}")
            if row.status in ("completed", "failed", "denied", "expired"):
                secret.update(codeVerifier=None, nonce=None, deviceCode=None, providerUrl=None)
            secret["meta"] = meta
            row.payload = self.keyring.encrypt_json(secret, aad=authorization_aad(row.id))
            return True

    async def webhook_for(
        self, connector_id: str, project_id: str, environment: str, user_id: str, issuer: str | None = None
    ) -> str | None:
        """The webhook the app gave when it last started consent for this user, if any."""
        async with self.db.session() as s:
            url: str | None = await s.scalar(
                select(t.Authorization.webhook_url)
                .where(
                    t.Authorization.connector_id == connector_id,
                    t.Authorization.project_id == project_id,
                    t.Authorization.environment == environment,
                    t.Authorization.user_id == user_id,
                    _issuer_is(issuer),
                    t.Authorization.webhook_url.is_not(None),
                )
                .order_by(t.Authorization.created_at.desc())
                .limit(1)
            )
        return url


def _issuer_is(issuer: str | None) -> Any:
    """An authorization's user issuer is ``issuer`` (NULL: the app's own users)."""
    column = t.Authorization.user_issuer
    return column.is_(None) if issuer is None else column == issuer
