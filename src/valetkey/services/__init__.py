"""The application layer: one service per management area, typed inputs, typed records.

The API (``valetkey.server``), the CLI and, later, the dashboard call these; each operation
checks the caller's role (behind the routes' own role table), validates its input with errors
naming the field, changes the store through its repository (``valetkey.store.management``),
records the audit event and publishes the invalidations other replicas need. Records are
dataclasses with Python values (``datetime``, enums); wire names and formats are the caller's.

Depends on ``valetkey.core``, ``valetkey.identity``, ``valetkey.providers`` and
``valetkey.store``; never on ``valetkey.server`` or ``valetkey.cli``.
"""

from __future__ import annotations

from dataclasses import dataclass

from valetkey.core.audit import AuditLog
from valetkey.core.clock import Clock
from valetkey.core.ports import InvalidationBus
from valetkey.crypto import KeyRing
from valetkey.providers.registry import ProviderRegistry
from valetkey.services._common import Deps
from valetkey.services.access_tokens import AccessTokensService
from valetkey.services.connectors import ConnectorsService
from valetkey.services.keys import KeysService
from valetkey.services.links import LinksService
from valetkey.services.members import Bootstrap, MembersService
from valetkey.services.projects import ProjectsService
from valetkey.services.reports import ReportsService
from valetkey.services.trust import TrustService
from valetkey.store.db import Database
from valetkey.store.keys import KeyRepository
from valetkey.store.management import ManagementRepository
from valetkey.store.repo import Repository
from valetkey.store.reports import ReportsRepository

__all__ = ["Bootstrap", "Services"]


@dataclass(frozen=True, slots=True)
class Services:
    members: MembersService
    projects: ProjectsService
    connectors: ConnectorsService
    links: LinksService
    trust: TrustService
    access_tokens: AccessTokensService
    reports: ReportsService
    keys: KeysService

    @classmethod
    def create(
        cls,
        *,
        db: Database,
        repo: Repository,
        keyring: KeyRing,
        providers: ProviderRegistry,
        audit: AuditLog,
        bus: InvalidationBus,
        clock: Clock,
    ) -> Services:
        store = ManagementRepository(db, keyring)
        deps = Deps(store=store, credentials=repo, audit=audit, bus=bus, clock=clock)
        return cls(
            members=MembersService(deps),
            projects=ProjectsService(deps),
            connectors=ConnectorsService(deps, providers),
            links=LinksService(deps, providers),
            trust=TrustService(deps),
            access_tokens=AccessTokensService(deps),
            reports=ReportsService(deps, ReportsRepository(db)),
            keys=KeysService(KeyRepository(db, keyring)),
        )
