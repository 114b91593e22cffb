"""Management operations: teams, members, projects, environments, connectors, links,
trust bindings, access tokens, audit and usage queries, key rotation.

Each mutation validates its input (typed errors naming the field), changes the store in
one transaction, records an audit event, and publishes the invalidations other
replicas need. The HTTP layer and the CLI only translate to and from these calls.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast
from urllib.parse import urlsplit

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from valetkey.core.audit import AuditEvent, AuditLog
from valetkey.core.clock import Clock
from valetkey.core.models import (
    STANDARD_ENVIRONMENTS,
    SUBJECT_TYPES,
    Identity,
    Member,
    Policy,
    Role,
    SubjectType,
    check_issuer,
    check_slug,
    parse_uid,
)
from valetkey.core.ports import Invalidation, InvalidationBus
from valetkey.core.providers import ValidatedConfig
from valetkey.crypto import DecryptionError, KeyRing
from valetkey.errors import (
    AudienceTaken,
    Conflict,
    ConnectorLinked,
    Forbidden,
    IdentityError,
    InvalidRequest,
    LastOwner,
    NotFound,
)
from valetkey.identity.access_tokens import hash_token, new_access_token, new_member_token
from valetkey.identity.bindings import (
    DEFAULT_BINDING_ALGORITHMS,
    validate_algorithms,
    validate_conditions,
)
from valetkey.identity.errors import TokenExpired
from valetkey.providers.registry import ProviderRegistry
from valetkey.store import tables as t
from valetkey.store.db import Database
from valetkey.store.ids import new_id
from valetkey.store.repo import (
    Repository,
    binding_from_row,
    cache_aad,
    connector_from_row,
    secrets_aad,
    trust_audience_key,
)

MAX_ACCESS_TOKEN_TTL = 366 * 24 * 3600
#: Audiences ``valetkey:<team-slug>[:…]`` belong to the team with that slug (the recommended
#: convention on a broker several teams share).
RESERVED_AUDIENCE_PREFIX = "valetkey:"
MAX_MEMBER_CREDENTIAL_TTL = 2 * 366 * 24 * 3600
#: How stale a member credential's ``lastUsedAt`` may be: at most one write a minute per credential.
LAST_USED_RESOLUTION = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class Bootstrap:
    team_id: str
    owner_token: str | None = field(repr=False)  # set only on the first start


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _ms(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp() * 1000)


class Management:
    def __init__(
        self,
        *,
        db: Database,
        repo: Repository,
        keyring: KeyRing,
        providers: ProviderRegistry,
        audit: AuditLog,
        bus: InvalidationBus,
        clock: Clock,
    ) -> None:
        self.db = db
        self.repo = repo
        self.keyring = keyring
        self.providers = providers
        self.audit = audit
        self.bus = bus
        self.clock = clock

    # -- bootstrap and members ----------------------------------------------------------

    async def bootstrap(self) -> Bootstrap:
        """Create the default team and its owner on first start (idempotent; safe across replicas)."""
        now = self.clock.now()
        async with self.db.session() as s:
            team = await s.scalar(select(t.Team).order_by(t.Team.created_at).limit(1))
            if team is not None:
                return Bootstrap(team.id, None)
        team_id = new_id("team")
        member_id = new_id("mbr")
        token, digest = new_member_token()
        try:
            async with self.db.session.begin() as s:
                s.add(t.Team(id=team_id, slug="default", name="Default team", created_at=now))
                await s.flush()
                s.add(
                    t.Member(
                        id=member_id,
                        team_id=team_id,
                        name="owner",
                        role=Role.OWNER.value,
                        created_at=now,
                    )
                )
                await s.flush()
                s.add(self._credential(member_id, "bootstrap", digest, now, None))
        except IntegrityError:  # another replica bootstrapped first
            async with self.db.session() as s:
                team = await s.scalar(select(t.Team).where(t.Team.slug == "default"))
            if team is None:
                raise  # the conflict was not another replica's bootstrap
            return Bootstrap(team.id, None)
        return Bootstrap(team_id, token)

    async def create_team(self, slug: str, name: str | None = None) -> Bootstrap:
        """Create another team with one owner (``owner``) and return its credential, shown once.

        No route calls this yet: a broker serves its default team, and operators (and the
        tenancy tests) add teams from Python.
        """
        check_slug(slug, "team")
        now = self.clock.now()
        team_id = new_id("team")
        token, digest = new_member_token()
        try:
            async with self.db.session.begin() as s:
                s.add(t.Team(id=team_id, slug=slug, name=name or slug, created_at=now))
                await s.flush()
                member_id = new_id("mbr")
                s.add(
                    t.Member(
                        id=member_id,
                        team_id=team_id,
                        name="owner",
                        role=Role.OWNER.value,
                        created_at=now,
                    )
                )
                await s.flush()
                s.add(self._credential(member_id, "initial", digest, now, None))
        except IntegrityError as exc:
            raise Conflict(f"a team named {slug} exists", field="team") from exc
        return Bootstrap(team_id, token)

    @staticmethod
    def _credential(
        member_id: str, name: str, digest: str, now: datetime, expires: datetime | None
    ) -> t.MemberCredential:
        return t.MemberCredential(
            id=new_id("cred"),
            member_id=member_id,
            name=name,
            token_hash=digest,
            created_at=now,
            revoked_at=None,
            expires_at=expires,
            last_used_at=None,
        )

    async def authenticate(self, bearer: str) -> Member:
        """The member behind a ``vk_pt_…`` credential, read from the store on every call.

        Nothing is cached, so a revoked or expired credential is refused at once on every
        replica. The credential's last use is written at most once a minute
        (``LAST_USED_RESOLUTION``), with a conditional update that other replicas skip too.
        """
        if not bearer.startswith("vk_pt_"):
            raise IdentityError("the management API needs a member credential (vk_pt_…)")
        found = await self.repo.member_for_credential(hash_token(bearer))
        if found is None:
            raise IdentityError("unknown or revoked member credential")
        member, cred = found
        now = self.clock.now()
        if cred.expires_at is not None and cred.expires_at <= now:
            raise TokenExpired(
                f"this member credential expired at {cred.expires_at.isoformat()}; "
                "ask an owner for a new one (valetkey members create), or rotate before expiry",
                expiredAt=cred.expires_at.isoformat(),
            )
        if cred.last_used_at is None or now - cred.last_used_at >= LAST_USED_RESOLUTION:
            await self.repo.touch_credential(cred.id, now, now - LAST_USED_RESOLUTION)
        return Member(
            team_id=member.team_id,
            member_id=member.id,
            name=member.name,
            role=Role(member.role),
            credential_id=cred.id,
        )

    async def create_member(
        self, actor: Member, name: str, role: str, *, expires_in_seconds: int | None = None
    ) -> dict[str, Any]:
        self._require(actor, owner=True)
        check_slug(name, "name")
        try:
            role_ = Role(role)
        except ValueError as exc:
            raise InvalidRequest("role must be owner, member or viewer", field="role") from exc
        now = self.clock.now()
        expires = _credential_expiry(now, expires_in_seconds)
        member_id = new_id("mbr")
        token, digest = new_member_token()
        try:
            async with self.db.session.begin() as s:
                s.add(
                    t.Member(
                        id=member_id,
                        team_id=actor.team_id,
                        name=name,
                        role=role_.value,
                        created_at=now,
                    )
                )
                await s.flush()
                s.add(self._credential(member_id, "initial", digest, now, expires))
        except IntegrityError as exc:
            raise Conflict(f"a member named {name} exists", field="name") from exc
        self._audit(actor, "member.create", subject=name, role=role_.value)
        return {
            "id": member_id,
            "name": name,
            "role": role_.value,
            "expiresAt": _iso(expires),
            "credential": token,
        }

    async def list_members(self, actor: Member) -> list[dict[str, Any]]:
        async with self.db.session() as s:
            rows = (
                await s.scalars(
                    select(t.Member)
                    .where(t.Member.team_id == actor.team_id)
                    .order_by(t.Member.created_at, t.Member.id)
                )
            ).all()
            creds = (
                await s.scalars(
                    select(t.MemberCredential).where(
                        t.MemberCredential.member_id.in_([r.id for r in rows]),
                        t.MemberCredential.revoked_at.is_(None),
                    )
                )
            ).all()
        by_member: dict[str, list[t.MemberCredential]] = {}
        for cred in creds:
            by_member.setdefault(cred.member_id, []).append(cred)
        out = []
        for r in rows:
            mine = by_member.get(r.id, [])
            used = [c.last_used_at for c in mine if c.last_used_at is not None]
            expiries = [c.expires_at for c in mine]
            out.append(
                {
                    "id": r.id,
                    "name": r.name,
                    "role": r.role,
                    "createdAt": _iso(r.created_at),
                    "lastUsedAt": _iso(max(used)) if used else None,
                    # The latest expiry of its live credentials; None when one never expires.
                    "expiresAt": None
                    if not expiries or None in expiries
                    else _iso(max(e for e in expiries if e is not None)),
                }
            )
        return out

    async def revoke_member(self, actor: Member, member_id: str) -> dict[str, Any]:
        """Remove a member and every credential it holds, at once; never the team's last owner."""
        self._require(actor, owner=True)
        if not isinstance(member_id, str) or len(member_id) > 40:
            raise NotFound("no such member")
        async with self.db.session.begin() as s:
            # Lock the team row first: two owners revoking each other at once are serialized
            # here (a row lock on PostgreSQL, the write lock on SQLite), so the count below is
            # never stale and a team cannot lose its last owner.
            await s.execute(
                update(t.Team).where(t.Team.id == actor.team_id).values(slug=t.Team.slug)
            )
            row = await s.get(t.Member, member_id)
            if row is None or row.team_id != actor.team_id:
                raise NotFound(f"no member {member_id}")
            if row.role == Role.OWNER.value:
                owners = await s.scalar(
                    select(func.count())
                    .select_from(t.Member)
                    .where(t.Member.team_id == actor.team_id, t.Member.role == Role.OWNER.value)
                )
                if (owners or 0) <= 1:
                    raise LastOwner(
                        f"{row.name} is the team's last owner and cannot be revoked",
                        member=row.id,
                    )
            await s.execute(
                delete(t.MemberCredential).where(t.MemberCredential.member_id == row.id)
            )
            await s.delete(row)
            name = row.name
        self._audit(actor, "member.revoke", subject=name, member=member_id)
        return {"id": member_id, "name": name, "revoked": True}

    async def rotate_credential(
        self, actor: Member, *, expires_in_seconds: int | None = None
    ) -> dict[str, Any]:
        """Replace the credential ``actor`` presented: the new one is returned once, the old one
        stops working at once. Without ``expires_in_seconds`` the new one keeps the old lifetime."""
        if actor.credential_id is None:
            raise InvalidRequest("this request carried no member credential to rotate")
        now = self.clock.now()
        token, digest = new_member_token()
        async with self.db.session.begin() as s:
            old = await s.get(t.MemberCredential, actor.credential_id)
            if old is None or old.member_id != actor.member_id or old.revoked_at is not None:
                raise IdentityError("unknown or revoked member credential")
            if expires_in_seconds is not None:
                expires = _credential_expiry(now, expires_in_seconds)
            elif old.expires_at is not None:
                expires = now + (old.expires_at - old.created_at)
            else:
                expires = None
            old.revoked_at = now
            new = self._credential(actor.member_id, old.name, digest, now, expires)
            s.add(new)
        self._audit(actor, "member.rotate", subject=actor.name, credential=new.id)
        return {
            "id": actor.member_id,
            "name": actor.name,
            "role": actor.role.value,
            "expiresAt": _iso(expires),
            "credential": token,
        }

    # -- projects and environments -----------------------------------------------------

    async def create_project(
        self, actor: Member, slug: str, name: str | None = None
    ) -> dict[str, Any]:
        self._require(actor)
        check_slug(slug, "project")
        now = self.clock.now()
        project_id = new_id("prj")
        try:
            async with self.db.session.begin() as s:
                s.add(
                    t.Project(
                        id=project_id,
                        team_id=actor.team_id,
                        slug=slug,
                        name=name or slug,
                        created_at=now,
                    )
                )
                await s.flush()
                for env in STANDARD_ENVIRONMENTS:
                    s.add(
                        t.Environment(
                            id=new_id("env"), project_id=project_id, slug=env, created_at=now
                        )
                    )
        except IntegrityError as exc:
            raise Conflict(f"project {slug} exists", field="project") from exc
        self._audit(actor, "project.create", project_id=project_id, slug=slug)
        return await self.get_project(actor, slug)

    async def _project(self, team_id: str, slug: str) -> t.Project:
        async with self.db.session() as s:
            row = await s.scalar(
                select(t.Project).where(t.Project.team_id == team_id, t.Project.slug == slug)
            )
        if row is None:
            raise NotFound(f"no project {slug}", project=slug)
        return row

    async def _environments(self, project_id: str) -> list[str]:
        async with self.db.session() as s:
            rows = (
                await s.scalars(
                    select(t.Environment.slug).where(t.Environment.project_id == project_id)
                )
            ).all()
        order = {e: i for i, e in enumerate(STANDARD_ENVIRONMENTS)}
        return sorted(rows, key=lambda e: (order.get(e, len(order)), e))

    async def get_project(self, actor: Member, slug: str) -> dict[str, Any]:
        row = await self._project(actor.team_id, slug)
        return {
            "id": row.id,
            "slug": row.slug,
            "name": row.name,
            "environments": await self._environments(row.id),
            "createdAt": _iso(row.created_at),
        }

    async def list_projects(self, actor: Member) -> list[dict[str, Any]]:
        async with self.db.session() as s:
            rows = (
                await s.scalars(
                    select(t.Project)
                    .where(t.Project.team_id == actor.team_id)
                    .order_by(t.Project.slug)
                )
            ).all()
        return [
            {
                "id": r.id,
                "slug": r.slug,
                "name": r.name,
                "environments": await self._environments(r.id),
                "createdAt": _iso(r.created_at),
            }
            for r in rows
        ]

    async def create_environment(self, actor: Member, project: str, slug: str) -> dict[str, Any]:
        self._require(actor)
        check_slug(slug, "environment")
        row = await self._project(actor.team_id, project)
        try:
            async with self.db.session.begin() as s:
                s.add(
                    t.Environment(
                        id=new_id("env"), project_id=row.id, slug=slug, created_at=self.clock.now()
                    )
                )
        except IntegrityError as exc:
            raise Conflict(f"environment {slug} exists in {project}", field="environment") from exc
        self._audit(actor, "environment.create", project_id=row.id, environment=slug)
        return {"project": project, "slug": slug}

    async def list_environments(self, actor: Member, project: str) -> list[str]:
        row = await self._project(actor.team_id, project)
        return await self._environments(row.id)

    async def _check_environments(
        self, project_id: str, project: str, environments: Sequence[str]
    ) -> None:
        known = set(await self._environments(project_id))
        for env in environments:
            if env not in known:
                raise NotFound(f"project {project} has no environment {env}", environment=env)

    # -- connectors ---------------------------------------------------------------------

    def connector_json(
        self,
        row: t.Connector,
        links: Sequence[t.ProjectLink] = (),
        projects: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        provider = self.providers.get(row.type)
        connector = connector_from_row(row, self.keyring)
        return {
            "id": row.id,
            "uid": row.uid,
            "service": row.service,
            "name": row.name,
            "type": row.type,
            "data": dict(row.config),
            "secretFields": sorted(connector.secrets),
            "capabilities": provider.capabilities(connector).to_json(),
            "createdAt": _ms(row.created_at),
            "updatedAt": _ms(row.updated_at),
            "links": [
                {
                    "project": (projects or {}).get(link.project_id, link.project_id),
                    "environments": list(link.environments),
                    "policy": Policy.from_json(link.policy).to_json(),
                }
                for link in links
            ],
        }

    async def _connector(self, team_id: str, uid: str) -> t.Connector:
        parse_uid(uid)
        async with self.db.session() as s:
            row = await s.scalar(
                select(t.Connector).where(
                    t.Connector.team_id == team_id,
                    t.Connector.uid == uid,
                    t.Connector.deleted_at.is_(None),
                )
            )
        if row is None:
            raise NotFound(f"no connector {uid}", connector=uid)
        return row

    async def create_connector(
        self,
        actor: Member,
        service: str,
        name: str,
        data: Mapping[str, Any],
        type_: str | None = None,
    ) -> dict[str, Any]:
        self._require(actor)
        uid = f"{service}/{name}"
        parse_uid(uid)
        kind = type_ or self.providers.type_for_service(service)
        if kind is None:
            raise InvalidRequest(
                f"no provider handles service {service!r}; pass a type ({', '.join(self.providers.types())})",
                field="type",
            )
        provider = self.providers.get(kind)
        if not isinstance(data, Mapping):
            raise InvalidRequest("data must be a JSON object", field="data")
        validated = provider.validate_config(data)
        now = self.clock.now()
        connector_id = new_id("con")
        try:
            async with self.db.session.begin() as s:
                s.add(
                    t.Connector(
                        id=connector_id,
                        team_id=actor.team_id,
                        uid=uid,
                        service=service,
                        name=name,
                        type=kind,
                        config=validated.config,
                        secrets=self.keyring.encrypt_json(
                            validated.secrets, aad=secrets_aad(connector_id)
                        ),
                        created_at=now,
                        updated_at=now,
                        deleted_at=None,
                    )
                )
        except IntegrityError as exc:
            raise Conflict(f"connector {uid} exists", connector=uid) from exc
        self._audit(actor, "connector.create", connector_uid=uid, type=kind)
        await self.bus.publish(Invalidation(kind="connector", team_id=actor.team_id, uid=uid))
        return await self.get_connector(actor, uid)

    async def get_connector(self, actor: Member, uid: str) -> dict[str, Any]:
        row = await self._connector(actor.team_id, uid)
        links, projects = await self._links_of(actor.team_id, [row.id])
        return self.connector_json(row, links.get(row.id, []), projects)

    async def _links_of(
        self, team_id: str, connector_ids: Sequence[str]
    ) -> tuple[dict[str, list[t.ProjectLink]], dict[str, str]]:
        async with self.db.session() as s:
            rows = (
                await s.scalars(
                    select(t.ProjectLink).where(t.ProjectLink.connector_id.in_(list(connector_ids)))
                )
            ).all()
            projects = await _project_slugs(s, team_id)
        by_connector: dict[str, list[t.ProjectLink]] = {}
        for row in rows:
            by_connector.setdefault(row.connector_id, []).append(row)
        return by_connector, projects

    async def list_connectors(
        self,
        actor: Member,
        *,
        service: str | None = None,
        project: str | None = None,
        search: str | None = None,
    ) -> list[dict[str, Any]]:
        query = select(t.Connector).where(
            t.Connector.team_id == actor.team_id, t.Connector.deleted_at.is_(None)
        )
        if service:
            query = query.where(t.Connector.service == service)
        if search:
            pattern = (
                "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            )
            query = query.where(
                or_(
                    t.Connector.uid.ilike(pattern, escape="\\"),
                    t.Connector.type.ilike(pattern, escape="\\"),
                )
            )
        if project:
            prj = await self._project(actor.team_id, project)
            query = query.where(
                t.Connector.id.in_(
                    select(t.ProjectLink.connector_id).where(t.ProjectLink.project_id == prj.id)
                )
            )
        async with self.db.session() as s:
            rows = (await s.scalars(query.order_by(t.Connector.uid))).all()
        links, projects = await self._links_of(actor.team_id, [r.id for r in rows])
        return [self.connector_json(r, links.get(r.id, []), projects) for r in rows]

    async def update_connector(
        self, actor: Member, uid: str, data: Mapping[str, Any]
    ) -> dict[str, Any]:
        self._require(actor)
        row = await self._connector(actor.team_id, uid)
        if not isinstance(data, Mapping):
            raise InvalidRequest("data must be a JSON object", field="data")
        provider = self.providers.get(row.type)
        previous = ValidatedConfig(
            dict(row.config), self.keyring.decrypt_json(row.secrets, aad=secrets_aad(row.id))
        )
        validated = provider.validate_config(data, previous)
        async with self.db.session.begin() as s:
            fresh = await s.get(t.Connector, row.id)
            if fresh is None:
                raise NotFound(f"no connector {uid}", connector=uid)
            fresh.config = validated.config
            fresh.secrets = self.keyring.encrypt_json(validated.secrets, aad=secrets_aad(row.id))
            fresh.updated_at = self.clock.now()
        self._audit(actor, "connector.update", connector_uid=uid, fields=sorted(data))
        await self.bus.publish(
            Invalidation(kind="connector", team_id=actor.team_id, uid=uid, connector_id=row.id)
        )
        return await self.get_connector(actor, uid)

    async def remove_connector(
        self, actor: Member, uid: str, *, disconnect_all: bool = False
    ) -> dict[str, Any]:
        self._require(actor)
        row = await self._connector(actor.team_id, uid)
        async with self.db.session.begin() as s:
            links = (
                await s.scalars(select(t.ProjectLink).where(t.ProjectLink.connector_id == row.id))
            ).all()
            if links and not disconnect_all:
                raise ConnectorLinked(
                    f"connector {uid} is attached to {len(links)} project(s)",
                    connector=uid,
                    links=len(links),
                )
            for link in links:
                await s.delete(link)
            fresh = await s.get(t.Connector, row.id)
            if fresh is None:
                raise NotFound(f"no connector {uid}", connector=uid)
            fresh.deleted_at = self.clock.now()
        self._audit(actor, "connector.remove", connector_uid=uid, detached=len(links))
        await self.bus.publish(
            Invalidation(kind="connector", team_id=actor.team_id, uid=uid, connector_id=row.id)
        )
        return {"uid": uid, "removed": True, "detached": len(links)}

    # -- links ----------------------------------------------------------------------------

    async def attach(
        self,
        actor: Member,
        uid: str,
        project: str,
        environments: Sequence[str],
        *,
        subjects: Sequence[str] | None = None,
        scopes: Sequence[str] | None = None,
        max_lifetime_seconds: int | None = None,
        confirm_consent: bool = True,
        user_issuers: Sequence[str] | None = None,
        resources: Sequence[str] | None = None,
        audiences: Sequence[str] | None = None,
        allow_unknown_scope: bool = False,
    ) -> dict[str, Any]:
        self._require(actor)
        row = await self._connector(actor.team_id, uid)
        prj = await self._project(actor.team_id, project)
        envs = _string_list(environments, "environments")
        if not envs:
            raise InvalidRequest("name at least one environment", field="environments")
        await self._check_environments(prj.id, project, envs)
        subjects_ = tuple(_string_list(subjects or ["app"], "subjects"))
        for subject in subjects_:
            if subject not in SUBJECT_TYPES:
                raise InvalidRequest(
                    f"unknown subject type {subject!r}; use {', '.join(SUBJECT_TYPES)}",
                    field="subjects",
                )
        provider = self.providers.get(row.type)
        caps = provider.capabilities(connector_from_row(row, self.keyring))
        unsupported = [s for s in subjects_ if s not in caps.subjects]
        if unsupported:
            raise InvalidRequest(
                f"{row.type} connectors cannot issue {', '.join(unsupported)} tokens",
                field="subjects",
            )
        scopes_ = None if scopes is None else tuple(sorted(set(_string_list(scopes, "scopes"))))
        if scopes_ is not None and not caps.scopable and scopes_:
            raise InvalidRequest(
                f"{row.type} connectors cannot be narrowed by scope", field="scopes"
            )
        configured = row.config.get("scopes")
        if scopes_ is not None and isinstance(configured, list):
            beyond = sorted(set(scopes_) - set(configured))
            if beyond:
                raise InvalidRequest(
                    f"scope ceiling {', '.join(beyond)} is not among the connector's scopes",
                    field="scopes",
                )
        if max_lifetime_seconds is not None and (
            isinstance(max_lifetime_seconds, bool)
            or not isinstance(max_lifetime_seconds, int)
            or not 60 <= max_lifetime_seconds <= 31 * 24 * 3600
        ):
            raise InvalidRequest(
                "maxLifetimeSeconds must be an integer from 60 to 2678400",
                field="maxLifetimeSeconds",
            )
        issuers_ = tuple(
            sorted({check_issuer(i, "userIssuers") for i in _string_list(user_issuers or [], "userIssuers")})
        )
        if not isinstance(allow_unknown_scope, bool):
            raise InvalidRequest("allowUnknownScope must be a boolean", field="allowUnknownScope")
        policy = Policy(
            subjects=cast(tuple[SubjectType, ...], subjects_),
            scopes=scopes_,
            max_lifetime_seconds=max_lifetime_seconds,
            confirm_consent=confirm_consent,
            user_issuers=issuers_,
            resources=_targets(resources, "resources", uri=True),
            audiences=_targets(audiences, "audiences", uri=False),
            allow_unknown_scope=allow_unknown_scope,
        )
        now = self.clock.now()
        async with self.db.session.begin() as s:
            link = await s.scalar(
                select(t.ProjectLink).where(
                    t.ProjectLink.connector_id == row.id, t.ProjectLink.project_id == prj.id
                )
            )
            if link is None:
                link = t.ProjectLink(
                    id=new_id("lnk"),
                    connector_id=row.id,
                    project_id=prj.id,
                    environments=sorted(envs),
                    policy=policy.to_json(),
                    created_at=now,
                    updated_at=now,
                )
                s.add(link)
            else:
                link.environments = sorted(set(link.environments) | set(envs))
                link.policy = policy.to_json()
                link.updated_at = now
            result = {
                "connector": uid,
                "project": project,
                "environments": list(link.environments),
                "policy": policy.to_json(),
            }
        self._audit(
            actor,
            "link.attach",
            connector_uid=uid,
            project_id=prj.id,
            environments=list(envs),
            policy=policy.to_json(),
        )
        await self.bus.publish(
            Invalidation(kind="connector", team_id=actor.team_id, uid=uid, connector_id=row.id)
        )
        return result

    async def detach(
        self, actor: Member, uid: str, project: str, environments: Sequence[str] | None = None
    ) -> dict[str, Any]:
        self._require(actor)
        row = await self._connector(actor.team_id, uid)
        prj = await self._project(actor.team_id, project)
        async with self.db.session.begin() as s:
            link = await s.scalar(
                select(t.ProjectLink).where(
                    t.ProjectLink.connector_id == row.id, t.ProjectLink.project_id == prj.id
                )
            )
            if link is None:
                raise NotFound(
                    f"connector {uid} is not attached to {project}", connector=uid, project=project
                )
            remaining: list[str] = []
            if environments:
                remaining = [e for e in link.environments if e not in set(environments)]
            if remaining:
                link.environments = remaining
                link.updated_at = self.clock.now()
            else:
                await s.delete(link)
        self._audit(
            actor,
            "link.detach",
            connector_uid=uid,
            project_id=prj.id,
            environments=list(environments or []),
        )
        await self.bus.publish(
            Invalidation(kind="connector", team_id=actor.team_id, uid=uid, connector_id=row.id)
        )
        return {
            "connector": uid,
            "project": project,
            "environments": remaining,
            "detached": not remaining,
        }

    # -- trust bindings -------------------------------------------------------------------

    async def create_binding(
        self,
        actor: Member,
        project: str,
        *,
        environment: str,
        issuer: str,
        audience: str,
        claims: Mapping[str, str],
        algorithms: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        self._require(actor)
        prj = await self._project(actor.team_id, project)
        await self._check_environments(prj.id, project, [environment])
        if (
            not isinstance(issuer, str)
            or not issuer.startswith(("https://", "http://"))
            or len(issuer) > 500
        ):
            raise InvalidRequest("issuer must be an http(s) URL", field="issuer")
        if not isinstance(audience, str) or not audience or len(audience) > 500:
            raise InvalidRequest("audience must be a non-empty string", field="audience")
        await self._check_reserved_audience(actor, audience)
        if not isinstance(claims, Mapping):
            raise InvalidRequest("claims must be an object of name: value", field="claims")
        validate_conditions(claims)
        algs = validate_algorithms(
            _string_list(algorithms or DEFAULT_BINDING_ALGORITHMS, "algorithms")
        )
        binding_id = new_id("tb")
        now = self.clock.now()
        issuer_ = issuer.rstrip("/") if issuer.endswith("/") and issuer.count("/") > 3 else issuer
        key = trust_audience_key(issuer_, audience)
        insert = pg_insert if self.db.is_postgres else sqlite_insert
        async with self.db.session.begin() as s:
            # Claim the (issuer, audience) pair for this team, or find who holds it. The unique
            # key decides between two teams creating at once; the row lock orders this against
            # a concurrent delete of the pair's last binding (which releases the pair).
            owner: str | None = None
            for _attempt in range(2):
                await s.execute(
                    insert(t.TrustAudience)
                    .values(
                        key_hash=key,
                        issuer=issuer_,
                        audience=audience,
                        team_id=actor.team_id,
                        created_at=now,
                    )
                    .on_conflict_do_nothing(index_elements=["key_hash"])
                )
                owner = await s.scalar(
                    select(t.TrustAudience.team_id)
                    .where(t.TrustAudience.key_hash == key)
                    .with_for_update()
                )
                if owner is not None:  # None: released by a concurrent delete; claim again
                    break
            if owner != actor.team_id:
                raise AudienceTaken(
                    "another team's trust bindings use this issuer with this audience; "
                    "give your workloads an audience of your own",
                    field="audience",
                )
            row = t.TrustBinding(
                id=binding_id,
                team_id=actor.team_id,
                project_id=prj.id,
                environment=environment,
                issuer=issuer_,
                audience=audience,
                conditions=dict(claims),
                algorithms=list(algs),
                created_at=now,
            )
            s.add(row)
        self._audit(
            actor, "trust.create", project_id=prj.id, environment=environment, issuer=issuer
        )
        await self.bus.publish(Invalidation(kind="identity"))
        return _binding_json(binding_from_row(row, project), active=True)

    async def _check_reserved_audience(self, actor: Member, audience: str) -> None:
        """Audiences under ``valetkey:`` are reserved: ``valetkey:<slug>`` (or
        ``valetkey:<slug>:…``) only for the team whose slug it names, so the recommended
        per-team audience cannot be claimed first by another team."""
        if not audience.startswith(RESERVED_AUDIENCE_PREFIX):
            return
        async with self.db.session() as s:
            slug = await s.scalar(select(t.Team.slug).where(t.Team.id == actor.team_id))
        own = f"{RESERVED_AUDIENCE_PREFIX}{slug}"
        if audience != own and not audience.startswith(own + ":"):
            raise InvalidRequest(
                f"audiences under {RESERVED_AUDIENCE_PREFIX} name their team: use {own} "
                f"(or {own}:<anything>)",
                field="audience",
            )

    async def list_bindings(
        self, actor: Member, project: str | None = None
    ) -> list[dict[str, Any]]:
        query = (
            select(t.TrustBinding, t.Project.slug)
            .join(t.Project, t.Project.id == t.TrustBinding.project_id)
            .where(t.TrustBinding.team_id == actor.team_id)
        )
        if project:
            prj = await self._project(actor.team_id, project)
            query = query.where(t.TrustBinding.project_id == prj.id)
        async with self.db.session() as s:
            rows = (await s.execute(query.order_by(t.TrustBinding.created_at))).all()
            owned = set(
                (
                    await s.scalars(
                        select(t.TrustAudience.key_hash).where(
                            t.TrustAudience.team_id == actor.team_id
                        )
                    )
                ).all()
            )
        return [
            _binding_json(
                binding_from_row(row, slug),
                active=trust_audience_key(row.issuer, row.audience) in owned,
            )
            for row, slug in rows
        ]

    async def delete_binding(self, actor: Member, binding_id: str) -> dict[str, Any]:
        self._require(actor)
        async with self.db.session.begin() as s:
            row = await s.get(t.TrustBinding, binding_id)
            if row is None or row.team_id != actor.team_id:
                raise NotFound(f"no trust binding {binding_id}")
            key = trust_audience_key(row.issuer, row.audience)
            pair = await s.scalar(
                select(t.TrustAudience).where(t.TrustAudience.key_hash == key).with_for_update()
            )
            await s.delete(row)
            await s.flush()
            if pair is not None and pair.team_id == actor.team_id:
                remaining = await s.scalar(
                    select(func.count())
                    .select_from(t.TrustBinding)
                    .where(
                        t.TrustBinding.team_id == actor.team_id,
                        t.TrustBinding.issuer == row.issuer,
                        t.TrustBinding.audience == row.audience,
                    )
                )
                if not remaining:  # the pair's last binding: release it for any team
                    await s.delete(pair)
        self._audit(actor, "trust.delete", binding=binding_id)
        await self.bus.publish(Invalidation(kind="identity"))
        return {"id": binding_id, "deleted": True}

    # -- access tokens ------------------------------------------------------------------

    async def create_access_token(
        self,
        actor: Member,
        project: str,
        *,
        environment: str,
        name: str | None = None,
        user_id: str | None = None,
        ttl_seconds: int | None = None,
    ) -> dict[str, Any]:
        self._require(actor)
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
        now = self.clock.now()
        token_id = new_id("at")
        label = (name or f"{project}-{environment}")[:200]
        expires = None if ttl_seconds is None else now + timedelta(seconds=ttl_seconds)
        async with self.db.session.begin() as s:
            s.add(
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
        return {
            "id": token_id,
            "name": label,
            "project": project,
            "environment": environment,
            "userId": user_id,
            "expiresAt": _iso(expires),
            "token": token,
        }

    async def list_access_tokens(
        self, actor: Member, project: str | None = None
    ) -> list[dict[str, Any]]:
        query = (
            select(t.AccessToken, t.Project.slug)
            .join(t.Project, t.Project.id == t.AccessToken.project_id)
            .where(t.AccessToken.team_id == actor.team_id)
        )
        if project:
            prj = await self._project(actor.team_id, project)
            query = query.where(t.AccessToken.project_id == prj.id)
        async with self.db.session() as s:
            rows = (await s.execute(query.order_by(t.AccessToken.created_at))).all()
        return [
            {
                "id": r.id,
                "name": r.name,
                "project": slug,
                "environment": r.environment,
                "userId": r.user_id,
                "createdAt": _iso(r.created_at),
                "expiresAt": _iso(r.expires_at),
                "revokedAt": _iso(r.revoked_at),
            }
            for r, slug in rows
        ]

    async def revoke_access_token(self, actor: Member, token_id: str) -> dict[str, Any]:
        self._require(actor)
        async with self.db.session.begin() as s:
            row = await s.get(t.AccessToken, token_id)
            if row is None or row.team_id != actor.team_id:
                raise NotFound(f"no access token {token_id}")
            if row.revoked_at is None:
                row.revoked_at = self.clock.now()
            digest = row.token_hash
        self._audit(actor, "access_token.revoke", token=token_id)
        await self.bus.publish(Invalidation(kind="identity", token_hash=digest))
        return {"id": token_id, "revoked": True}

    # -- audit, usage -------------------------------------------------------------------

    async def query_audit(
        self,
        actor: Member,
        *,
        connector: str | None = None,
        project: str | None = None,
        decision: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        await self._flush_audit()
        if decision is not None and decision not in ("allowed", "denied"):
            raise InvalidRequest("decision must be allowed or denied", field="decision")
        if not 1 <= limit <= 1000:
            raise InvalidRequest("limit must be from 1 to 1000", field="limit")
        query = select(t.AuditEvent).where(t.AuditEvent.team_id == actor.team_id)
        if connector:
            query = query.where(t.AuditEvent.connector_uid == connector)
        if project:
            prj = await self._project(actor.team_id, project)
            query = query.where(t.AuditEvent.project_id == prj.id)
        if decision:
            query = query.where(t.AuditEvent.decision == decision)
        if action:
            query = query.where(t.AuditEvent.action == action)
        if since:
            query = query.where(t.AuditEvent.at >= since)
        if until:
            query = query.where(t.AuditEvent.at <= until)
        async with self.db.session() as s:
            rows = (await s.scalars(query.order_by(t.AuditEvent.id.desc()).limit(limit))).all()
            projects = await _project_slugs(s, actor.team_id)
        return [
            {
                "id": r.id,
                "at": _iso(r.at),
                "actor": r.actor,
                "action": r.action,
                "decision": r.decision,
                "reason": r.reason,
                "connector": r.connector_uid,
                "project": projects.get(r.project_id or "", r.project_id),
                "environment": r.environment,
                "subject": r.subject,
                "details": r.details,
            }
            for r in rows
        ]

    async def usage(self, actor: Member, month: str | None = None) -> dict[str, Any]:
        await self._flush_audit()
        month = month or self.clock.now().strftime("%Y-%m")
        if not (
            len(month) == 7
            and month[4] == "-"
            and month[:4].isdigit()
            and month[5:].isdigit()
            and 1 <= int(month[5:]) <= 12
        ):
            raise InvalidRequest("month must look like 2026-11", field="month")
        async with self.db.session() as s:
            rows = (
                await s.execute(
                    select(t.UsageCounter.metric, func.sum(t.UsageCounter.count))
                    .where(t.UsageCounter.team_id == actor.team_id, t.UsageCounter.month == month)
                    .group_by(t.UsageCounter.metric)
                )
            ).all()
        return {"month": month, "counters": {metric: int(n) for metric, n in rows}}

    # -- keys -------------------------------------------------------------------------------

    def _encrypted_columns(self) -> list[tuple[Any, str, str, Any, str]]:
        from valetkey.store.consent import authorization_aad, grant_aad
        from valetkey.store.jobs import job_aad

        return [
            (t.Connector, "secrets", "id", secrets_aad, "connectors"),
            (t.CachedToken, "payload", "key_hash", cache_aad, "cachedTokens"),
            (t.Grant, "payload", "id", grant_aad, "grants"),
            (t.Authorization, "payload", "id", authorization_aad, "authorizations"),
            (t.Job, "payload", "id", job_aad, "jobs"),
        ]

    async def rewrap_all(self, *, batch: int = 200) -> dict[str, int]:
        """Re-wrap every data key with the key ring's active KEK. Safe while the broker serves.

        A cached token whose key is gone is only a cache: it is dropped, not fatal. Any other
        unreadable record stops the rotation with an error naming it.
        """
        active = self.keyring.active_id
        counts = {
            "connectors": 0,
            "cachedTokens": 0,
            "grants": 0,
            "authorizations": 0,
            "jobs": 0,
            "droppedCacheEntries": 0,
        }
        for table, column, key, aad, label in self._encrypted_columns():
            last = ""
            while True:
                async with self.db.session.begin() as s:
                    pk = getattr(table, key)
                    rows = (
                        await s.scalars(
                            select(table)
                            .where(pk > last)
                            .order_by(pk)
                            .limit(batch)
                            .with_for_update()
                        )
                    ).all()
                    for row in rows:
                        blob = getattr(row, column)
                        if self.keyring.kek_id_of(blob) == active:
                            continue
                        try:
                            setattr(
                                row, column, self.keyring.rewrap(blob, aad=aad(getattr(row, key)))
                            )
                        except DecryptionError:
                            if table is not t.CachedToken:
                                raise
                            await s.delete(row)
                            counts["droppedCacheEntries"] += 1
                            continue
                        counts[label] += 1
                if not rows:
                    break
                last = getattr(rows[-1], key)
        return counts

    async def kek_ids_in_use(self) -> set[str]:
        used: set[str] = set()
        async with self.db.session() as s:
            for table, column, _key, _aad, _label in self._encrypted_columns():
                for blob in (await s.scalars(select(getattr(table, column)))).all():
                    used.add(self.keyring.kek_id_of(blob))
        return used

    # -- acting for a project ------------------------------------------------------------

    async def identity_for(self, actor: Member, project: Any, environment: Any) -> Identity:
        """An owner or member acting directly on a project's environment (token import)."""
        self._require(actor)
        if not isinstance(project, str) or not isinstance(environment, str):
            raise InvalidRequest(
                "with a member credential, name the project and environment", field="project"
            )
        prj = await self._project(actor.team_id, project)
        await self._check_environments(prj.id, project, [environment])
        return Identity(
            team_id=actor.team_id,
            project_id=prj.id,
            project_slug=prj.slug,
            environment=environment,
            kind="member",
            subject=actor.name,
            expires_at=None,
        )

    def record_import(self, identity: Identity, uid: str, subject: str, grant_id: str) -> None:
        self.audit.record(
            AuditEvent(
                team_id=identity.team_id,
                at=self.clock.now(),
                actor=f"{identity.kind}:{identity.subject}",
                action="grant.import",
                decision="allowed",
                reason="imported",
                connector_uid=uid,
                project_id=identity.project_id,
                environment=identity.environment,
                subject=subject,
                details={"grant": grant_id},
            )
        )

    def record(self, actor: Member, action: str, **fields: Any) -> None:
        """Record a management event done outside this class (e.g. a development identity issued)."""
        self._audit(actor, action, **fields)

    # -- helpers ------------------------------------------------------------------------

    async def _flush_audit(self) -> None:
        """Write what is recorded before reading it back; if the store cannot take writes now,
        answer with what is written (the writer logged and counted the failure, and retries)."""
        with contextlib.suppress(Exception):
            await self.audit.flush()

    def _require(self, actor: Member, *, owner: bool = False) -> None:
        if owner and actor.role is not Role.OWNER:
            raise Forbidden("only owners can do this")
        if not actor.role.can_write():
            raise Forbidden("viewers have read-only access")

    def _audit(
        self,
        actor: Member,
        action: str,
        *,
        connector_uid: str | None = None,
        project_id: str | None = None,
        environment: str | None = None,
        subject: str | None = None,
        **details: Any,
    ) -> None:
        self.audit.record(
            AuditEvent(
                team_id=actor.team_id,
                at=self.clock.now(),
                actor=f"member:{actor.name}",
                action=action,
                decision="allowed",
                reason="ok",
                connector_uid=connector_uid,
                project_id=project_id,
                environment=environment,
                subject=subject,
                details=details,
            )
        )


async def _project_slugs(s: AsyncSession, team_id: str) -> dict[str, str]:
    """Project id → slug, for one team (to name projects in listings)."""
    rows = await s.execute(select(t.Project.id, t.Project.slug).where(t.Project.team_id == team_id))
    return dict(rows.all())


def _credential_expiry(now: datetime, seconds: int | None) -> datetime | None:
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


def _targets(values: Sequence[str] | None, what: str, *, uri: bool) -> tuple[str, ...]:
    """A link's resource or audience allow-list: at most 100 printable strings of at most 2000
    characters; a resource is an absolute URI without a fragment (RFC 8707 §2)."""
    items = set()
    for value in _string_list(values or [], what):
        if len(value) > 2000 or not value.isprintable() or " " in value:
            raise InvalidRequest(
                f"{what} must hold printable values of at most 2000 characters, without spaces",
                field=what,
            )
        if uri:
            parts = urlsplit(value)
            if not parts.scheme or not (parts.netloc or parts.path) or parts.fragment or "#" in value:
                raise InvalidRequest(
                    f"{what} must be absolute URIs without a fragment (RFC 8707)", field=what
                )
        items.add(value)
    return tuple(sorted(items))


def _string_list(values: Any, what: str) -> list[str]:
    if (
        isinstance(values, str)
        or not isinstance(values, Sequence)
        or not all(isinstance(v, str) and v for v in values)
    ):
        raise InvalidRequest(f"{what} must be a list of non-empty strings", field=what)
    if len(values) > 100:
        raise InvalidRequest(f"at most 100 {what}", field=what)
    return list(values)


def _binding_json(b: Any, *, active: bool) -> dict[str, Any]:
    """A binding on the wire. ``active`` is false when its (issuer, audience) belongs to another
    team (bindings that overlapped before pairs had owners): such a binding is never selected."""
    return {
        "id": b.id,
        "project": b.project_slug,
        "environment": b.environment,
        "issuer": b.issuer,
        "audience": b.audience,
        "claims": dict(b.conditions),
        "algorithms": list(b.algorithms),
        "createdAt": _iso(b.created_at),
        "active": active,
    }
