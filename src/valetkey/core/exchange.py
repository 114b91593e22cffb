"""The exchange (the hot path, DESIGN §3); revocation is ``core.revocation``.

Hot path for a cache hit: one dict lookup for the connector view, the policy check,
one dict lookup for the token, an in-memory audit append. No I/O, no crypto.

Every cache here is bounded, since callers choose its keys: the connector views and the
tokens (``core.exchange_cache``), and the token single-flight map (``MAX_LOADS`` loads in
flight). Provider calls go through a ``ProviderGate`` (per-connector
concurrency, a bounded wait, a deadline: ``core.gate``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import replace as dataclass_replace
from datetime import datetime, timedelta
from typing import Any

from valetkey.core.audit import AuditEvent, AuditLog
from valetkey.core.clock import Clock
from valetkey.core.consent import ConsentService
from valetkey.core.consent_values import consent_needed, no_installations
from valetkey.core.exchange_cache import (
    MAX_CACHED_TOKEN_BYTES,
    MAX_LOADS,
    MAX_UNKNOWN_VIEWS,
    MAX_VIEWS,
    TokenCache,
    TokenKey,
    ViewCache,
    overloaded,
)
from valetkey.core.exchange_values import ExchangeCounts, Issued
from valetkey.core.flight import SingleFlight
from valetkey.core.gate import ProviderGate
from valetkey.core.grants import (
    Grant,
    GrantScope,
    external_subject,
    minted_token,
    needs_narrowing,
    within_ceiling,
)
from valetkey.core.models import Connector, Identity, Member, Policy, Subject, TokenRequest
from valetkey.core.policy import Allowed, evaluate
from valetkey.core.ports import (
    CachedMint,
    ExchangeStore,
    GrantStore,
    Invalidation,
    InvalidationBus,
    Notifier,
    ProviderLookup,
    WebhookLookup,
)
from valetkey.core.providers import (
    Capabilities,
    MintedToken,
    Provider,
    ProviderContext,
    RefreshFlow,
    TokenSet,
    UserFlows,
    require_user_flows,
)
from valetkey.core.revocation import RevocationService, RevokeCounts
from valetkey.errors import (
    GrantedScopeUnknown,
    InvalidGrant,
    InvalidRequest,
    NotFound,
    UnsupportedOperation,
    ValetkeyError,
)

log = logging.getLogger("valetkey.exchange")

#: A cached token is handed out only while it stays valid for longer than this.
DEFAULT_BUFFER = timedelta(seconds=60)
#: Credentials that never expire (API keys) are re-read from the store this often.
STATIC_HORIZON = timedelta(hours=1)

class ExchangeService:
    def __init__(
        self,
        *,
        store: ExchangeStore,
        providers: ProviderLookup,
        audit: AuditLog,
        bus: InvalidationBus,
        clock: Clock,
        ctx: ProviderContext[object],
        buffer: timedelta = DEFAULT_BUFFER,
        max_cached_tokens: int = 50_000,
        max_cached_token_bytes: int = MAX_CACHED_TOKEN_BYTES,
        max_views: int = MAX_VIEWS,
        max_unknown_views: int = MAX_UNKNOWN_VIEWS,
        gate: ProviderGate | None = None,
        revocation: Callable[..., RevocationService] = RevocationService,
    ) -> None:
        self._store = store
        self._providers = providers
        self._audit = audit
        self._bus = bus
        self._clock = clock
        #: What providers borrow for a call (built by the server: the core opens no connection).
        self._ctx = ctx
        self._buffer = buffer
        self.gate = gate if gate is not None else ProviderGate()
        self._views = ViewCache(store, max_views=max_views, max_unknown_views=max_unknown_views)
        self._tokens = TokenCache(max_tokens=max_cached_tokens, max_bytes=max_cached_token_bytes)
        self._token_loads: SingleFlight[TokenKey, CachedMint] = SingleFlight(
            limit=MAX_LOADS, full=overloaded
        )
        #: Set by the broker when user subjects are enabled (``attach_consent``).
        self._grants: GrantStore | None = None
        self._consent: ConsentService | None = None
        self._notifier: Notifier | None = None
        self._webhook_for: WebhookLookup | None = None
        self._background: set[asyncio.Task[None]] = set()
        self.counts = ExchangeCounts()
        #: ``revocation`` builds it (a ``functools.partial`` sets its concurrency and rate limits).
        self.revocation = revocation(
            store=store,
            providers=providers,
            audit=audit,
            bus=bus,
            clock=clock,
            ctx=ctx,
            gate=self.gate,
        )
        bus.subscribe(self._on_invalidation)

    @property
    def cached_tokens(self) -> int:
        """How many credentials the in-memory token cache holds."""
        return len(self._tokens)

    @property
    def cached_views(self) -> tuple[int, int]:
        """How many connector views, and how many unknown uids, the view cache holds."""
        return self._views.sizes

    def attach_consent(
        self,
        grants: GrantStore,
        consent: ConsentService,
        notifier: Notifier,
        webhook_for: WebhookLookup,
    ) -> None:
        self._grants = grants
        self.revocation.attach_grants(grants)
        self._consent = consent
        self._notifier = notifier
        self._webhook_for = webhook_for

    # -- the exchange -------------------------------------------------------------------

    async def exchange(self, identity: Identity, uid: str, request: TokenRequest) -> Issued:
        """Hand out a credential for ``request`` or raise the exact reason why not."""
        now = self._clock.now()
        loaded = await self._views.get(identity.team_id, uid, now)
        if loaded is None:
            raise self._deny(identity, uid, request, NotFound(f"no connector {uid}", connector=uid))
        view = loaded.view
        connector = view.connector
        decision = evaluate(identity, connector, view.links.get(identity.project_id), request)
        if not isinstance(decision, Allowed):
            raise self._deny(identity, uid, request, decision.error)
        provider, caps = loaded.resolve(self._providers)
        if request.subject.type not in caps.subjects:
            raise self._deny(
                identity,
                uid,
                request,
                UnsupportedOperation(
                    f"{connector.type} connectors cannot issue {request.subject.type} tokens",
                    subject=request.subject.type,
                ),
            )
        if request.installation_id is not None:
            raise self._deny(identity, uid, request, no_installations(connector))
        link = view.links[identity.project_id]
        # Tokens are minted at the ceiling when no scopes are named (absent or []); a user's grant
        # is served as it was consented (narrowed to the ceiling only where it holds more, see
        # _user_token).
        effective = decision.request
        key: TokenKey = (
            connector.id,
            identity.project_id,
            identity.environment,
            effective.cache_key(),
        )
        entry = self._tokens.get(key)
        cached = entry is not None and self._fresh(entry, now)
        if entry is None or not cached:
            try:
                entry = await self._token_loads.run(
                    key,
                    lambda: self._load_or_mint(
                        identity, connector, provider, caps, effective, key, link.policy
                    ),
                )
            except ValetkeyError as exc:
                self.counts.deny(exc.code)
                raise
            self.counts.cache_misses += 1
        else:
            self.counts.cache_hits += 1
        self._record(
            identity, uid, effective, "allowed", "issued", tokenId=entry.issued_id, cached=cached
        )
        self._audit.count(identity.team_id, "token_requests")
        expires_at = entry.serve_until or (now + STATIC_HORIZON)
        return Issued(
            token=entry.token.token,
            expires_at=expires_at,
            token_id=entry.issued_id,
            connector=connector,
            capabilities=caps,
            scopes=entry.token.scopes if entry.token.scopes is not None else effective.scopes,
            installation_id=entry.token.installation_id,
            cached=cached,
            scope_unknown=entry.token.metadata.get(SCOPE_METADATA) == UNKNOWN,
            **external_subject(entry.token, effective),
        )

    def _fresh(self, entry: CachedMint, now: datetime) -> bool:
        return entry.serve_until is None or entry.serve_until - now > self._buffer

    async def _load_or_mint(
        self,
        identity: Identity,
        connector: Connector,
        provider: Provider,
        caps: Capabilities,
        request: TokenRequest,
        key: TokenKey,
        policy: Policy,
    ) -> CachedMint:
        now = self._clock.now()
        key_hash = _hash_key(key)
        stored = await self._store.load_cached(key_hash)
        if stored is not None and self._fresh(stored, now):
            self._tokens.put(key, stored)
            return stored
        minted = await self._mint(identity, connector, provider, request, policy.scopes)
        if not minted.scope_stated and request.subject.type != "user":
            minted = await self._unknown_scope(connector, provider, caps, request, policy, minted)
        serve_until = minted.expires_at
        max_lifetime = policy.max_lifetime_seconds
        if max_lifetime is not None:
            cap = now + timedelta(seconds=max_lifetime)
            serve_until = cap if serve_until is None or serve_until > cap else serve_until
        issued_id = await self._store.record_mint(
            identity=identity,
            connector=connector,
            request=request,
            minted=minted,
            key_hash=key_hash,
            serve_until=serve_until,
        )
        self._audit.count(identity.team_id, "tokens_minted")
        self.counts.tokens_minted += 1
        entry = CachedMint(minted, issued_id, serve_until)
        self._tokens.put(key, entry)
        return entry

    async def _unknown_scope(
        self,
        connector: Connector,
        provider: Provider,
        caps: Capabilities,
        request: TokenRequest,
        policy: Policy,
        minted: MintedToken,
    ) -> MintedToken:
        """A token whose granted scopes the provider did not state: refused (and withdrawn at the
        provider) unless the link allows it; then marked in its metadata, and kept (cached,
        recorded) for exactly the scopes asked for."""
        if not caps.scopable:
            return minted  # nothing to state: the credential has no scopes (an API key)
        if not policy.allow_unknown_scope:
            try:
                await provider.revoke(self._ctx, connector, minted)
            except ValetkeyError as exc:  # best effort: the token is not served either way
                log.warning("could not withdraw a token of unknown scope: %s", exc.code)
            raise GrantedScopeUnknown(
                "the provider did not state which scopes it granted, so the token was not served; "
                "allow such tokens on the link (allowUnknownScope) only if the provider grants "
                "exactly what is asked",
                field="allowUnknownScope",
                setting="allowUnknownScope",
                requestedScopes=list(request.scopes or ()),
            )
        return dataclass_replace(
            minted, scopes=request.scopes, metadata={**minted.metadata, SCOPE_METADATA: UNKNOWN}
        )

    async def _mint(
        self,
        identity: Identity,
        connector: Connector,
        provider: Provider,
        request: TokenRequest,
        link_scopes: tuple[str, ...] | None = None,
    ) -> MintedToken:
        kind = request.subject.type
        if kind == "app":
            return await self.gate.call(
                connector.id, lambda: provider.mint(self._ctx, connector, request)
            )
        flows = require_user_flows(provider, connector)
        if kind == "user":
            return await self._user_token(identity, connector, flows, request, link_scopes)
        if kind == "jwt-bearer":
            assertion = flows.assertion
            if assertion is None:
                raise UnsupportedOperation(
                    f"{connector.type} connectors have no jwt-bearer grant", subject=kind
                )
            subject_id = request.subject.id
            if subject_id is None:
                raise InvalidRequest("a jwt-bearer subject needs an id", field="subject")
            claims = dict(request.assertion or ())
            extra = json.loads(claims["additionalClaims"]) if "additionalClaims" in claims else {}
            tokens = await self.gate.call(
                connector.id,
                lambda: assertion.jwt_bearer(
                    self._ctx,
                    connector,
                    subject=subject_id,
                    issuer=claims.get("iss"),
                    audience=claims.get("aud"),
                    claims=extra,
                    scopes=request.scopes,
                ),
            )
            return minted_token(tokens)
        exchange = flows.exchange
        if exchange is None:
            raise UnsupportedOperation(
                f"{connector.type} connectors have no token exchange grant", subject=kind
            )
        subject_token = request.subject_token
        if subject_token is None:
            raise InvalidRequest("a token subject needs the token to exchange", field="subject")
        tokens = await self.gate.call(
            connector.id,
            lambda: exchange.token_exchange(
                self._ctx,
                connector,
                subject_token=subject_token,
                subject_token_type=request.subject_token_type
                or "urn:ietf:params:oauth:token-type:access_token",
                scopes=request.scopes,
                audience=request.audience,
                resources=request.resources,
            ),
        )
        return minted_token(tokens)

    async def _user_token(
        self,
        identity: Identity,
        connector: Connector,
        flows: UserFlows,
        request: TokenRequest,
        link_scopes: tuple[str, ...] | None = None,
    ) -> MintedToken:
        """A user's access token from their grant, refreshed (single flight across replicas) when needed."""
        if self._grants is None or self._consent is None:
            raise UnsupportedOperation("user subjects are not enabled on this broker")
        user_id = request.subject.id or ""
        issuer = request.subject.issuer
        scope = GrantScope(
            identity.team_id,
            connector.id,
            identity.project_id,
            identity.environment,
            request.subject,
        )
        grant = await self._grants.get_grant(scope)
        if grant is None:
            # Raises unless a device flow just finished.
            await self._consent.poll(identity, connector, flows, user_id, issuer=issuer)
            grant = await self._grants.get_grant(scope)
            if grant is None:
                raise consent_needed(connector, user_id, issuer=issuer)
        if grant.status != "active":
            raise consent_needed(connector, user_id, issuer=issuer, reason="grant_failed", failure=grant.failure)
        wanted, granted = request.scopes, grant.scopes
        if wanted is None and granted is not None:
            wanted = within_ceiling(connector, link_scopes, granted)
        if wanted is not None and granted is not None:
            missing = sorted(set(wanted) - set(granted))
            if missing:
                raise consent_needed(
                    connector,
                    user_id,
                    issuer=issuer,
                    reason="scopes_not_granted",
                    missingScopes=missing,
                )
        narrow = needs_narrowing(connector, wanted, granted)
        now = self._clock.now()
        if not narrow and grant.fresh(now, self._buffer):
            return minted_token(grant.tokens)
        if flows.refresh is None:  # the provider declares no refresh grant
            if narrow:
                raise UnsupportedOperation(
                    f"{connector.type} connectors have no refresh grant, so a grant cannot be narrowed"
                )
            raise consent_needed(connector, user_id, issuer=issuer, reason="expired_without_refresh_token")
        refresh_flow: RefreshFlow = flows.refresh
        if grant.tokens.refresh_token is None:
            if narrow:
                raise UnsupportedOperation(
                    "this grant has no refresh token, so it cannot be narrowed"
                )
            raise consent_needed(connector, user_id, issuer=issuer, reason="expired_without_refresh_token")
        narrowed: list[TokenSet] = []
        seen_access = grant.tokens.access_token

        def needed(current: Grant) -> bool:
            # Asked of every read of the grant while this request waits to refresh it.
            if current.status != "active":  # a refresh that failed while we waited
                raise consent_needed(
                    connector,
                    user_id,
                    issuer=issuer,
                    reason="grant_failed",
                    failure=current.failure,
                )
            # Another request or replica stored a new access token while we waited: use it.
            # Refreshing again would cost a provider call, and presenting the refresh token we
            # read before would be a reuse.
            return narrow or not (
                current.tokens.access_token != seen_access
                or current.fresh(self._clock.now(), self._buffer)
            )

        async def refresher(current: Grant) -> TokenSet | None:
            # Runs holding the grant's refresh claim; ``current`` is the version claimed.
            refresh_token = current.tokens.refresh_token
            if refresh_token is None:
                raise consent_needed(
                    connector, user_id, issuer=issuer, reason="expired_without_refresh_token"
                )
            fresh = await self.gate.call(
                connector.id,
                lambda: refresh_flow.refresh(
                    self._ctx,
                    connector,
                    refresh_token=refresh_token,
                    scopes=wanted if narrow else None,
                ),
            )
            if narrow:
                narrowed.append(fresh)
                rotated = fresh.refresh_token or current.tokens.refresh_token
                return dataclass_replace(current.tokens, refresh_token=rotated)
            return fresh

        try:
            updated = await self._grants.refresh_grant(grant.id, refresher, needed=needed)
        except InvalidGrant as exc:
            self._grant_failed(identity, connector, request.subject, exc)
            raise consent_needed(
                connector, user_id, issuer=issuer, reason="grant_failed", failure=exc.message
            ) from exc
        if narrowed:
            return minted_token(narrowed[0])
        return minted_token(updated.tokens)

    def _grant_failed(
        self, identity: Identity, connector: Connector, subject: Subject, exc: ValetkeyError
    ) -> None:
        user_id, issuer = subject.id or "", subject.issuer
        self._audit.record(
            AuditEvent(
                team_id=identity.team_id,
                at=self._clock.now(),
                actor="broker",
                action="grant.failed",
                decision="denied",
                reason=exc.code,
                connector_uid=connector.uid,
                project_id=identity.project_id,
                environment=identity.environment,
                subject=subject.key(),
                details={"message": exc.message},
            )
        )
        if self._notifier is not None and self._webhook_for is not None:
            lookup = self._webhook_for
            notifier = self._notifier

            async def send() -> None:
                url = await lookup(
                    connector.id, identity.project_id, identity.environment, user_id, issuer
                )
                if url:
                    event: dict[str, Any] = {
                        "type": "grant.failed",
                        "user": user_id,
                        "connectorId": connector.id,
                        "connector": connector.uid,
                        "error": exc.code,
                        "authorizeUrl": f"/v1/connect/authorize/{connector.uid}",
                    }
                    if issuer is not None:
                        event["issuer"] = issuer
                    await notifier.notify(url, event, team_id=identity.team_id)

            task = asyncio.get_running_loop().create_task(send())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    # -- audit helpers ------------------------------------------------------------------

    def _record(
        self,
        identity: Identity,
        uid: str,
        request: TokenRequest,
        decision: str,
        reason: str,
        **details: Any,
    ) -> None:
        self._audit.record(
            AuditEvent(
                team_id=identity.team_id,
                at=self._clock.now(),
                actor=f"{identity.kind}:{identity.subject}",
                action="token.exchange",
                decision=decision,
                reason=reason,
                connector_uid=uid,
                project_id=identity.project_id,
                environment=identity.environment,
                subject=request.subject.key(),
                details={"scopes": list(request.scopes or ()), **details},
            )
        )

    def _deny(
        self, identity: Identity, uid: str, request: TokenRequest, error: ValetkeyError
    ) -> ValetkeyError:
        self._record(identity, uid, request, "denied", error.code, message=error.message)
        self.counts.deny(error.code)
        return error

    # -- revocation (core.revocation) ---------------------------------------------------

    async def revoke(
        self, principal: Identity | Member, uid: str, subject: Subject | None
    ) -> RevokeCounts:
        """Revoke issued tokens: a subject's (my tokens) or, for owners and members, all of them
        (``core.revocation``)."""
        counts = await self.revocation.revoke(principal, uid, subject)
        self.counts.revocations += 1
        return counts

    # -- invalidation -------------------------------------------------------------------

    def _on_invalidation(self, inv: Invalidation) -> None:
        if inv.kind == "connector":
            self._views.invalidate(inv)
            self._tokens.drop(inv.connector_id, None)
        elif inv.kind == "tokens":
            self._tokens.drop(inv.connector_id, inv.subject_key)


#: The token's metadata key, and value, saying that the provider did not state the granted scopes.
SCOPE_METADATA = "grantedScopes"
UNKNOWN = "unknown"


def _hash_key(key: TokenKey) -> str:
    return hashlib.sha256(repr(key).encode()).hexdigest()
