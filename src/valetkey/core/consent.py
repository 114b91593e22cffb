"""User consent: starting it, finishing it, and binding it to the right person.

Three ways to finish (DESIGN §3 "User authorization"):

- **callback**: the broker runs authorization code + PKCE + state with the provider and sends
  the browser back to the app's ``returnUrl``;
- **webhook**: the same browser flow, and the broker POSTs a signed event to the app;
- **device**: RFC 8628. The broker fronts the provider's device endpoint, or, when the provider
  has none, serves its own ``/device`` page that walks the person through the browser flow.

**Binding consent to the person the app named.** A consent link forwarded to someone else
(or phished) must not attach *their* provider account to the user the app asked for. So a
browser consent (callback or webhook) does not become a grant when the provider answers:
it waits, ``confirming``, until the app calls ``confirm`` with the request id and the
``verifier`` it received when it started — a 256-bit secret the app keeps in the session of
the user it named. In callback mode the browser comes back to the app carrying only the
request id; the app confirms only if the browser's own session is that user's and holds the
matching verifier. Someone else finishing the consent lands in *their* session at the app,
which has no such verifier, so nothing is attached. The provider account (``providerSubject``,
verified ID token claims) is shown to the app before it confirms, for apps that also want to
compare it with what they know. Device flows cannot be bound this way (the person types a code
the app showed them); there the app may pass ``loginHint`` and check the returned provider
subject. docs/security.md describes the threat and the defence.
"""

from __future__ import annotations

import functools
import hmac
import secrets
from dataclasses import replace
from datetime import timedelta
from typing import Any

from valetkey.core.audit import AuditLog
from valetkey.core.authorizations import Mode, PendingAuthorization, Status
from valetkey.core.clock import Clock
from valetkey.core.consent_device import MAX_LIFETIME, ConsentSteps
from valetkey.core.consent_values import (
    CallbackResult,
    Started,
    authorization_code_flow,
    check_return_url,
    check_webhook_url,
    digest,
    display_user_code,
    new_user_code,
    normalize_user_code,
    with_query,
)
from valetkey.core.gate import ProviderGate
from valetkey.core.models import Connector, Identity
from valetkey.core.ports import ConnectorLookup, ConsentStore, GrantStore, Notifier
from valetkey.core.providers import (
    ProviderContext,
    UserFlows,
    UserTokenRevocation,
)
from valetkey.errors import (
    AuthorizationExpired,
    InvalidRequest,
    NotFound,
    ValetkeyError,
    VerificationFailed,
)

DEFAULT_LIFETIME = timedelta(minutes=10)


