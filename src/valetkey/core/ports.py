"""The core's ports: every contract the domain needs from the outside, in one place.

``valetkey.store`` implements the stores, the server the bus (PostgreSQL), the webhook notifier
and the lookups; ``valetkey.providers.registry`` the provider lookup. The provider plug-in
contract itself is ``valetkey.core.providers``. Each contract says what it does and what it
does **not** check: whatever it does not check, its caller does.

The value types a port carries live beside their domain (``core.audit``'s ``ChainedEvent``,
``core.jobs``' ``Job``); those modules import their port from here, and this module names them
for the type checker only, so no import runs in a circle.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol

from valetkey.core.authorizations import Mode, PendingAuthorization, Status
from valetkey.core.grants import Grant, GrantScope, Refresher, RefreshNeeded
from valetkey.core.models import Connector, Identity, Link, Subject, TokenRequest, TrustBinding
from valetkey.core.providers import MintedToken, Provider, TokenSet, UserFlows

if TYPE_CHECKING:
    from valetkey.core.audit import ChainedEvent
    from valetkey.core.jobs import Job, JobCounts, JobStatus

__all__ = [
    "AuditStore",
    "CachedMint",
    "ConnectorLookup",
    "ConnectorView",
    "ConnectorViews",
    "ConsentStore",
    "ExchangeStore",
    "GrantStore",
    "IdentityStore",
    "Invalidation",
    "InvalidationBus",
    "InvalidationHandler",
    "JobQueue",
    "Loader",
    "LocalBus",
    "Notifier",
    "ProviderLookup",
    "RevocationTarget",
    "RevokedSet",
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
class RevokedSet:
    """What ``ExchangeStore.revoke_issued`` marked revoked."""

    #: Issued tokens that matched (all now revoked in the ledger).
    found: int
    #: Of those, tokens recorded ``skipped``: no cache row left, or no provider revocation.
    skipped: int
    #: The tokens to revoke at the provider (``pending`` in the ledger), when asked for.
    targets: Sequence[RevocationTarget]


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
        """Mark every active (unrevoked, unexpired) issued token matching the filters (None: any)
        revoked at ``now``, in one transaction of a few set-based statements; the broker never
        serves them again from then on.

        Tokens whose cache row is gone are recorded ``skipped`` (nothing left to revoke). With
        ``at_provider`` False the others are recorded ``skipped`` too and their cache rows
        dropped; with it True they are recorded ``pending`` and returned, decrypted, in
        ``targets``; their cache rows stay (never served: their ledger row is revoked) until
        ``record_revocations``. Does **not** check who may revoke them (the exchange does) or
        tell other replicas (the caller publishes an ``Invalidation``).
        """
        ...

    async def record_revocations(self, outcomes: Mapping[str, str]) -> None:
        """Record each issued token's provider outcome and drop its cache row (batched statements).

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
        """The URL, or None when the user's consent named none.

        Does **not** check the URL again: it was checked when the consent started, and the
        outbound guard checks every delivery.
        """
        ...


# -- identity, audit, jobs, consent cases ---------------------------------------------------


class IdentityStore(Protocol):
    """What the identity verifier (``identity.verifier``) needs from storage.

    Implemented by ``valetkey.store``. It does **not** verify anything: no signature, no
    claim, no binding condition, no algorithm — the verifier does all of that with what this
    returns; the store only selects rows.
    """

    async def bindings_for_issuer(self, issuer: str) -> Sequence[TrustBinding]:
        """The trust bindings whose issuer is exactly ``issuer``, each only if its team owns
        the binding's (issuer, audience) pair: one pair, one team."""
        ...

    async def access_token_identity(self, token_hash: str) -> Identity | None:
        """The identity of an access token by hash; None if unknown, revoked or expired."""
        ...


class AuditStore(Protocol):
    """Where the audit writer (``core.audit.AuditLog``) puts chained events and usage counts.

    Implemented by ``valetkey.store``. The store does **not** check the chain (``seq``,
    ``prev_hash``, ``hash`` are the writer's), the events' sizes (the writer bounds them first)
    or who may write; it writes what it is given, atomically per call.
    """

    async def append_audit(self, events: Sequence[ChainedEvent]) -> None:
        """Write ``events`` in one transaction: all or none.

        Raises ``AuditRefused`` when the database refuses their data; any other exception means
        the store could not be reached, and the write may or may not have committed.
        """
        ...

    async def add_usage(self, counts: Mapping[tuple[str, str, str], int]) -> None:
        """Add ``count`` to each (team_id, month, metric); checks no metric name."""
        ...


class JobQueue(Protocol):
    """Where jobs live. Implemented by ``valetkey.store.jobs.JobStore`` on both stores.

    The queue does **not** run anything and does not know the kinds; it checks leases, not
    handlers. Times come from the queue's clock.
    """

    async def enqueue(
        self,
        kind: str,
        payload: Mapping[str, Any],
        *,
        team_id: str | None = None,
        run_at: datetime | None = None,
        dedupe_key: str | None = None,
        max_attempts: int | None = None,
    ) -> str:
        """Store a job due at ``run_at`` (default: now); the job's id.

        With ``dedupe_key``, a second enqueue with the same key stores nothing and returns the
        first job's id, whatever that job's state (how a periodic job runs once per period
        across replicas). The payload is sealed (encrypted) in the store.
        """
        ...

    async def claim(self, worker: str, *, limit: int, lease_seconds: float) -> Sequence[Job]:
        """Lease up to ``limit`` due jobs to ``worker`` and count an attempt on each.

        Due: queued with ``run_at`` reached, or running with an expired lease (its worker died).
        Two concurrent claims never return the same job (``FOR UPDATE SKIP LOCKED`` on
        PostgreSQL, the single writer on SQLite). A job whose attempts are already exhausted
        (its worker died on the last one) is dead-lettered here instead of being returned.
        """
        ...

    async def complete(self, job: Job) -> bool:
        """Mark ``job`` done if ``job.lease`` still holds it; False if the lease was lost."""
        ...

    async def fail(self, job: Job, error: str, *, retry_in: float | None) -> JobStatus | None:
        """Record a failed attempt: queued again in ``retry_in`` seconds, or dead if
        ``retry_in`` is None or the attempts are exhausted. The new status, or None if the
        lease was lost (someone else holds the job now: nothing is recorded)."""
        ...

    async def release(self, job: Job) -> bool:
        """Give back a claimed job unattempted (shutdown): due now, the attempt not counted."""
        ...

    async def retry(self, job_id: str, *, team_id: str | None) -> Job | None:
        """Queue a dead job again with a fresh attempt budget; None if there is no such dead job
        (in ``team_id``'s jobs, when given)."""
        ...

    async def get(self, job_id: str) -> Job | None: ...

    async def list(
        self, *, team_id: str | None, status: JobStatus | None, limit: int
    ) -> Sequence[Job]:
        """Jobs, newest first, of ``team_id`` (None: every team's and the broker's own)."""
        ...

    async def counts(self) -> JobCounts: ...

    async def purge_finished(self, before: datetime) -> int:
        """Delete done jobs finished before ``before`` (dead jobs are kept); how many."""
        ...


class ConnectorViews(Protocol):
    """The connectors the consent use cases (``core.consent_cases``) resolve an app's uid to.

    A narrower view of :class:`ExchangeStore` (which satisfies it). It does **not** check
    policy, capability or who asks.
    """

    async def connector_view(self, team_id: str, uid: str) -> ConnectorView | None:
        """A live connector of the team with its links; None if there is none. Checks nothing."""
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
