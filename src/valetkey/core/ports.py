"""What the domain needs from storage and from the other replicas. ``valetkey.store`` implements it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

from valetkey.core.models import Connector, Identity, Link, Subject, TokenRequest
from valetkey.providers.base import MintedToken


@dataclass(frozen=True, slots=True)
class ConnectorView:
    """A connector with its links, keyed by project id: all the exchange needs to decide."""

    connector: Connector
    links: Mapping[str, Link]


@dataclass(frozen=True, slots=True)
class CachedMint:
    token: MintedToken
    issued_id: str
    #: When the broker stops handing this token out (provider expiry, capped by the link's lifetime).
    serve_until: datetime | None


@dataclass(frozen=True, slots=True)
class RevocationTarget:
    issued_id: str
    subject: Subject
    project_id: str
    environment: str
    #: The token itself, when the broker still holds it (encrypted) and can revoke it at the provider.
    token: MintedToken | None = field(repr=False)


class ExchangeStore(Protocol):
    async def connector_view(self, team_id: str, uid: str) -> ConnectorView | None: ...

    async def load_cached(self, key_hash: str) -> CachedMint | None: ...

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
        """Write the ledger row and the encrypted cache row together; return the issued token id."""
        ...

    async def revocation_targets(
        self,
        team_id: str,
        connector_id: str,
        *,
        subject: Subject | None,
        project_id: str | None,
        environment: str | None,
        now: datetime,
    ) -> Sequence[RevocationTarget]:
        """Active (unrevoked, unexpired) issued tokens matching the filters."""
        ...

    async def mark_revoked(self, outcomes: Mapping[str, str], now: datetime) -> int:
        """Mark issued tokens revoked with their provider outcome; drop their cache rows. Returns rows changed."""
        ...


@dataclass(frozen=True, slots=True)
class Invalidation:
    """A cache entry other replicas must drop."""

    kind: Literal["connector", "tokens", "identity"]
    team_id: str | None = None
    uid: str | None = None
    connector_id: str | None = None
    subject_key: str | None = None
    token_hash: str | None = None

    def to_json(self) -> dict[str, str | None]:
        return {
            "kind": self.kind,
            "team_id": self.team_id,
            "uid": self.uid,
            "connector_id": self.connector_id,
            "subject_key": self.subject_key,
            "token_hash": self.token_hash,
        }


InvalidationHandler = Callable[[Invalidation], None]


class InvalidationBus(Protocol):
    """Delivers invalidations to every replica, this one included."""

    def subscribe(self, handler: InvalidationHandler) -> None: ...

    async def publish(self, invalidation: Invalidation) -> None: ...


class LocalBus:
    """The single-process bus (SQLite): handlers run at once."""

    def __init__(self) -> None:
        self._handlers: list[InvalidationHandler] = []

    def subscribe(self, handler: InvalidationHandler) -> None:
        self._handlers.append(handler)

    async def publish(self, invalidation: Invalidation) -> None:
        for handler in self._handlers:
            handler(invalidation)


Loader = Callable[[], Awaitable[CachedMint]]
