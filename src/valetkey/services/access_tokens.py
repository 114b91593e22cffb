"""Access tokens: long-lived ``vk_at_…`` credentials that act for one project environment."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from valetkey.core.models import Member
from valetkey.core.ports import Invalidation
from valetkey.errors import InvalidRequest, NotFound
from valetkey.identity.access_tokens import new_access_token
from valetkey.services._common import Service, require
from valetkey.store import tables as t
from valetkey.store.ids import new_id

MAX_ACCESS_TOKEN_TTL = 366 * 24 * 3600


@dataclass(frozen=True, slots=True)
class AccessTokenRecord:
    id: str
    name: str
    project: str
    environment: str
    user_id: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class AccessTokenIssued:
    """A new access token: ``token`` is shown once."""

    id: str
    name: str
    project: str
    environment: str
    user_id: str | None
    expires_at: datetime | None
    token: str = field(repr=False)


class AccessTokensService(Service):
    async def create_access_token(
        self,
        actor: Member,
        project: str,
        *,
        environment: str,
        name: str | None = None,
        user_id: str | None = None,
        ttl_seconds: int | None = None,
    ) -> AccessTokenIssued:
        require(actor)
        prj = await self._project(actor.team_id, project)
        await self._check_environments(prj.id, project, [environment])
        if ttl_seconds is not None and (
            isinstance(ttl_seconds, bool)
            or not isinstance(ttl_seconds, int)
            or not 60 <= ttl_seconds <= MAX_ACCESS_TOKEN_TTL
        ):
            raise InvalidRequest(
                f"expiresInSeconds must be an integer from 60 to {MAX_ACCESS_TOKEN_TTL}",
                field="expiresInSeconds",
            )
        if user_id is not None and (not isinstance(user_id, str) or not 0 < len(user_id) <= 200):
            raise InvalidRequest("userId must be a string of 1-200 characters", field="userId")
        token, digest = new_access_token()
        now = self._clock.now()
        token_id = new_id("at")
        label = (name or f"{project}-{environment}")[:200]
        expires = None if ttl_seconds is None else now + timedelta(seconds=ttl_seconds)
        await self._store.add_access_token(
            t.AccessToken(
                id=token_id,
                team_id=actor.team_id,
                project_id=prj.id,
                environment=environment,
                name=label,
                token_hash=digest,
                user_id=user_id,
                created_at=now,
                expires_at=expires,
                revoked_at=None,
            )
        )
        self._audit(
            actor, "access_token.create", project_id=prj.id, environment=environment, token=token_id
        )
        return AccessTokenIssued(token_id, label, project, environment, user_id, expires, token)

    async def list_access_tokens(
        self, actor: Member, project: str | None = None
    ) -> list[AccessTokenRecord]:
        project_id = None if not project else (await self._project(actor.team_id, project)).id
        return [
            AccessTokenRecord(
                id=r.id,
                name=r.name,
                project=slug,
                environment=r.environment,
                user_id=r.user_id,
                created_at=r.created_at,
                expires_at=r.expires_at,
                revoked_at=r.revoked_at,
            )
            for r, slug in await self._store.access_tokens(actor.team_id, project_id)
        ]

    async def revoke_access_token(self, actor: Member, token_id: str) -> str:
        """Revoke an access token at once on every replica; returns its id."""
        require(actor)
        digest = await self._store.revoke_access_token(actor.team_id, token_id, self._clock.now())
        if digest is None:
            raise NotFound(f"no access token {token_id}")
        self._audit(actor, "access_token.revoke", token=token_id)
        await self._bus.publish(Invalidation(kind="identity", token_hash=digest))
        return token_id
