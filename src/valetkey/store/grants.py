"""Grants over SQLAlchemy (``core.ports.GrantStore``): saved, refreshed once, deleted.

Refresh single flight without a transaction across the provider call (``refresh_grant``):

1. read the grant; if ``needed`` says another refresh already did the work, return it;
2. claim it: ``UPDATE grants SET refresh_claim=<new id>, claim_expires_at=now+claim`` where the
   version and the claim are still those just read (none, or one that has expired) — a short
   transaction, committed before anything else;
3. call the provider holding no transaction (at most ``refresh_seconds``);
4. store the result: ``UPDATE … SET payload, version=version+1, refresh_claim=NULL`` where the
   version and the claim are still ours (compare-and-set). A refused refresh (``invalid_grant``)
   marks the grant ``needs_consent`` the same way; any other failure only releases the claim.

A request that finds the grant claimed waits for its version or claim to change: it polls
three columns with backoff (20 ms doubling to 500 ms), and a commit in this process wakes it at
once. So the provider sees one refresh per claim, whatever the number of requests and replicas,
and no write lock (SQLite) or row lock (PostgreSQL) is held while it answers. A claim whose
holder died expires after ``refresh_seconds + CLAIM_MARGIN``; a waiter then takes it over.

The encrypted payload also records ``obtainedAt``, when the current access token was stored,
so that ``Grant.fresh`` can cap its buffer at half the token's lifetime.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from dataclasses import replace as dataclass_replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import IntegrityError

from valetkey.core.clock import Clock
from valetkey.core.gate import DEFAULT_TIMEOUT_SECONDS, DEFAULT_WAIT_SECONDS
from valetkey.core.grants import Grant, GrantScope, Refresher, RefreshNeeded, merge_refreshed
from valetkey.core.models import Subject
from valetkey.core.providers import TokenSet
from valetkey.crypto import KeyRing
from valetkey.errors import InvalidGrant, ProviderBusy, ProviderTimeout
from valetkey.store import tables as t
from valetkey.store.db import Database
from valetkey.store.ids import new_id

log = logging.getLogger("valetkey.store.grants")

#: A refresh claim outlives the longest a claimed refresh may run by this much.
CLAIM_MARGIN = timedelta(seconds=3)
#: Polling a grant another request is refreshing: the first delay and the longest.
_POLL_FIRST, _POLL_MAX = 0.02, 0.5


@dataclass(slots=True)
class _Wakeup:
    """Wakes this process's waiters on one grant when a refresh here stores or gives up."""

    event: asyncio.Event
    waiters: int = 0


def grant_aad(grant_id: str) -> bytes:
    return f"valetkey:grant:{grant_id}".encode()



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


