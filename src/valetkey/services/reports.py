"""Audit and usage reports: what happened in a team, and how much of it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from valetkey.core.models import Member
from valetkey.errors import InvalidRequest
from valetkey.services._common import Deps, Service
from valetkey.store.reports import AuditFilter, ReportsRepository


@dataclass(frozen=True, slots=True)
class AuditRecord:
    id: int
    at: datetime
    actor: str
    action: str
    decision: str
    reason: str
    connector: str | None
    #: The project's slug (its id if the project is gone).
    project: str | None
    environment: str | None
    subject: str | None
    details: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class UsageRecord:
    month: str
    #: Metric (as the audit log counts it, e.g. ``token_requests``) → count.
    counters: Mapping[str, int]


class ReportsService(Service):
    def __init__(self, deps: Deps, reports: ReportsRepository) -> None:
        super().__init__(deps)
        self._reports = reports

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
    ) -> list[AuditRecord]:
        await self._flush_audit()
        if decision is not None and decision not in ("allowed", "denied"):
            raise InvalidRequest("decision must be allowed or denied", field="decision")
        if not 1 <= limit <= 1000:
            raise InvalidRequest("limit must be from 1 to 1000", field="limit")
        project_id = None if not project else (await self._project(actor.team_id, project)).id
        rows, projects = await self._reports.audit_events(
            actor.team_id,
            AuditFilter(connector, project_id, decision, action, since, until, limit),
        )
        return [
            AuditRecord(
                id=r.id,
                at=r.at,
                actor=r.actor,
                action=r.action,
                decision=r.decision,
                reason=r.reason,
                connector=r.connector_uid,
                project=projects.get(r.project_id or "", r.project_id),
                environment=r.environment,
                subject=r.subject,
                details=r.details,
            )
            for r in rows
        ]

    async def usage(self, actor: Member, month: str | None = None) -> UsageRecord:
        await self._flush_audit()
        month = month or self._clock.now().strftime("%Y-%m")
        if not (
            len(month) == 7
            and month[4] == "-"
            and month[:4].isdigit()
            and month[5:].isdigit()
            and 1 <= int(month[5:]) <= 12
        ):
            raise InvalidRequest("month must look like 2026-11", field="month")
        return UsageRecord(month, await self._reports.usage(actor.team_id, month))
