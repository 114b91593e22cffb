"""Consent's shared steps and device polling: making a grant from a finished request,
recording audit events, and watching a device authorization (RFC 8628 §3.4-3.5).

``ConsentService`` (``core.consent``) is built on this class; it is apart only to keep each
module small.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from datetime import datetime, timedelta

from valetkey.core.audit import AuditEvent, AuditLog
from valetkey.core.authorizations import PendingAuthorization
from valetkey.core.clock import Clock
from valetkey.core.consent_values import awaiting_confirmation, consent_needed
from valetkey.core.gate import ProviderGate
from valetkey.core.grants import GrantScope
from valetkey.core.models import Connector, Identity
from valetkey.core.ports import ConsentStore, GrantStore
from valetkey.core.providers import ProviderContext, TokenSet, UserFlows
from valetkey.errors import (
    AccessDenied,
    AuthorizationExpired,
    AuthorizationPending,
    InvalidGrant,
    NotFound,
    UnsupportedOperation,
)

#: The longest a consent request may live; ``poll`` ignores device requests older than twice this.
MAX_LIFETIME = timedelta(hours=1)


class ConsentSteps:
    """What the consent service's flows share; the service sets these attributes."""

    _store: ConsentStore
    _grants: GrantStore
    _audit: AuditLog
    _clock: Clock
    _ctx: ProviderContext[object]
    _gate: ProviderGate

    async def _activate(self, pending: PendingAuthorization, tokens: TokenSet) -> None:
        await self._grants.save_grant(self._scope(pending), tokens, source="consent")
        await self._store.update_authorization(
            pending.id, status="completed", tokens=None, completed_at=self._clock.now()
        )
        self._record(pending, "authorization.complete", "allowed", pending.mode)

    def _scope(self, pending: PendingAuthorization) -> GrantScope:
        return GrantScope(
            pending.team_id,
            pending.connector_id,
            pending.project_id,
            pending.environment,
            pending.subject,
        )

    async def _awaiting_confirmation(
        self, identity: Identity, connector: Connector, user_id: str, issuer: str | None, now: datetime
    ) -> None:
        """Raise, naming the link setting, when the user consented in the browser and only the
        app's confirm call is missing: an app on Vercel Connect's SDKs never makes it."""
        for mode in ("callback", "webhook"):
            pending = await self._store.latest_device_authorization(
                connector.id, identity.project_id, identity.environment, user_id, issuer, mode=mode
            )
            if pending is None or pending.status != "confirming" or pending.expires_at <= now:
                continue
            raise awaiting_confirmation(connector, identity, user_id, issuer, pending.id)

    # -- device polling -------------------------------------------------------------------------

    async def poll(
        self,
        identity: Identity,
        connector: Connector,
        provider: UserFlows,
        user_id: str,
        *,
        issuer: str | None = None,
    ) -> None:
        """No grant yet for (``issuer``, ``user_id``): report the device authorization's state,
        polling the provider.

        Returns when a grant now exists; raises the typed state otherwise.
        """
        pending = await self._store.latest_device_authorization(
            connector.id, identity.project_id, identity.environment, user_id, issuer
        )
        now = self._clock.now()
        if pending is None or pending.created_at + MAX_LIFETIME * 2 < now:
            await self._awaiting_confirmation(identity, connector, user_id, issuer, now)
            raise consent_needed(connector, user_id, issuer=issuer)
        if pending.status == "completed":
            # Completed, but the grant is gone since (a browser consent may await its confirm).
            await self._awaiting_confirmation(identity, connector, user_id, issuer, now)
            raise consent_needed(connector, user_id, issuer=issuer)
        await self._advance(connector, provider, pending)

    async def watch(
        self, identity: Identity, connector: Connector, provider: UserFlows, request_id: str
    ) -> PendingAuthorization:
        """The state of one authorization request, ``request_id``, polling the provider for a
        device request: returned once it completed; its typed state raised otherwise.

        Unlike ``poll`` it looks at this request only: a grant the user already holds (from an
        earlier consent) does not make a pending request complete.
        """
        pending = await self._store.get_authorization(request_id)
        if (
            pending is None
            or pending.connector_id != connector.id
            or pending.project_id != identity.project_id
            or pending.environment != identity.environment
        ):
            raise NotFound(
                f"no authorization request {request_id} for this connector and environment"
            )
        if pending.status == "completed":
            return pending
        if pending.status == "confirming":
            raise AuthorizationPending(
                "the user has consented; the app must confirm the request",
                request=pending.id,
                interval=pending.interval,
            )
        if pending.mode != "device" and pending.status == "pending":
            if pending.expires_at <= self._clock.now():
                raise AuthorizationExpired(
                    "the authorization request expired before the user finished", request=pending.id
                )
            raise AuthorizationPending(
                "waiting for the user to finish in the browser",
                request=pending.id,
                interval=pending.interval,
            )
        await self._advance(connector, provider, pending)
        return replace(pending, status="completed")

    async def _advance(
        self, connector: Connector, provider: UserFlows, pending: PendingAuthorization
    ) -> None:
        """One step of a device authorization: returns once its grant is made; raises its state."""
        now = self._clock.now()
        if pending.status == "denied":
            raise AccessDenied("the user refused the authorization request", request=pending.id)
        if pending.status in ("expired", "failed"):
            raise AuthorizationExpired(
                "the device authorization expired or failed; start a new one", request=pending.id
            )
        if pending.expires_at <= now:
            await self._store.update_authorization(pending.id, expect=["pending"], status="expired")
            raise AuthorizationExpired(
                "the device code expired before the user finished", request=pending.id
            )
        if (
            pending.device_code is None
        ):  # the broker's own device page: the callback makes the grant
            raise AuthorizationPending(
                "waiting for the user to finish on the device page",
                request=pending.id,
                interval=pending.interval,
            )
        device = provider.device
        if device is None:
            raise UnsupportedOperation(f"{connector.type} connectors have no device grant")
        if pending.next_poll_at is not None and now < pending.next_poll_at:
            raise AuthorizationPending(
                "waiting for the user", request=pending.id, interval=pending.interval
            )
        claimed = await self._store.update_authorization(
            pending.id,
            expect=["pending"],
            due_by=now,
            next_poll_at=now + timedelta(seconds=pending.interval),
        )
        if not claimed:
            raise AuthorizationPending(
                "waiting for the user", request=pending.id, interval=pending.interval
            )
        try:
            tokens = await self._gate.call(
                connector.id,
                functools.partial(
                    device.poll_device,
                    self._ctx,
                    connector,
                    device_code=pending.device_code,
                ),
            )
        except AuthorizationPending as exc:
            interval = (
                int(exc.details.get("interval", pending.interval + 5))
                if exc.details.get("slowDown")
                else pending.interval
            )
            await self._store.update_authorization(
                pending.id, interval=interval, next_poll_at=now + timedelta(seconds=interval)
            )
            raise AuthorizationPending(
                exc.message,
                request=pending.id,
                interval=interval,
                slowDown=bool(exc.details.get("slowDown")),
            ) from None
        except AccessDenied:
            await self._store.update_authorization(
                pending.id, status="denied", error="access_denied", completed_at=now
            )
            self._record(pending, "authorization.device", "denied", "access_denied")
            raise
        except AuthorizationExpired:
            await self._store.update_authorization(pending.id, status="expired", completed_at=now)
            raise
        except InvalidGrant as exc:  # the provider no longer knows this device code
            await self._store.update_authorization(
                pending.id, status="failed", error="invalid_grant", completed_at=now
            )
            self._record(pending, "authorization.device", "denied", "invalid_grant")
            raise AuthorizationExpired(
                "the provider refused this device authorization; start a new one", request=pending.id
            ) from exc
        await self._activate(pending, tokens)

    # -- audit ----------------------------------------------------------------------------------

    def _record(
        self, pending: PendingAuthorization, action: str, decision: str, reason: str
    ) -> None:
        self._audit.record(
            AuditEvent(
                team_id=pending.team_id,
                at=self._clock.now(),
                actor="broker",
                action=action,
                decision=decision,
                reason=reason,
                connector_uid=None,
                project_id=pending.project_id,
                environment=pending.environment,
                subject=pending.subject.key(),
                details={
                    "request": pending.id,
                    "mode": pending.mode,
                    "connectorId": pending.connector_id,
                },
            )
        )
