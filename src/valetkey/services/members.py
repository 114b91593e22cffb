"""Members and roles: the first team and its owner, teams, member credentials, who is calling."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from valetkey.core.models import Member, Role, check_slug
from valetkey.errors import Conflict, IdentityError, InvalidRequest, LastOwner, NotFound
from valetkey.identity.access_tokens import hash_token, new_member_token
from valetkey.identity.errors import TokenExpired
from valetkey.services._common import Service, require
from valetkey.store import tables as t
from valetkey.store.ids import new_id

MAX_MEMBER_CREDENTIAL_TTL = 2 * 366 * 24 * 3600
#: How stale a member credential's ``lastUsedAt`` may be: at most one write a minute per credential.
LAST_USED_RESOLUTION = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class Bootstrap:
    team_id: str
    owner_token: str | None = field(repr=False)  # set only on the first start


@dataclass(frozen=True, slots=True)
class MemberRecord:
    id: str
    name: str
    role: Role
    created_at: datetime
    #: The last use of any of its live credentials, to the minute.
    last_used_at: datetime | None
    #: The latest expiry of its live credentials; None when one never expires.
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class MemberCredentialIssued:
    """A new member, or a rotated credential: ``credential`` is shown once."""

    id: str
    name: str
    role: Role
    expires_at: datetime | None
    credential: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class MemberRevoked:
    id: str
    name: str


class MembersService(Service):
    async def bootstrap(self) -> Bootstrap:
        """Create the default team and its owner on first start (idempotent; safe across replicas)."""
        team = await self._store.first_team()
        if team is not None:
            return Bootstrap(team.id, None)
        team_id = new_id("team")
        token, digest = new_member_token()
        if not await self._store.create_team(
            team_id=team_id,
            slug="default",
            name="Default team",
            owner_id=new_id("mbr"),
            credential="bootstrap",
            digest=digest,
            now=self._clock.now(),
        ):  # another replica bootstrapped first
            team = await self._store.team_by_slug("default")
            if team is None:
                raise Conflict("the default team could not be created", field="team")
            return Bootstrap(team.id, None)
        return Bootstrap(team_id, token)

    async def create_team(self, slug: str, name: str | None = None) -> Bootstrap:
        """Create another team with one owner (``owner``) and return its credential, shown once.

        No route calls this yet: a broker serves its default team, and operators (and the
        tenancy tests) add teams from Python.
        """
        check_slug(slug, "team")
        team_id = new_id("team")
        token, digest = new_member_token()
        if not await self._store.create_team(
            team_id=team_id,
            slug=slug,
            name=name or slug,
            owner_id=new_id("mbr"),
            credential="initial",
            digest=digest,
            now=self._clock.now(),
        ):
            raise Conflict(f"a team named {slug} exists", field="team")
        return Bootstrap(team_id, token)

    async def authenticate(self, bearer: str) -> Member:
        """The member behind a ``vk_pt_…`` credential, read from the store on every call.

        Nothing is cached, so a revoked or expired credential is refused at once on every
        replica. The credential's last use is written at most once a minute
        (``LAST_USED_RESOLUTION``), with a conditional update that other replicas skip too.
        """
        repo = self._deps.credentials
        if not bearer.startswith("vk_pt_"):
            raise IdentityError("the management API needs a member credential (vk_pt_…)")
        found = await repo.member_for_credential(hash_token(bearer))
        if found is None:
            raise IdentityError("unknown or revoked member credential")
        member, cred = found
        now = self._clock.now()
        if cred.expires_at is not None and cred.expires_at <= now:
            raise TokenExpired(
                f"this member credential expired at {cred.expires_at.isoformat()}; "
                "ask an owner for a new one (valetkey members create), or rotate before expiry",
                expiredAt=cred.expires_at.isoformat(),
            )
        if cred.last_used_at is None or now - cred.last_used_at >= LAST_USED_RESOLUTION:
            await repo.touch_credential(cred.id, now, now - LAST_USED_RESOLUTION)
        return Member(
            team_id=member.team_id,
            member_id=member.id,
            name=member.name,
            role=Role(member.role),
            credential_id=cred.id,
        )

    async def create_member(
        self, actor: Member, name: str, role: str, *, expires_in_seconds: int | None = None
    ) -> MemberCredentialIssued:
        require(actor, owner=True)
        check_slug(name, "name")
        try:
            role_ = Role(role)
        except ValueError as exc:
            raise InvalidRequest("role must be owner, member or viewer", field="role") from exc
        now = self._clock.now()
        expires = credential_expiry(now, expires_in_seconds)
        member_id = new_id("mbr")
        token, digest = new_member_token()
        if not await self._store.create_member(
            team_id=actor.team_id,
            member_id=member_id,
            name=name,
            role=role_.value,
            digest=digest,
            now=now,
            expires=expires,
        ):
            raise Conflict(f"a member named {name} exists", field="name")
        self._audit(actor, "member.create", subject=name, role=role_.value)
        return MemberCredentialIssued(member_id, name, role_, expires, token)

    async def list_members(self, actor: Member) -> list[MemberRecord]:
        out = []
        for r, mine in await self._store.members(actor.team_id):
            used = [c.last_used_at for c in mine if c.last_used_at is not None]
            expiries = [c.expires_at for c in mine]
            out.append(
                MemberRecord(
                    id=r.id,
                    name=r.name,
                    role=Role(r.role),
                    created_at=r.created_at,
                    last_used_at=max(used) if used else None,
                    expires_at=None
                    if not expiries or None in expiries
                    else max(e for e in expiries if e is not None),
                )
            )
        return out

    async def revoke_member(self, actor: Member, member_id: str) -> MemberRevoked:
        """Remove a member and every credential it holds, at once; never the team's last owner."""
        require(actor, owner=True)
        if not isinstance(member_id, str) or len(member_id) > 40:
            raise NotFound("no such member")

        def keep_an_owner(row: t.Member, owners: int) -> None:
            if row.role == Role.OWNER.value and owners <= 1:
                raise LastOwner(
                    f"{row.name} is the team's last owner and cannot be revoked", member=row.id
                )

        row = await self._store.delete_member(actor.team_id, member_id, keep_an_owner)
        if row is None:
            raise NotFound(f"no member {member_id}")
        self._audit(actor, "member.revoke", subject=row.name, member=member_id)
        return MemberRevoked(member_id, row.name)

    async def rotate_credential(
        self, actor: Member, *, expires_in_seconds: int | None = None
    ) -> MemberCredentialIssued:
        """Replace the credential ``actor`` presented: the new one is returned once, the old one
        stops working at once. Without ``expires_in_seconds`` the new one keeps the old lifetime."""
        if actor.credential_id is None:
            raise InvalidRequest("this request carried no member credential to rotate")
        now = self._clock.now()
        token, digest = new_member_token()

        def expiry(old: t.MemberCredential) -> datetime | None:
            if expires_in_seconds is not None:
                return credential_expiry(now, expires_in_seconds)
            if old.expires_at is not None:
                return now + (old.expires_at - old.created_at)
            return None

        new = await self._store.replace_credential(
            actor.member_id, actor.credential_id, digest, now, expiry
        )
        if new is None:
            raise IdentityError("unknown or revoked member credential")
        self._audit(actor, "member.rotate", subject=actor.name, credential=new.id)
        return MemberCredentialIssued(
            actor.member_id, actor.name, actor.role, new.expires_at, token
        )


def credential_expiry(now: datetime, seconds: int | None) -> datetime | None:
    if seconds is None:
        return None
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int)
        or not 60 <= seconds <= MAX_MEMBER_CREDENTIAL_TTL
    ):
        raise InvalidRequest(
            f"expiresInSeconds must be an integer from 60 to {MAX_MEMBER_CREDENTIAL_TTL}",
            field="expiresInSeconds",
        )
    return now + timedelta(seconds=seconds)
