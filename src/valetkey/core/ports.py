"""The core's ports: every contract the domain needs from the outside, in one place.

``valetkey.store`` implements the stores, the server the bus (PostgreSQL), the webhook notifier
and the lookups; ``valetkey.providers.registry`` the provider lookup. The provider plug-in
contract itself is ``valetkey.core.providers``; the audit writer's store is
``valetkey.core.audit.AuditStore``. Each contract says what it does and what it does **not**
check: whatever it does not check, its caller does.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from valetkey.core.authorizations import Mode, PendingAuthorization, Status
from valetkey.core.grants import Grant, GrantScope, Refresher, RefreshNeeded
from valetkey.core.models import Connector, Identity, Link, Subject, TokenRequest
from valetkey.core.providers import MintedToken, Provider, TokenSet, UserFlows

__all__ = [
    "CachedMint",
    "ConnectorLookup",
    "ConnectorView",
    "ConsentStore",
    "ExchangeStore",
    "GrantStore",
    "Invalidation",
    "InvalidationBus",
    "InvalidationHandler",
    "Loader",
    "LocalBus",
    "Notifier",
    "ProviderLookup",
    "RevocationTarget",
    "WebhookLookup",
]

# -- the exchange -------------------------------------------------------------------------------


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
    """Connectors, the shared token cache and the issued-token ledger."""

    async def connector_view(self, team_id: str, uid: str) -> ConnectorView | None:
        """The team's live connector named by ``uid`` (or by id) with its links; None if unknown.

        Does **not** check policy, environments or the caller: ``core.policy.evaluate`` does.
        """
        ...

    async def load_cached(self, key_hash: str) -> CachedMint | None:
        """The shared cache row for ``key_hash`` (decrypted), if any.

        Does **not** check freshness: the exchange compares ``serve_until`` with its buffer.
        """
        ...

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
        """Write the ledger row and the encrypted cache row together; return the issued token id.

        Does **not** audit or count usage: the exchange does, in memory.
        """
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
        """Active (unrevoked, unexpired) issued tokens matching the filters (None: any).

        Does **not** check who may revoke them: the exchange does.
        """
        ...

    async def mark_revoked(self, outcomes: Mapping[str, str], now: datetime) -> int:
        """Mark issued tokens revoked with their provider outcome; drop their cache rows. Returns rows changed.

        Does **not** tell other replicas: the caller publishes an ``Invalidation``.
        """
        ...


Loader = Callable[[], Awaitable[CachedMint]]


class ProviderLookup(Protocol):
    """Which provider handles a connector type (``ProviderRegistry`` in ``valetkey.providers``)."""

    def get(self, type: str) -> Provider:
        """The provider for connector ``type``; else ``InvalidRequest`` naming the known types.

        Does **not** check that a connector's configuration suits the provider (that was
        ``validate_config``'s job when the connector was saved).
        """
        ...


# -- grants ------------------------------------------------------------------------------------


class GrantStore(Protocol):
    """Grants (a subject's tokens, encrypted), refreshed under a claim shared by every replica."""

    async def get_grant(self, scope: GrantScope) -> Grant | None:
        """The grant for exactly ``scope``, whatever its status.

        Does **not** check its status, scopes or freshness: the exchange does.
        """
        ...

    async def save_grant(self, scope: GrantScope, tokens: TokenSet, *, source: str) -> Grant:
        """Create or replace the grant (a new consent or import replaces an old one).

        Does **not** check that the tokens belong to the subject: consent confirmation does;
        does **not** invalidate cached tokens: the caller publishes an ``Invalidation``.
        """
        ...

    async def refresh_grant(
        self, grant_id: str, refresher: Refresher, *, needed: RefreshNeeded | None = None
    ) -> Grant:
        """Run ``refresher`` holding the grant's refresh claim; store what it returns (compare-and-set).

        ``needed`` is asked of every read of the grant first (None: always needed); once it says
        no, that grant is returned without a refresh. If ``refresher`` raises ``InvalidGrant``
        the grant is marked ``needs_consent`` and the error re-raised. Does **not** call the
        provider itself, and holds no transaction while ``refresher`` runs.
        """
        ...

    async def delete_grants(
        self,
        team_id: str,
        connector_id: str,
        *,
        subject: Subject | None,
        project_id: str | None,
        environment: str | None,
    ) -> Sequence[Grant]:
        """Remove matching grants (None: any) and return them (with their tokens, for provider
        revocation). Does **not** revoke at the provider: the caller does."""
        ...


# -- consent -----------------------------------------------------------------------------------


class ConsentStore(Protocol):
    """Authorization requests between start and grant; their secret state is stored encrypted."""

    async def create_authorization(
        self, pending: PendingAuthorization, *, state_hash: str | None
    ) -> None:
        """Store a new request, findable by the SHA-256 of its ``state`` (None: device code).

        Does **not** validate its URLs or lifetime: the consent service did.
        """
        ...

    async def take_by_state(self, state_hash: str) -> PendingAuthorization | None:
        """Atomically move a ``pending`` authorization with this state to ``exchanging`` (single use).

        Does **not** check its expiry: the consent service does.
        """
        ...

    async def get_authorization(self, authorization_id: str) -> PendingAuthorization | None:
        """The request by id. Does **not** check that it belongs to the caller's connector,
        project or environment: the consent service does."""
        ...

    async def stale_authorizations(
        self, now: datetime, *, confirm_grace: timedelta, limit: int = 200
    ) -> Sequence[PendingAuthorization]:
        """``pending`` ones past their expiry, ``confirming`` ones past expiry + grace."""
        ...

    async def by_user_code(self, user_code: str) -> PendingAuthorization | None:
        """The request showing ``user_code`` (normalized) on the broker's device page. Does
        **not** check its status or expiry."""
        ...

    async def latest_device_authorization(
        self,
        connector_id: str,
        project_id: str,
        environment: str,
        user_id: str,
        issuer: str | None = None,
        mode: Mode = "device",
    ) -> PendingAuthorization | None:
        """The newest request in ``mode`` (device unless named) for the user (``issuer``,
        ``user_id``), whatever its status."""
        ...

    async def update_authorization(
        self,
        authorization_id: str,
        *,
        expect: Sequence[Status] | None = None,
        due_by: datetime | None = None,
        **changes: Any,
    ) -> bool:
        """Apply ``changes`` (status, tokens, error, next_poll_at, interval, completed_at), atomically;
        with ``expect``, only if the current status is one of them; with ``due_by``, only if the next
        poll is due by then. Returns whether it applied. Does **not** check that the transition
        makes sense: the consent service names what it expects."""
        ...


class Notifier(Protocol):
    """Delivers events to apps' webhooks, durably."""

    async def notify(
        self,
        url: str,
        event: Mapping[str, Any],
        *,
        team_id: str,
        dedupe_key: str | None = None,
    ) -> None:
        """Queue a signed event for an app's webhook; returns once the job is stored (durable).

        Delivery happens later, in the background, with retries (``valetkey.core.jobs``). This
        does **not** contact the app, nor check ``url`` against the network policy
        (``check_webhook_url`` did, at consent start), and ``event`` must hold no secret.
        """
        ...


class ConnectorLookup(Protocol):
    """A connector by id with its provider's user flows (for callbacks and sweeps)."""

    async def __call__(self, team_id: str, connector_id: str) -> tuple[Connector, UserFlows]:
        """Raises ``NotFound`` for a removed connector and ``UnsupportedOperation`` for a provider
        that cannot act for a user. Does **not** check policy: the connector was checked at start."""
        ...


class WebhookLookup(Protocol):
    """The webhook of the latest consent for a user, for ``grant.failed`` events."""

    async def __call__(
        self,
        connector_id: str,
        project_id: str,
        environment: str,
        user_id: str,
        issuer: str | None = None,
    ) -> str | None:
        """The URL, or None when the user's consent named none."""
        ...


# -- other replicas -----------------------------------------------------------------------------


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

    def subscribe(self, handler: InvalidationHandler) -> None:
        """Call ``handler`` for every invalidation from now on (on the event loop; it must not block)."""
        ...

    async def publish(self, invalidation: Invalidation) -> None:
        """Send ``invalidation`` to every replica, applying it on this one at once.

        Does **not** guarantee delivery to a replica that is disconnected: such a replica clears
        every cache when it reconnects, and caches re-read on their own TTL anyway.
        """
        ...


class LocalBus:
    """The single-process bus (SQLite): handlers run at once."""

    def __init__(self) -> None:
        self._handlers: list[InvalidationHandler] = []

    def subscribe(self, handler: InvalidationHandler) -> None:
        self._handlers.append(handler)

    async def publish(self, invalidation: Invalidation) -> None:
        for handler in self._handlers:
            handler(invalidation)
