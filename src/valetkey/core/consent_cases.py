"""The consent use cases the routes call: start a user's consent, watch it, confirm it, import tokens.

Each resolves the connector the app named, checks the link's policy and the provider's
capabilities, runs the flow (``ConsentService``), saves grants, publishes the invalidations
other replicas need and records the audit event — so that a route (``server.consent``) only
parses the request, calls one of these, and renders the answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from valetkey.core.audit import AuditEvent, AuditLog
from valetkey.core.authorizations import PendingAuthorization
from valetkey.core.clock import Clock
from valetkey.core.consent import ConsentService
from valetkey.core.consent_values import Started, no_installations
from valetkey.core.grants import GrantScope
from valetkey.core.models import Connector, Identity, Policy, Subject, TokenRequest
from valetkey.core.policy import Allowed, evaluate
from valetkey.core.ports import (
    ConnectorViews,
    GrantStore,
    Invalidation,
    InvalidationBus,
    ProviderLookup,
)
from valetkey.core.providers import TokenSet, UserFlows, require_user_flows
from valetkey.errors import NotFound, UnsupportedOperation


@dataclass(frozen=True, slots=True)
class ConsentRequest:
    """An app's request to start a user's consent: ``return_url``, ``webhook_url`` and ``device``
    (at least one, any together) say how it finishes."""

    subject: Subject
    scopes: tuple[str, ...] | None = None
    return_url: str | None = None
    webhook_url: str | None = None
    device: bool = False
    lifetime: timedelta | None = None
    login_hint: str | None = None
    #: OpenID Connect ``prompt``, forwarded to the provider's authorization request.
    prompt: str | None = None
    #: RFC 8707 resource indicators, forwarded to the provider's authorization request.
    resources: tuple[str, ...] | None = None
    #: Checked against the link's targets like a token request's, then not used: consent is for
    #: scopes, and the token request names its audience.
    audience: str | None = None
    #: Refused: no connector type has installations (``connector_installation_required``).
    installation_id: str | None = None


@dataclass(frozen=True, slots=True)
class ConsentStarted:
    connector: Connector
    started: Started


@dataclass(frozen=True, slots=True)
class TokenImport:
    """A user's existing tokens, to become a grant without a consent round."""

    subject: Subject
    access_token: str = field(repr=False)
    refresh_token: str | None = field(default=None, repr=False)
    expires_at: datetime | None = None
    scopes: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class ImportedGrant:
    grant_id: str
    subject: Subject
    expires_at: datetime | None
    refreshable: bool
    scopes: tuple[str, ...] | None


