"""Pending authorizations over SQLAlchemy (``core.ports.ConsentStore``): a consent in progress,
found by its state, user code or user, and moved through its states with compare-and-set.
Grants, which a finished consent makes, are in ``store.grants``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update

from valetkey.core.authorizations import Mode, PendingAuthorization, Status
from valetkey.core.clock import Clock
from valetkey.crypto import KeyRing
from valetkey.store import tables as t
from valetkey.store.db import Database
from valetkey.store.grants import grant_aad, tokens_from_json, tokens_to_json

__all__ = ["ConsentRepository", "authorization_aad", "grant_aad"]

def authorization_aad(authorization_id: str) -> bytes:
    return f"valetkey:authorization:{authorization_id}".encode()


class ConsentRepository:
    def __init__(self, db: Database, keyring: KeyRing, clock: Clock) -> None:
        self.db = db
        self.keyring = keyring
        self.clock = clock

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
        self,
        connector_id: str,
        project_id: str,
        environment: str,
        user_id: str,
        issuer: str | None = None,
        mode: Mode = "device",
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
                    t.Authorization.mode == mode,
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
