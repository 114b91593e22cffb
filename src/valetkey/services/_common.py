"""What every management service shares: its dependencies, the role check, the audit trail."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from valetkey.core.audit import AuditEvent, AuditLog
from valetkey.core.clock import Clock
from valetkey.core.models import (
    STANDARD_ENVIRONMENTS,
    Member,
    Role,
    is_connector_id,
    parse_uid,
)
from valetkey.core.ports import InvalidationBus
from valetkey.errors import Forbidden, InvalidRequest, NotFound
from valetkey.store import tables as t
from valetkey.store.management import ManagementRepository
from valetkey.store.repo import Repository


@dataclass(frozen=True, slots=True)
class Deps:
    """The repositories and ports a service works with."""

    store: ManagementRepository
    #: Member credentials by hash (shared with identity verification).
    credentials: Repository
    audit: AuditLog
    bus: InvalidationBus
    clock: Clock


def require(actor: Member, *, owner: bool = False) -> None:
    """The services' own authorization (the second layer, behind the routes' role table):
    writes need an owner or member, some writes an owner."""
    if owner and actor.role is not Role.OWNER:
        raise Forbidden("only owners can do this")
    if not actor.role.can_write():
        raise Forbidden("viewers have read-only access")


class Service:
    def __init__(self, deps: Deps) -> None:
        self._deps = deps
        self._store = deps.store
        self._bus = deps.bus
        self._clock = deps.clock

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
        self._deps.audit.record(
            AuditEvent(
                team_id=actor.team_id,
                at=self._clock.now(),
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

    async def _flush_audit(self) -> None:
        """Write what is recorded before reading it back; if the store cannot take writes now,
        answer with what is written (the writer logged and counted the failure, and retries)."""
        with contextlib.suppress(Exception):
            await self._deps.audit.flush()

    async def _project(self, team_id: str, slug: str) -> t.Project:
        row = await self._store.project(team_id, slug)
        if row is None:
            raise NotFound(
                f"no project {slug}",
                project=slug,
                hint="`valetkey projects list` (GET /v1/projects) lists the projects.",
            )
        return row

    async def _connector(self, team_id: str, uid: str) -> t.Connector:
        """A connector named by its uid (``service/name``) or its id (``con_…``)."""
        if is_connector_id(uid):
            row = await self._store.connector_by_id(team_id, uid)
        else:
            parse_uid(uid)
            row = await self._store.connector(team_id, uid)
        if row is None:
            raise NotFound(
                f"no connector {uid}",
                connector=uid,
                hint="`valetkey connect list` (GET /v1/connectors) lists the connectors.",
            )
        return row

    async def _environments(self, project_id: str) -> list[str]:
        """A project's environments: the standard ones in their order, then the others by name."""
        order = {e: i for i, e in enumerate(STANDARD_ENVIRONMENTS)}
        rows = await self._store.environments(project_id)
        return sorted(rows, key=lambda e: (order.get(e, len(order)), e))

    async def _check_environments(
        self, project_id: str, project: str, environments: Sequence[str]
    ) -> None:
        known = await self._environments(project_id)
        for env in environments:
            if env not in known:
                raise NotFound(
                    f"project {project} has no environment {env}; "
                    f"its environments: {', '.join(known)}",
                    environment=env,
                    environments=known,
                    hint=f"`valetkey environments create {_printable(env)} --project {project}` "
                    "adds one.",
                )


def _printable(value: str) -> str:
    """A short, shell-safe rendering of a name the caller gave (for a hint)."""
    return value if _SLUGGISH.match(value) else "SLUG"


_SLUGGISH = re.compile(r"^[a-z0-9-]{1,40}$")



def string_list(values: Any, what: str) -> list[str]:
    if (
        isinstance(values, str)
        or not isinstance(values, Sequence)
        or not all(isinstance(v, str) and v for v in values)
    ):
        raise InvalidRequest(f"{what} must be a list of non-empty strings", field=what)
    if len(values) > 100:
        raise InvalidRequest(f"at most 100 {what}", field=what)
    return list(values)