class ConsentCases:
    def __init__(
        self,
        *,
        consent: ConsentService,
        connectors: ConnectorViews,
        providers: ProviderLookup,
        grants: GrantStore,
        bus: InvalidationBus,
        audit: AuditLog,
        clock: Clock,
    ) -> None:
        self._consent = consent
        self._connectors = connectors
        self._providers = providers
        self._grants = grants
        self._bus = bus
        self._audit = audit
        self._clock = clock

    async def authorize(
        self, identity: Identity, uid: str, request: ConsentRequest
    ) -> ConsentStarted:
        """Start ``request.subject``'s consent to connector ``uid`` (callback, webhook or device)."""
        connector, flows, effective, policy = await self._linked(
            identity,
            uid,
            request.subject,
            request.scopes,
            resources=request.resources,
            audience=request.audience,
        )
        if request.installation_id is not None:
            raise no_installations(connector)
        started = await self._consent.start(
            identity,
            connector,
            flows,
            user_id=request.subject.id or "",
            scopes=effective.scopes,
            return_url=request.return_url,
            webhook_url=request.webhook_url,
            device=request.device,
            lifetime=request.lifetime,
            login_hint=request.login_hint,
            prompt=request.prompt,
            resources=request.resources,
            confirm=policy.confirm_consent,
            user_issuer=request.subject.issuer,
        )
        return ConsentStarted(connector, started)

    async def confirm(
        self, identity: Identity, uid: str, request_id: str, verifier: str
    ) -> PendingAuthorization:
        """The app confirms that the person who consented is the user it named (single use)."""
        view = await self._connectors.connector_view(identity.team_id, uid)
        if view is None:
            raise NotFound(f"no connector {uid}", connector=uid)
        flows = require_user_flows(self._providers.get(view.connector.type), view.connector)
        done = await self._consent.confirm(
            identity, view.connector, request_id, verifier, provider=flows
        )
        await self._bus.publish(
            Invalidation(
                kind="tokens", connector_id=view.connector.id, subject_key=done.subject.key()
            )
        )
        return done

    async def watch(
        self, identity: Identity, uid: str, request_id: str
    ) -> PendingAuthorization:
        """The state of the app's authorization request ``request_id``: returned once completed,
        raised (``AuthorizationPending``, ``AccessDenied``, ``AuthorizationExpired``) otherwise."""
        view = await self._connectors.connector_view(identity.team_id, uid)
        if view is None:
            raise NotFound(f"no connector {uid}", connector=uid)
        flows = require_user_flows(self._providers.get(view.connector.type), view.connector)
        done = await self._consent.watch(identity, view.connector, flows, request_id)
        await self._bus.publish(
            Invalidation(
                kind="tokens", connector_id=view.connector.id, subject_key=done.subject.key()
            )
        )
        return done

    async def import_tokens(
        self, identity: Identity, uid: str, request: TokenImport
    ) -> ImportedGrant:
        """Save a user's existing tokens as the grant for (connector, environment, user)."""
        subject, scopes = request.subject, request.scopes
        connector, _flows, _effective, _policy = await self._linked(identity, uid, subject, scopes)
        tokens = TokenSet(
            access_token=request.access_token,
            expires_at=request.expires_at,
            refresh_token=request.refresh_token,
            scopes=scopes,
        )
        scope = GrantScope(
            identity.team_id, connector.id, identity.project_id, identity.environment, subject
        )
        grant = await self._grants.save_grant(scope, tokens, source="import")
        await self._bus.publish(
            Invalidation(kind="tokens", connector_id=connector.id, subject_key=subject.key())
        )
        self._record_import(identity, connector.uid, subject.key(), grant.id)
        return ImportedGrant(
            grant_id=grant.id,
            subject=subject,
            expires_at=request.expires_at,
            refreshable=request.refresh_token is not None,
            scopes=scopes,
        )

    async def _linked(
        self,
        identity: Identity,
        uid: str,
        subject: Subject,
        scopes: tuple[str, ...] | None,
        *,
        resources: tuple[str, ...] | None = None,
        audience: str | None = None,
    ) -> tuple[Connector, UserFlows, TokenRequest, Policy]:
        view = await self._connectors.connector_view(identity.team_id, uid)
        if view is None:
            raise NotFound(f"no connector {uid}", connector=uid)
        connector = view.connector
        decision = evaluate(
            identity,
            connector,
            view.links.get(identity.project_id),
            TokenRequest(subject, scopes, resources=resources, audience=audience),
        )
        if not isinstance(decision, Allowed):
            raise decision.error
        provider = self._providers.get(connector.type)
        if subject.type not in provider.capabilities(connector).subjects:
            raise UnsupportedOperation(
                f"{connector.type} connector {connector.uid} cannot act for a {subject.type}",
                subject=subject.type,
            )
        # Consent asks for what was named; else (nothing named, or []) the link's own ceiling; else
        # (None) the connector's userScopes. Never an empty scope: the provider's defaults.
        link = view.links[identity.project_id]
        asked = scopes or link.policy.scopes
        return (
            connector,
            require_user_flows(provider, connector),
            TokenRequest(subject, asked),
            link.policy,
        )

    def _record_import(self, identity: Identity, uid: str, subject: str, grant_id: str) -> None:
        self._audit.record(
            AuditEvent(
                team_id=identity.team_id,
                at=self._clock.now(),
                actor=f"{identity.kind}:{identity.subject}",
                action="grant.import",
                decision="allowed",
                reason="imported",
                connector_uid=uid,
                project_id=identity.project_id,
                environment=identity.environment,
                subject=subject,
                details={"grant": grant_id},
            )
        )
