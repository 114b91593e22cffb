"""A consent service and an exchange for users, over the in-memory ports of ``memory_ports``."""

from __future__ import annotations

from dataclasses import dataclass, field

from exchange_helpers import (
    IDENTITY,
    START,
    Lent,
    MemoryAuditStore,
    MemoryExchangeStore,
    connector_of,
)
from memory_ports import MemoryConsentStore, MemoryGrantStore, MemoryNotifier, UserProvider

from valetkey.core.audit import AuditLog
from valetkey.core.clock import FrozenClock
from valetkey.core.consent import ConsentService
from valetkey.core.exchange import ExchangeService
from valetkey.core.models import Connector, Link, Policy
from valetkey.core.ports import ConnectorView, LocalBus
from valetkey.core.providers import UserFlows
from valetkey.providers.registry import ProviderRegistry

CONNECTOR = connector_of("users")


@dataclass
class Core:
    clock: FrozenClock
    provider: UserProvider
    grants: MemoryGrantStore
    store: MemoryConsentStore
    notifier: MemoryNotifier
    audit: AuditLog
    consent: ConsentService
    audit_store: MemoryAuditStore
    webhooks: dict[str, str] = field(default_factory=dict)

    async def actions(self) -> list[tuple[str, str, str]]:
        """The audit events written so far: (action, decision, reason)."""
        await self.audit.flush()
        return [(e.event.action, e.event.decision, e.event.reason) for e in self.audit_store.events]

    async def lookup(self, team_id: str, connector_id: str) -> tuple[Connector, UserFlows]:
        flows = self.provider.user_flows()
        assert flows is not None
        return CONNECTOR, flows

    async def webhook_for(
        self,
        connector_id: str,
        project_id: str,
        environment: str,
        user_id: str,
        issuer: str | None = None,
    ) -> str | None:
        return self.webhooks.get(user_id)

    def exchange(self, *, confirm: bool = True) -> ExchangeService:
        """A replica's exchange over this core's grants (each call: another replica)."""
        link = Link(
            "lnk_1",
            CONNECTOR.id,
            IDENTITY.project_id,
            (IDENTITY.environment,),
            Policy(subjects=("user",), confirm_consent=confirm),
        )
        bus = LocalBus()
        service = ExchangeService(
            store=MemoryExchangeStore(ConnectorView(CONNECTOR, {IDENTITY.project_id: link})),
            providers=ProviderRegistry([self.provider]),
            audit=self.audit,
            bus=bus,
            clock=self.clock,
            ctx=Lent(self.clock),
        )
        service.attach_consent(self.grants, self.consent, self.notifier, self.webhook_for)
        return service


def build_core() -> Core:
    clock = FrozenClock(START)
    provider = UserProvider(clock)
    grants = MemoryGrantStore(clock)
    store = MemoryConsentStore()
    notifier = MemoryNotifier()
    audit_store = MemoryAuditStore()
    audit = AuditLog(audit_store, clock)
    consent = ConsentService(
        store=store,
        grants=grants,
        audit=audit,
        clock=clock,
        ctx=Lent(clock),
        callback_url="https://broker.example/v1/connect/callback",
        device_url="https://broker.example/device",
        notifier=notifier,
    )
    return Core(clock, provider, grants, store, notifier, audit, consent, audit_store)
