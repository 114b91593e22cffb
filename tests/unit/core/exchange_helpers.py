"""An exchange built on in-memory ports, and a provider plug-in that counts what it is asked."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from valetkey.core.audit import AuditLog, ChainedEvent
from valetkey.core.clock import FrozenClock
from valetkey.core.exchange import ExchangeService
from valetkey.core.models import (
    Connector,
    Identity,
    Link,
    Policy,
    Subject,
    SubjectType,
    TokenRequest,
)
from valetkey.core.ports import CachedMint, ConnectorView, LocalBus, RevocationTarget, RevokedSet
from valetkey.core.providers import (
    Capabilities,
    ConfigField,
    MintedToken,
    ProviderContext,
    RevokeResult,
    TokenSet,
    UserFlows,
    ValidatedConfig,
)
from valetkey.providers.registry import ProviderRegistry

START = datetime(2030, 1, 1, tzinfo=UTC)
IDENTITY = Identity(
    team_id="team_1",
    project_id="prj_1",
    project_slug="web",
    environment="production",
    kind="development",
    subject="dev",
    expires_at=None,
)


@dataclass(frozen=True)
class _LedgerRow:
    connector_id: str
    subject: Subject
    project_id: str
    environment: str
    key_hash: str
    token: MintedToken = field(repr=False)
    serve_until: datetime | None
    revoked: str | None = None


class MemoryExchangeStore:
    """``ExchangeStore`` in memory: one connector view, the shared cache and the ledger."""

    def __init__(self, view: ConnectorView) -> None:
        self.view = view
        self.cache: dict[str, CachedMint] = {}
        self.issued: list[str] = []
        self.ledger: dict[str, _LedgerRow] = {}
        self.view_reads = 0

    async def connector_view(self, team_id: str, uid: str) -> ConnectorView | None:
        self.view_reads += 1
        connector = self.view.connector
        ours = team_id == connector.team_id and uid in (connector.uid, connector.id)
        return self.view if ours else None

    async def load_cached(self, key_hash: str) -> CachedMint | None:
        return self.cache.get(key_hash)

    async def record_mint(
        self,
        *,
        identity: Identity,
        connector: Connector,
        request: TokenRequest,
        minted: MintedToken,
        key_hash: str,
        serve_until: datetime | None,
    ) -> str:
        issued_id = f"tok_{len(self.issued) + 1}"
        self.issued.append(issued_id)
        self.ledger[issued_id] = _LedgerRow(
            connector.id,
            request.subject,
            identity.project_id,
            identity.environment,
            key_hash,
            minted,
            serve_until,
        )
        self.cache[key_hash] = CachedMint(minted, issued_id, serve_until)
        return issued_id

    async def revoke_issued(
        self,
        team_id: str,
        connector_id: str,
        *,
        subject: Subject | None,
        project_id: str | None,
        environment: str | None,
        now: datetime,
        at_provider: bool,
    ) -> RevokedSet:
        found = skipped = 0
        targets = []
        for issued_id, row in list(self.ledger.items()):
            if not (
                team_id == self.view.connector.team_id
                and row.connector_id == connector_id
                and row.revoked is None
                and (row.serve_until is None or row.serve_until > now)
                and subject in (None, row.subject)
                and project_id in (None, row.project_id)
                and environment in (None, row.environment)
            ):
                continue
            found += 1
            held = row.key_hash in self.cache
            if at_provider and held:
                targets.append(
                    RevocationTarget(issued_id, row.subject, row.project_id, row.environment, row.token)
                )
                self.ledger[issued_id] = replace(row, revoked="pending")
                continue
            skipped += 1
            self.ledger[issued_id] = replace(row, revoked="skipped")
            self.cache.pop(row.key_hash, None)
        return RevokedSet(found=found, skipped=skipped, targets=targets)

    async def record_revocations(self, outcomes: Mapping[str, str]) -> None:
        for issued_id, outcome in outcomes.items():
            row = self.ledger[issued_id]
            self.ledger[issued_id] = replace(row, revoked=outcome)
            self.cache.pop(row.key_hash, None)


class MemoryAuditStore:
    """``AuditStore`` in memory."""

    def __init__(self) -> None:
        self.events: list[ChainedEvent] = []

    async def append_audit(self, events: Sequence[ChainedEvent]) -> None:
        self.events.extend(events)

    async def add_usage(self, counts: Mapping[tuple[str, str, str], int]) -> None:
        return None


@dataclass
class Lent:
    """A ``ProviderContext`` with no HTTP client: these providers make no request."""

    clock: FrozenClock
    http: None = None


class CountingProvider:
    """A provider plug-in that mints a token per call and counts every question it is asked.

    ``subjects`` are what it declares; ``flows`` what ``user_flows()`` returns (a factory, since
    the flows are the provider itself).
    """

    type: ClassVar[str] = "counting"
    services: ClassVar[tuple[str, ...]] = ("counting",)
    config_fields: ClassVar[tuple[ConfigField, ...]] = ()

    def __init__(
        self,
        subjects: tuple[SubjectType, ...] = ("app",),
        *,
        exchange: bool = False,
    ) -> None:
        self.subjects = subjects
        self.exchange = exchange
        self.calls: dict[str, int] = {}

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def capabilities(self, connector: Connector) -> Capabilities:
        self._count("capabilities")
        return Capabilities(self.subjects, scopable=True, short_lived=True, revocation=False)

    def validate_config(
        self, data: Mapping[str, Any], previous: ValidatedConfig | None = None
    ) -> ValidatedConfig:
        return ValidatedConfig(config=dict(data), secrets={})

    def user_flows(self) -> UserFlows | None:
        self._count("user_flows")
        return UserFlows(exchange=self) if self.exchange else None

    async def mint(
        self, ctx: ProviderContext[object], connector: Connector, request: TokenRequest
    ) -> MintedToken:
        self._count("mint")
        return MintedToken(
            token=f"minted-{self.calls['mint']}",
            expires_at=ctx.clock.now() + timedelta(hours=1),
            scopes=request.scopes,
        )

    async def revoke(
        self, ctx: ProviderContext[object], connector: Connector, token: MintedToken
    ) -> RevokeResult:
        return RevokeResult(revoked=False, skipped=True)

    async def token_exchange(
        self,
        ctx: ProviderContext[object],
        connector: Connector,
        *,
        subject_token: str,
        subject_token_type: str,
        scopes: tuple[str, ...] | None,
        audience: str | None,
        resources: tuple[str, ...] | None,
    ) -> TokenSet:
        self._count("token_exchange")
        return TokenSet(
            access_token="exchanged", expires_at=ctx.clock.now() + timedelta(hours=1), scopes=scopes
        )


def connector_of(
    provider_type: str, config: Mapping[str, Any] | None = None, **secrets: str
) -> Connector:
    return Connector(
        id="con_1",
        team_id=IDENTITY.team_id,
        uid=f"{provider_type}/main",
        service=provider_type,
        name="main",
        type=provider_type,
        config=dict(config or {}),
        secrets=dict(secrets),
        created_at=START,
        updated_at=START,
    )


def view_of(connector: Connector, subjects: tuple[SubjectType, ...] = ("app",)) -> ConnectorView:
    link = Link(
        id="lnk_1",
        connector_id=connector.id,
        project_id=IDENTITY.project_id,
        environments=(IDENTITY.environment,),
        policy=Policy(subjects=subjects),
    )
    return ConnectorView(connector, {IDENTITY.project_id: link})


@dataclass
class Exchange:
    """A real ``ExchangeService`` over in-memory ports."""

    service: ExchangeService
    store: MemoryExchangeStore
    bus: LocalBus
    clock: FrozenClock
    audit: AuditLog = field(repr=False)


def build_exchange(provider: Any, view: ConnectorView, *, http: Any = None) -> Exchange:
    clock = FrozenClock(START)
    store = MemoryExchangeStore(view)
    bus = LocalBus()
    audit = AuditLog(MemoryAuditStore(), clock)
    ctx = Lent(clock) if http is None else _HttpLent(clock, http)
    service = ExchangeService(
        store=store,
        providers=ProviderRegistry([provider]),
        audit=audit,
        bus=bus,
        clock=clock,
        ctx=ctx,
    )
    return Exchange(service, store, bus, clock, audit)


@dataclass
class _HttpLent:
    clock: FrozenClock
    http: Any


def token_subject(subject_token: str) -> Subject:
    return Subject("token", hashlib.sha256(subject_token.encode()).hexdigest())