class ConsentService(ConsentSteps):
    def __init__(
        self,
        *,
        store: ConsentStore,
        grants: GrantStore,
        audit: AuditLog,
        clock: Clock,
        ctx: ProviderContext[object],
        callback_url: str,
        device_url: str,
        notifier: Notifier,
        gate: ProviderGate | None = None,
    ) -> None:
        self._store = store
        self._grants = grants
        self._audit = audit
        self._clock = clock
        self._ctx = ctx
        self.callback_url = callback_url
        self.device_url = device_url
        self._notifier = notifier
        #: Per-connector concurrency and deadline for provider calls (shared with the exchange).
        self._gate = gate if gate is not None else ProviderGate()

    # -- start --------------------------------------------------------------------------------

    async def start(
        self,
        identity: Identity,
        connector: Connector,
        provider: UserFlows,
        *,
        user_id: str,
        scopes: tuple[str, ...] | None,
        return_url: str | None,
        webhook_url: str | None,
        device: bool,
        lifetime: timedelta | None,
        login_hint: str | None = None,
        confirm: bool = True,
        user_issuer: str | None = None,
        prompt: str | None = None,
        resources: tuple[str, ...] | None = None,
    ) -> Started:
        if not (return_url or webhook_url or device):
            raise InvalidRequest(
                "give at least one of returnUrl, webhook or deviceCode", field="returnUrl"
            )
        # Several channels at once (as the official clients' adapters ask): the device code works,
        # the browser returns to returnUrl and the webhook fires. The mode is the one that decides
        # whether the app must confirm: a device code cannot be bound to the app's session.
        mode: Mode = "device" if device else "callback" if return_url else "webhook"
        if return_url:
            check_return_url(return_url)
        if webhook_url:
            check_webhook_url(webhook_url)
        ttl = lifetime or DEFAULT_LIFETIME
        if not timedelta(seconds=30) <= ttl <= MAX_LIFETIME:
            raise InvalidRequest(
                "expiresInMs must be between 30 seconds and 1 hour", field="expiresInMs"
            )
        now = self._clock.now()
        verifier = secrets.token_urlsafe(32)
        authorization_id = "authz_" + secrets.token_hex(12)
        base = PendingAuthorization(
            id=authorization_id,
            team_id=identity.team_id,
            connector_id=connector.id,
            project_id=identity.project_id,
            environment=identity.environment,
            user_id=user_id,
            mode=mode,
            status="pending",
            verifier_hash=digest(verifier),
            scopes=scopes,
            return_url=return_url,
            webhook_url=webhook_url,
            expires_at=now + ttl,
            created_at=now,
            confirm=confirm,
            user_issuer=user_issuer,
        )
        if mode == "device" and provider.device is not None and not (return_url or webhook_url):
            # The provider's own device grant has no callback to return a browser or fire a
            # webhook from: with either asked for too, the broker's device page is used instead.
            # Without a device grant (or a device endpoint), the broker's own device page.
            device_start = await self._gate.call(
                connector.id,
                functools.partial(provider.device.start_device, self._ctx, connector, scopes=scopes),
            )
            if device_start is not None:
                pending = replace(
                    base,
                    device_code=device_start.device_code,
                    user_code=normalize_user_code(device_start.user_code),
                    interval=max(device_start.interval, 1),
                    expires_at=min(base.expires_at, device_start.expires_at),
                )
                await self._store.create_authorization(pending, state_hash=None)
                self._record(pending, "authorization.start", "allowed", "device")
                return Started(
                    pending,
                    device_start.verification_uri_complete or device_start.verification_uri,
                    verifier,
                    device_start.user_code,
                )
        code_flow = authorization_code_flow(provider, connector)
        state = secrets.token_urlsafe(32)
        built = await self._gate.call(
            connector.id,
            functools.partial(
                code_flow.start_authorization,
                self._ctx,
                connector,
                redirect_uri=self.callback_url,
                state=state,
                scopes=scopes,
                resources=resources,
                login_hint=login_hint,
                prompt=prompt,
            ),
        )
        pending = replace(
            base, code_verifier=built.code_verifier, nonce=built.nonce, provider_url=built.url
        )
        if mode == "device":  # the provider has no device endpoint: the broker's own device page
            user_code = new_user_code()
            pending = replace(pending, user_code=user_code)
            await self._store.create_authorization(pending, state_hash=digest(state))
            self._record(pending, "authorization.start", "allowed", "device_page")
            code = display_user_code(user_code)
            return Started(
                pending, with_query(self.device_url, {"user_code": code}), verifier, code
            )
        await self._store.create_authorization(pending, state_hash=digest(state))
        self._record(pending, "authorization.start", "allowed", mode)
        return Started(pending, built.url, verifier)

    # -- the broker's device page ---------------------------------------------------------

    async def device_redirect(self, user_code: str) -> str:
        """The provider URL to send a person to who typed ``user_code`` on the broker's device page."""
        code = normalize_user_code(user_code)
        pending = await self._store.by_user_code(code) if len(code) == 8 else None
        if pending is None or pending.status != "pending" or pending.provider_url is None:
            raise NotFound("that code is not valid, or was already used")
        if pending.expires_at <= self._clock.now():
            await self._store.update_authorization(pending.id, expect=["pending"], status="expired")
            raise AuthorizationExpired("that code has expired; ask the app for a new one")
        return pending.provider_url

    # -- callback -------------------------------------------------------------------------------

    async def callback(
        self,
        connectors: ConnectorLookup,
        *,
        state: str | None,
        code: str | None,
        error: str | None,
    ) -> CallbackResult:
        if not state:
            return CallbackResult(
                None, "Invalid link", "This consent link is missing its state.", False
            )
        pending = await self._store.take_by_state(digest(state))
        if pending is None:
            return CallbackResult(
                None, "Invalid link", "This consent link is not valid, or was already used.", False
            )
        now = self._clock.now()
        if pending.expires_at <= now:
            await self._store.update_authorization(pending.id, status="expired")
            return await self._finish(
                replace(pending, status="expired"), "This consent request has expired.", False
            )
        if error or not code:
            status: Status = "denied" if error == "access_denied" else "failed"
            reason = (error or "missing_code")[:64]
            await self._store.update_authorization(
                pending.id, status=status, error=reason, completed_at=now
            )
            self._record(pending, "authorization.callback", "denied", reason)
            return await self._finish(
                replace(pending, status=status, error=reason), "Consent was not given.", False
            )
        connector, provider = await connectors(pending.team_id, pending.connector_id)
        try:
            if pending.code_verifier is None:
                raise InvalidRequest("the authorization request has no PKCE verifier", field="state")
            tokens = await self._gate.call(
                connector.id,
                functools.partial(
                    authorization_code_flow(provider, connector).exchange_code,
                    self._ctx,
                    connector,
                    code=code,
                    redirect_uri=self.callback_url,
                    code_verifier=pending.code_verifier,
                    nonce=pending.nonce,
                ),
            )
        except ValetkeyError as exc:
            await self._store.update_authorization(
                pending.id, status="failed", error=exc.code, completed_at=now
            )
            self._record(pending, "authorization.callback", "denied", exc.code)
            return await self._finish(
                replace(pending, status="failed", error=exc.code),
                "The provider refused the consent.",
                False,
            )
        if pending.mode == "device" or not pending.confirm:
            # Device flows cannot be confirmed in the app's session, and a link may waive
            # confirmation: the grant is made at once.
            await self._activate(pending, tokens)
            return await self._finish(
                replace(pending, status="completed"),
                "Done. You can close this window and return to the app.",
                True,
            )
        await self._store.update_authorization(pending.id, status="confirming", tokens=tokens)
        self._record(pending, "authorization.callback", "allowed", "awaiting_confirmation")
        return await self._finish(
            replace(pending, status="confirming", tokens=tokens),
            "Consent received. Return to the app to finish.",
            True,
        )

    async def _finish(
        self, pending: PendingAuthorization, message: str, ok: bool
    ) -> CallbackResult:
        status = pending.status if pending.status != "confirming" else "confirm"
        if pending.webhook_url:
            # Queued right after the authorization's state changed (its own transaction), before
            # the callback answers: a crash in between is the one window that loses the event.
            await self._notifier.notify(
                pending.webhook_url,
                self.event(pending),
                team_id=pending.team_id,
                dedupe_key=f"authorization:{pending.id}:{pending.status}",
            )
        if pending.return_url:  # a device request may name one too: the browser returns there
            params = {"valetkey_request": pending.id, "valetkey_status": status}
            if pending.error:
                params["valetkey_error"] = pending.error
            return CallbackResult(
                with_query(pending.return_url, params), "Consent", message, ok, pending
            )
        title = "Consent received" if ok else "Consent not completed"
        return CallbackResult(None, title, message, ok, pending)

    def event(self, pending: PendingAuthorization) -> dict[str, Any]:
        """The webhook event for an authorization's current state (no secrets)."""
        kinds = {
            "confirming": "authorization.confirmation_required",
            "completed": "authorization.completed",
        }
        body: dict[str, Any] = {
            "type": kinds.get(pending.status, "authorization.failed"),
            "request": pending.id,
            "status": pending.status,
            "user": pending.user_id,
            "connectorId": pending.connector_id,
            "error": pending.error,
        }
        if pending.user_issuer is not None:
            body["issuer"] = pending.user_issuer
        if pending.tokens is not None:
            body["providerSubject"] = pending.tokens.provider_subject
            body["scopes"] = None if pending.tokens.scopes is None else list(pending.tokens.scopes)
        return body

    # -- confirm ----------------------------------------------------------------------------------

    async def confirm(
        self,
        identity: Identity,
        connector: Connector,
        request_id: str,
        verifier: str,
        *,
        provider: UserFlows | None = None,
    ) -> PendingAuthorization:
        """The app says: the person who finished consent is the user I named. Single use.

        With ``provider``, tokens held for a request that a wrong verifier ends are revoked there
        (RFC 7009): they belong to whoever finished the consent and will never be a grant.
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
        if pending.status != "confirming":
            raise InvalidRequest(
                f"authorization request {request_id} is {pending.status}, not awaiting confirmation",
                field="request",
            )
        if pending.expires_at + DEFAULT_LIFETIME <= self._clock.now():
            if await self._store.update_authorization(
                pending.id, expect=["confirming"], status="expired", tokens=None
            ):
                await self._discard(connector, provider, pending)
            raise AuthorizationExpired("the authorization request expired before it was confirmed")
        if not hmac.compare_digest(digest(verifier), pending.verifier_hash):
            # One wrong verifier ends the request: consent must be started again.
            if await self._store.update_authorization(
                pending.id,
                expect=["confirming"],
                status="failed",
                error="verification_failed",
                tokens=None,
            ):
                await self._discard(connector, provider, pending)
            self._record(pending, "authorization.confirm", "denied", "verification_failed")
            raise VerificationFailed("the verifier does not match; start the authorization again")
        if pending.tokens is None:
            raise InvalidRequest(
                f"authorization request {request_id} holds no tokens; start it again",
                field="request",
            )
        if not await self._store.update_authorization(
            pending.id,
            expect=["confirming"],
            status="completed",
            tokens=None,
            completed_at=self._clock.now(),
        ):
            raise InvalidRequest("authorization request already confirmed", field="request")
        await self._grants.save_grant(self._scope(pending), pending.tokens, source="consent")
        self._record(pending, "authorization.confirm", "allowed", "completed")
        return replace(pending, status="completed")

    async def _discard(
        self, connector: Connector, provider: UserFlows | None, pending: PendingAuthorization
    ) -> None:
        """Revoke held tokens that will never become a grant (best effort: failures are audited)."""
        tokens = pending.tokens
        if provider is None or tokens is None:
            return
        revocation: UserTokenRevocation | None = provider.revocation
        if revocation is None:  # the provider declares no way to revoke a user's token
            self._record(pending, "authorization.discard", "allowed", "skipped")
            return
        token, hint = (
            (tokens.refresh_token, "refresh_token")
            if tokens.refresh_token
            else (tokens.access_token, "access_token")
        )
        try:
            result = await self._gate.call(
                connector.id,
                functools.partial(
                    revocation.revoke_user_token, self._ctx, connector, token=token, hint=hint
                ),
            )
        except ValetkeyError as exc:
            self._record(pending, "authorization.discard", "denied", exc.code)
            return
        outcome = "revoked" if result.revoked else "skipped" if result.skipped else "failed"
        self._record(pending, "authorization.discard", "allowed", outcome)

    async def sweep(self, connectors: ConnectorLookup) -> int:
        """Expire abandoned authorizations; revoke tokens held for a confirmation that never came.

        Run periodically by the broker. Returns how many authorizations it ended.
        """
        now = self._clock.now()
        ended = 0
        for pending in await self._store.stale_authorizations(now, confirm_grace=DEFAULT_LIFETIME):
            if not await self._store.update_authorization(
                pending.id, expect=[pending.status], status="expired", tokens=None, completed_at=now
            ):
                continue  # finished meanwhile
            ended += 1
            self._record(pending, "authorization.expire", "denied", "expired")
            if pending.tokens is not None:
                try:
                    connector, provider = await connectors(pending.team_id, pending.connector_id)
                except ValetkeyError:
                    continue  # the connector is gone: nothing to revoke with
                await self._discard(connector, provider, pending)
        return ended
