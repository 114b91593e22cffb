"""The audit and usage queries behind the reports (``services.reports``): SQL only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from valetkey.store import tables as t
from valetkey.store.db import Database
from valetkey.store.management import project_slugs

__all__ = ["AuditFilter", "ReportsRepository"]


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which audit events to read (``project_id`` already resolved from its slug)."""

    connector: str | None = None
    project_id: str | None = None
    decision: str | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 100


class ReportsRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def audit_events(
        self, team_id: str, where: AuditFilter
    ) -> tuple[Sequence[t.AuditEvent], dict[str, str]]:
        """The team's audit events, newest first, and its project slugs by id."""
        query = select(t.AuditEvent).where(t.AuditEvent.team_id == team_id)
        if where.connector:
            query = query.where(t.AuditEvent.connector_uid == where.connector)
        if where.project_id is not None:
            query = query.where(t.AuditEvent.project_id == where.project_id)
        if where.decision:
            query = query.where(t.AuditEvent.decision == where.decision)
        if where.action:
            query = query.where(t.AuditEvent.action == where.action)
        if where.since:
            query = query.where(t.AuditEvent.at >= where.since)
        if where.until:
            query = query.where(t.AuditEvent.at <= where.until)
        async with self.db.session() as s:
            rows = (
                await s.scalars(query.order_by(t.AuditEvent.id.desc()).limit(where.limit))
            ).all()
            projects = await project_slugs(s, team_id)
        return rows, projects

    async def usage(self, team_id: str, month: str) -> dict[str, int]:
        """The team's counters for ``month`` (``YYYY-MM``), by metric."""
        async with self.db.session() as s:
            rows = (
                await s.execute(
                    select(t.UsageCounter.metric, func.sum(t.UsageCounter.count))
                    .where(t.UsageCounter.team_id == team_id, t.UsageCounter.month == month)
                    .group_by(t.UsageCounter.metric)
                )
            ).all()
        return {metric: int(n) for metric, n in rows}
