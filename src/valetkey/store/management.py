"""The management repository: the rows behind teams, members, projects, environments,
connectors, links, trust bindings and access tokens (audit and usage queries: ``store.reports``).

SQL and transactions only. Who may do what, what a valid value is, the audit trail and the
invalidations are the application services' (``valetkey.services``); where a rule has to hold
inside one transaction (the last owner, a credential's lifetime), the service passes it in as a
function the transaction calls. Unique keys answer with ``False`` or ``None``, never an
error: the service names the conflict. Key rotation has a repository of its own
(``store.keys``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from valetkey.crypto import KeyRing
from valetkey.errors import NotFound
from valetkey.store import tables as t
from valetkey.store.db import Database
from valetkey.store.ids import new_id
from valetkey.store.repo import secrets_aad, trust_audience_key


def new_credential(
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


class ManagementRepository:
    def __init__(self, db: Database, keyring: KeyRing) -> None:
        self.db = db
        self.keyring = keyring

    # -- teams and members ----------------------------------------------------------------

    async def first_team(self) -> t.Team | None:
        async with self.db.session() as s:
            return await s.scalar(select(t.Team).order_by(t.Team.created_at).limit(1))

    async def team_by_slug(self, slug: str) -> t.Team | None:
        async with self.db.session() as s:
            return await s.scalar(select(t.Team).where(t.Team.slug == slug))

    async def team_slug(self, team_id: str) -> str | None:
        async with self.db.session() as s:
            return await s.scalar(select(t.Team.slug).where(t.Team.id == team_id))

    async def create_team(
        self,
        *,
        team_id: str,
        slug: str,
        name: str,
        owner_id: str,
        credential: str,
        digest: str,
        now: datetime,
    ) -> bool:
        """A team with one owner (``owner``) holding one credential; False if the slug is taken."""
        try:
            async with self.db.session.begin() as s:
                s.add(t.Team(id=team_id, slug=slug, name=name, created_at=now))
                await s.flush()
                s.add(
                    t.Member(
                        id=owner_id, team_id=team_id, name="owner", role="owner", created_at=now
                    )
                )
                await s.flush()
                s.add(new_credential(owner_id, credential, digest, now, None))
        except IntegrityError:
            return False
        return True

    async def create_member(
        self,
        *,
        team_id: str,
        member_id: str,
        name: str,
        role: str,
        digest: str,
        now: datetime,
        expires: datetime | None,
    ) -> bool:
        """A member with its first credential (``initial``); False if the name is taken."""
        try:
            async with self.db.session.begin() as s:
                s.add(t.Member(id=member_id, team_id=team_id, name=name, role=role, created_at=now))
                await s.flush()
                s.add(new_credential(member_id, "initial", digest, now, expires))
        except IntegrityError:
            return False
        return True

    async def members(self, team_id: str) -> list[tuple[t.Member, list[t.MemberCredential]]]:
        """A team's members in creation order, each with its live (unrevoked) credentials."""
        async with self.db.session() as s:
            rows = (
                await s.scalars(
                    select(t.Member)
                    .where(t.Member.team_id == team_id)
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
        return [(r, by_member.get(r.id, [])) for r in rows]

    async def delete_member(
        self, team_id: str, member_id: str, check: Callable[[t.Member, int], None]
    ) -> t.Member | None:
        """Delete a member of ``team_id`` and all its credentials; None if there is none.

        ``check(member, owners)`` runs first, inside the transaction, with the team's owner
        count; it raises to refuse. The team row is locked first, so two deletions of owners at
        once are serialized (a row lock on PostgreSQL, the write lock on SQLite) and the count
        is never stale.
        """
        async with self.db.session.begin() as s:
            await s.execute(update(t.Team).where(t.Team.id == team_id).values(slug=t.Team.slug))
            row = await s.get(t.Member, member_id)
            if row is None or row.team_id != team_id:
                return None
            owners = await s.scalar(
                select(func.count())
                .select_from(t.Member)
                .where(t.Member.team_id == team_id, t.Member.role == "owner")
            )
            check(row, owners or 0)
            await s.execute(
                delete(t.MemberCredential).where(t.MemberCredential.member_id == row.id)
            )
            await s.delete(row)
        return row

    async def replace_credential(
        self,
        member_id: str,
        credential_id: str,
        digest: str,
        now: datetime,
        expiry: Callable[[t.MemberCredential], datetime | None],
    ) -> t.MemberCredential | None:
        """Revoke a member's live credential and add one (same name, ``expiry(old)``) in one
        transaction; None if that credential is not the member's or not live."""
        async with self.db.session.begin() as s:
            old = await s.get(t.MemberCredential, credential_id)
            if old is None or old.member_id != member_id or old.revoked_at is not None:
                return None
            expires = expiry(old)
            old.revoked_at = now
            new = new_credential(member_id, old.name, digest, now, expires)
            s.add(new)
        return new

    # -- projects and environments --------------------------------------------------------

    async def create_project(
        self,
        *,
        team_id: str,
        project_id: str,
        slug: str,
        name: str,
        environments: Sequence[str],
        now: datetime,
    ) -> bool:
        """A project with its environments; False if the slug is taken."""
        try:
            async with self.db.session.begin() as s:
                s.add(
                    t.Project(id=project_id, team_id=team_id, slug=slug, name=name, created_at=now)
                )
                await s.flush()
                for env in environments:
                    s.add(
                        t.Environment(
                            id=new_id("env"), project_id=project_id, slug=env, created_at=now
                        )
                    )
        except IntegrityError:
            return False
        return True

    async def project(self, team_id: str, slug: str) -> t.Project | None:
        async with self.db.session() as s:
            return await s.scalar(
                select(t.Project).where(t.Project.team_id == team_id, t.Project.slug == slug)
            )

    async def projects(self, team_id: str) -> Sequence[t.Project]:
        async with self.db.session() as s:
            return (
                await s.scalars(
                    select(t.Project).where(t.Project.team_id == team_id).order_by(t.Project.slug)
                )
            ).all()

    async def project_slugs(self, team_id: str) -> dict[str, str]:
        """Project id → slug, for one team (to name projects in listings)."""
        async with self.db.session() as s:
            return await project_slugs(s, team_id)

    async def environments(self, project_id: str) -> Sequence[str]:
        async with self.db.session() as s:
            return (
                await s.scalars(
                    select(t.Environment.slug).where(t.Environment.project_id == project_id)
                )
            ).all()

    async def create_environment(self, project_id: str, slug: str, now: datetime) -> bool:
        """False if the project has an environment of that slug."""
        try:
            async with self.db.session.begin() as s:
                s.add(
                    t.Environment(
                        id=new_id("env"), project_id=project_id, slug=slug, created_at=now
                    )
                )
        except IntegrityError:
            return False
        return True

    # -- connectors -----------------------------------------------------------------------

    async def connector(self, team_id: str, uid: str) -> t.Connector | None:
        """A live (not removed) connector of the team, by uid."""
        async with self.db.session() as s:
            return await s.scalar(
                select(t.Connector).where(
                    t.Connector.team_id == team_id,
                    t.Connector.uid == uid,
                    t.Connector.deleted_at.is_(None),
                )
            )

    async def connector_by_id(self, team_id: str, connector_id: str) -> t.Connector | None:
        """A live (not removed) connector of the team, by id (``con_…``)."""
        async with self.db.session() as s:
            return await s.scalar(
                select(t.Connector).where(
                    t.Connector.team_id == team_id,
                    t.Connector.id == connector_id,
                    t.Connector.deleted_at.is_(None),
                )
            )

    async def connectors(
        self,
        team_id: str,
        *,
        service: str | None = None,
        project_id: str | None = None,
        search: str | None = None,
    ) -> Sequence[t.Connector]:
        """Live connectors by uid; ``search`` matches uid or type (case-insensitive, literal)."""
        query = select(t.Connector).where(
            t.Connector.team_id == team_id, t.Connector.deleted_at.is_(None)
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
        if project_id is not None:
            query = query.where(
                t.Connector.id.in_(
                    select(t.ProjectLink.connector_id).where(t.ProjectLink.project_id == project_id)
                )
            )
        async with self.db.session() as s:
            return (await s.scalars(query.order_by(t.Connector.uid))).all()

    async def links_of(
        self, team_id: str, connector_ids: Sequence[str]
    ) -> tuple[dict[str, list[t.ProjectLink]], dict[str, str]]:
        """The links of these connectors by connector id, and the team's project slugs by id."""
        async with self.db.session() as s:
            rows = (
                await s.scalars(
                    select(t.ProjectLink).where(t.ProjectLink.connector_id.in_(list(connector_ids)))
                )
            ).all()
            projects = await project_slugs(s, team_id)
        by_connector: dict[str, list[t.ProjectLink]] = {}
        for row in rows:
            by_connector.setdefault(row.connector_id, []).append(row)
        return by_connector, projects

    async def create_connector(
        self,
        *,
        connector_id: str,
        team_id: str,
        uid: str,
        service: str,
        name: str,
        type_: str,
        config: dict[str, Any],
        secrets: dict[str, str],
        now: datetime,
    ) -> bool:
        """False if the team has a connector of that uid."""
        try:
            async with self.db.session.begin() as s:
                s.add(
                    t.Connector(
                        id=connector_id,
                        team_id=team_id,
                        uid=uid,
                        service=service,
                        name=name,
                        type=type_,
                        config=config,
                        secrets=self.keyring.encrypt_json(secrets, aad=secrets_aad(connector_id)),
                        created_at=now,
                        updated_at=now,
                        deleted_at=None,
                    )
                )
        except IntegrityError:
            return False
        return True

    def connector_secrets(self, row: t.Connector) -> dict[str, str]:
        return self.keyring.decrypt_json(row.secrets, aad=secrets_aad(row.id))

    async def update_connector(
        self, connector_id: str, config: dict[str, Any], secrets: dict[str, str], now: datetime
    ) -> None:
        async with self.db.session.begin() as s:
            fresh = await s.get(t.Connector, connector_id)
            if fresh is None:
                raise NotFound("the connector was removed")
            fresh.config = config
            fresh.secrets = self.keyring.encrypt_json(secrets, aad=secrets_aad(connector_id))
            fresh.updated_at = now

    async def remove_connector(
        self, connector_id: str, now: datetime, check: Callable[[int], None]
    ) -> int:
        """Detach every link and mark the connector removed; returns how many links it had.

        ``check(links)`` runs first, in the transaction, and raises to refuse."""
        async with self.db.session.begin() as s:
            links = (
                await s.scalars(
                    select(t.ProjectLink).where(t.ProjectLink.connector_id == connector_id)
                )
            ).all()
            check(len(links))
            for link in links:
                await s.delete(link)
            fresh = await s.get(t.Connector, connector_id)
            if fresh is None:
                raise NotFound("the connector was removed")
            fresh.deleted_at = now
        return len(links)

    # -- links ----------------------------------------------------------------------------

    async def upsert_link(
        self,
        connector_id: str,
        project_id: str,
        environments: Sequence[str],
        policy: dict[str, Any],
        now: datetime,
    ) -> list[str]:
        """Attach a connector to a project (adding environments to an existing link, replacing
        its policy); returns the link's environments."""
        async with self.db.session.begin() as s:
            link = await s.scalar(
                select(t.ProjectLink).where(
                    t.ProjectLink.connector_id == connector_id,
                    t.ProjectLink.project_id == project_id,
                )
            )
            if link is None:
                link = t.ProjectLink(
                    id=new_id("lnk"),
                    connector_id=connector_id,
                    project_id=project_id,
                    environments=sorted(environments),
                    policy=policy,
                    created_at=now,
                    updated_at=now,
                )
                s.add(link)
            else:
                link.environments = sorted(set(link.environments) | set(environments))
                link.policy = policy
                link.updated_at = now
            return list(link.environments)

    async def remove_link(
        self, connector_id: str, project_id: str, environments: Sequence[str] | None, now: datetime
    ) -> list[str] | None:
        """Detach ``environments`` (all when none); returns the environments left (empty: the
        link is gone), or None if there is no link."""
        async with self.db.session.begin() as s:
            link = await s.scalar(
                select(t.ProjectLink).where(
                    t.ProjectLink.connector_id == connector_id,
                    t.ProjectLink.project_id == project_id,
                )
            )
            if link is None:
                return None
            remaining: list[str] = []
            if environments:
                remaining = [e for e in link.environments if e not in set(environments)]
            if remaining:
                link.environments = remaining
                link.updated_at = now
            else:
                await s.delete(link)
        return remaining

    # -- trust bindings -------------------------------------------------------------------

    async def create_binding(
        self, row: t.TrustBinding, now: datetime, check_owner: Callable[[str | None], None]
    ) -> None:
        """Claim the binding's (issuer, audience) pair for its team, or find who holds it, and
        add the binding. ``check_owner(team_id)`` runs with the pair's owner and raises to refuse.

        The unique key decides between two teams creating at once; the row lock orders this
        against a concurrent delete of the pair's last binding (which releases the pair).
        """
        key = trust_audience_key(row.issuer, row.audience)
        insert = pg_insert if self.db.is_postgres else sqlite_insert
        async with self.db.session.begin() as s:
            owner: str | None = None
            for _attempt in range(2):
                await s.execute(
                    insert(t.TrustAudience)
                    .values(
                        key_hash=key,
                        issuer=row.issuer,
                        audience=row.audience,
                        team_id=row.team_id,
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
            check_owner(owner)
            s.add(row)

    async def bindings(
        self, team_id: str, project_id: str | None = None
    ) -> tuple[list[tuple[t.TrustBinding, str]], set[str]]:
        """The team's bindings with their project slugs, and the pair keys the team owns."""
        query = (
            select(t.TrustBinding, t.Project.slug)
            .join(t.Project, t.Project.id == t.TrustBinding.project_id)
            .where(t.TrustBinding.team_id == team_id)
        )
        if project_id is not None:
            query = query.where(t.TrustBinding.project_id == project_id)
        async with self.db.session() as s:
            rows = (await s.execute(query.order_by(t.TrustBinding.created_at))).all()
            owned = set(
                (
                    await s.scalars(
                        select(t.TrustAudience.key_hash).where(t.TrustAudience.team_id == team_id)
                    )
                ).all()
            )
        return [(row, slug) for row, slug in rows], owned

    async def delete_binding(self, team_id: str, binding_id: str) -> bool:
        """Delete a binding of the team, releasing its pair with the pair's last binding."""
        async with self.db.session.begin() as s:
            row = await s.get(t.TrustBinding, binding_id)
            if row is None or row.team_id != team_id:
                return False
            key = trust_audience_key(row.issuer, row.audience)
            pair = await s.scalar(
                select(t.TrustAudience).where(t.TrustAudience.key_hash == key).with_for_update()
            )
            await s.delete(row)
            await s.flush()
            if pair is not None and pair.team_id == team_id:
                remaining = await s.scalar(
                    select(func.count())
                    .select_from(t.TrustBinding)
                    .where(
                        t.TrustBinding.team_id == team_id,
                        t.TrustBinding.issuer == row.issuer,
                        t.TrustBinding.audience == row.audience,
                    )
                )
                if not remaining:  # the pair's last binding: release it for any team
                    await s.delete(pair)
        return True

    # -- access tokens --------------------------------------------------------------------

    async def add_access_token(self, row: t.AccessToken) -> None:
        async with self.db.session.begin() as s:
            s.add(row)

    async def access_tokens(
        self, team_id: str, project_id: str | None = None
    ) -> list[tuple[t.AccessToken, str]]:
        """The team's access tokens in creation order, with their project slugs."""
        query = (
            select(t.AccessToken, t.Project.slug)
            .join(t.Project, t.Project.id == t.AccessToken.project_id)
            .where(t.AccessToken.team_id == team_id)
        )
        if project_id is not None:
            query = query.where(t.AccessToken.project_id == project_id)
        async with self.db.session() as s:
            rows = (await s.execute(query.order_by(t.AccessToken.created_at))).all()
        return [(row, slug) for row, slug in rows]

    async def revoke_access_token(self, team_id: str, token_id: str, now: datetime) -> str | None:
        """Revoke (once) an access token of the team; returns its hash, or None if there is none."""
        async with self.db.session.begin() as s:
            row = await s.get(t.AccessToken, token_id)
            if row is None or row.team_id != team_id:
                return None
            if row.revoked_at is None:
                row.revoked_at = now
            return row.token_hash


async def project_slugs(s: AsyncSession, team_id: str) -> dict[str, str]:
    """The team's project slugs by project id, in the session ``s``."""
    rows = await s.execute(select(t.Project.id, t.Project.slug).where(t.Project.team_id == team_id))
    return dict(rows.all())