class GrantRepository:
    def __init__(
        self,
        db: Database,
        keyring: KeyRing,
        clock: Clock,
        *,
        refresh_seconds: float = DEFAULT_WAIT_SECONDS + DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self.db = db
        self.keyring = keyring
        self.clock = clock
        #: The longest a claimed refresh may run (the provider gate's wait plus its deadline).
        self.refresh_seconds = refresh_seconds
        self._wakeups: dict[str, _Wakeup] = {}

    @property
    def claim_seconds(self) -> float:
        """How long a refresh claim lasts: after that, another request may take it over."""
        return self.refresh_seconds + CLAIM_MARGIN.total_seconds()

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

    @staticmethod
    def _forget_minted(scope: GrantScope) -> Any:
        """Drop the stored mint cache of every token issued for this grant's scope.

        A new grant (a consent again, possibly with another provider account, or an import)
        replaces the old one: a cached token of the old grant must not be served on. The
        in-memory caches are dropped by the "tokens" invalidation the use case publishes.
        """
        issued = t.IssuedToken
        issuer = scope.subject.issuer or ""
        same_issuer = (
            or_(issued.subject_issuer.is_(None), issued.subject_issuer == "")
            if not issuer
            else issued.subject_issuer == issuer
        )
        of_scope = select(issued.id).where(
            issued.connector_id == scope.connector_id,
            issued.project_id == scope.project_id,
            issued.environment == scope.environment,
            issued.subject_type == scope.subject.type,
            issued.subject_id == (scope.subject.id or ""),
            same_issuer,
        )
        return delete(t.CachedToken).where(t.CachedToken.issued_token_id.in_(of_scope))

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
                    # A refresh in flight for the grant this replaces stores nothing (its CAS fails).
                    row.refresh_claim = None
                    row.claim_expires_at = None
                    row.updated_at = now
                    await s.execute(self._forget_minted(scope))
                    await s.flush()
                    return self._grant(row)
            except IntegrityError:  # created concurrently: update it instead
                continue
        raise RuntimeError("could not save the grant")

    async def refresh_grant(
        self, grant_id: str, refresher: Refresher, *, needed: RefreshNeeded | None = None
    ) -> Grant:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.claim_seconds + CLAIM_MARGIN.total_seconds()
        while True:
            current, claim, claim_until = await self._read_grant(grant_id)
            if needed is not None and not needed(current):
                return current
            if claim is None or claim_until is None or claim_until <= self.clock.now():
                mine = await self._claim(grant_id, current.version, claim)
                if mine is not None:
                    done = await self._refresh_claimed(grant_id, mine, current, refresher)
                    if done is not None:
                        return done
                continue  # another request claimed or changed it first: read it again
            await self._wait_for_change(grant_id, current.version, claim, claim_until, give_up)

    async def _read_grant(self, grant_id: str) -> tuple[Grant, str | None, datetime | None]:
        async with self.db.session() as s:
            row = await s.get(t.Grant, grant_id, populate_existing=True)
            if row is None:
                raise InvalidGrant("the grant was removed")
            return self._grant(row), row.refresh_claim, row.claim_expires_at

    async def _claim(self, grant_id: str, version: int, seen: str | None) -> str | None:
        """Claim the refresh if the grant is still at ``version`` with claim ``seen``; the claim id."""
        mine = new_id("clm")
        until = self.clock.now() + timedelta(seconds=self.claim_seconds)
        same_claim = t.Grant.refresh_claim.is_(None) if seen is None else t.Grant.refresh_claim == seen
        async with self.db.session.begin() as s:
            result = await s.execute(
                update(t.Grant)
                .where(t.Grant.id == grant_id, t.Grant.version == version, same_claim)
                .values(refresh_claim=mine, claim_expires_at=until)
            )
        if seen is not None and result.rowcount == 1:  # type: ignore[attr-defined]
            log.warning("took over an expired refresh claim on grant %s", grant_id)
        return mine if result.rowcount == 1 else None  # type: ignore[attr-defined]

    async def _refresh_claimed(
        self, grant_id: str, claim: str, current: Grant, refresher: Refresher
    ) -> Grant | None:
        """The grant as stored after the refresh; None if it changed under the claim meanwhile."""
        # Bounded so that the claim always outlives the work done under it.
        guard = asyncio.timeout(self.refresh_seconds + 1)
        try:
            async with guard:
                new = await refresher(current)
        except InvalidGrant as exc:
            await self._settle(
                grant_id,
                claim,
                current.version,
                status="needs_consent",
                failure=(exc.message or "invalid_grant")[:300],
                updated_at=self.clock.now(),
                version=current.version + 1,
            )
            raise
        except asyncio.CancelledError:
            raise  # no awaiting here: the claim expires on its own
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await self._settle(grant_id, claim, current.version)
            if isinstance(exc, TimeoutError) and guard.expired():
                raise ProviderTimeout("the refresh did not finish in time", error="timeout") from None
            raise
        if new is None:
            await self._settle(grant_id, claim, current.version)
            return current
        merged = merge_refreshed(current.tokens, new)
        now = self.clock.now()
        same_access = merged.access_token == current.tokens.access_token
        obtained = current.obtained_at if same_access and current.obtained_at is not None else now
        stored = await self._settle(
            grant_id,
            claim,
            current.version,
            payload=self._payload(grant_id, merged, obtained),
            scopes=None if merged.scopes is None else list(merged.scopes),
            version=current.version + 1,
            updated_at=now,
        )
        if not stored:
            # A new consent replaced the grant, or (the claim outlived) another request took the
            # claim over: what is stored now wins; the caller reads it again.
            log.warning("grant %s changed during its refresh; the refresh's result was dropped", grant_id)
            return None
        return dataclass_replace(
            current, tokens=merged, version=current.version + 1, obtained_at=obtained
        )

    async def _settle(self, grant_id: str, claim: str, claimed: int, **values: Any) -> bool:
        """Apply ``values`` and release the claim, if the claim and the version ``claimed`` are ours."""
        try:
            async with self.db.session.begin() as s:
                result = await s.execute(
                    update(t.Grant)
                    .where(
                        t.Grant.id == grant_id,
                        t.Grant.refresh_claim == claim,
                        t.Grant.version == claimed,
                    )
                    .values(refresh_claim=None, claim_expires_at=None, **values)
                )
            return bool(result.rowcount == 1)  # type: ignore[attr-defined]
        finally:
            wakeup = self._wakeups.pop(grant_id, None)
            if wakeup is not None:
                wakeup.event.set()

    async def _wait_for_change(
        self, grant_id: str, version: int, claim: str, claim_until: datetime, give_up: float
    ) -> None:
        """Return once the grant's version or claim changed, or its claim expired."""
        loop = asyncio.get_running_loop()
        delay = _POLL_FIRST
        query = select(t.Grant.version, t.Grant.refresh_claim).where(t.Grant.id == grant_id)
        while True:
            if loop.time() >= give_up:
                raise ProviderBusy(
                    "another request has been refreshing this grant for too long; retry shortly",
                    retryAfterSeconds=1,
                )
            wakeup = self._wakeups.get(grant_id)
            if wakeup is None:
                wakeup = self._wakeups[grant_id] = _Wakeup(asyncio.Event())
            wakeup.waiters += 1
            try:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await wakeup.event.wait()
            finally:
                wakeup.waiters -= 1
                if wakeup.waiters == 0 and self._wakeups.get(grant_id) is wakeup:
                    del self._wakeups[grant_id]
            delay = min(delay * 2, _POLL_MAX)
            async with self.db.session() as s:
                state = (await s.execute(query)).one_or_none()
            if state is None or state[0] != version or state[1] != claim:
                return
            if claim_until <= self.clock.now():
                return

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
