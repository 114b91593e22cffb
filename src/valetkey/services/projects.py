"""Projects and environments, and a member acting directly on a project's environment."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from valetkey.core.models import STANDARD_ENVIRONMENTS, Identity, Member, check_slug
from valetkey.errors import Conflict, InvalidRequest
from valetkey.services._common import Service, require
from valetkey.store.ids import new_id


@dataclass(frozen=True, slots=True)
class ProjectRecord:
    id: str
    slug: str
    name: str
    environments: tuple[str, ...]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class EnvironmentRecord:
    project: str
    slug: str


class ProjectsService(Service):
    async def create_project(
        self, actor: Member, slug: str, name: str | None = None
    ) -> ProjectRecord:
        require(actor)
        check_slug(slug, "project")
        project_id = new_id("prj")
        if not await self._store.create_project(
            team_id=actor.team_id,
            project_id=project_id,
            slug=slug,
            name=name or slug,
            environments=STANDARD_ENVIRONMENTS,
            now=self._clock.now(),
        ):
            raise Conflict(f"project {slug} exists", field="project")
        self._audit(actor, "project.create", project_id=project_id, slug=slug)
        return await self.get_project(actor, slug)

    async def get_project(self, actor: Member, slug: str) -> ProjectRecord:
        row = await self._project(actor.team_id, slug)
        return ProjectRecord(
            row.id, row.slug, row.name, tuple(await self._environments(row.id)), row.created_at
        )

    async def list_projects(self, actor: Member) -> list[ProjectRecord]:
        return [
            ProjectRecord(r.id, r.slug, r.name, tuple(await self._environments(r.id)), r.created_at)
            for r in await self._store.projects(actor.team_id)
        ]

    async def create_environment(self, actor: Member, project: str, slug: str) -> EnvironmentRecord:
        require(actor)
        check_slug(slug, "environment")
        row = await self._project(actor.team_id, project)
        if not await self._store.create_environment(row.id, slug, self._clock.now()):
            raise Conflict(f"environment {slug} exists in {project}", field="environment")
        self._audit(actor, "environment.create", project_id=row.id, environment=slug)
        return EnvironmentRecord(project, slug)

    async def list_environments(self, actor: Member, project: str) -> list[str]:
        row = await self._project(actor.team_id, project)
        return await self._environments(row.id)

    async def identity_for(self, actor: Member, project: Any, environment: Any) -> Identity:
        """An owner or member acting directly on a project's environment (token import)."""
        require(actor)
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

    def record(self, actor: Member, action: str, **fields: Any) -> None:
        """Record a management event done outside the services (e.g. a development identity issued)."""
        self._audit(actor, action, **fields)
