"""In-memory implementations of the core's grant and consent ports, and a user-flow provider.

Each keeps the contract documented in ``valetkey.core.ports`` strictly (the grant store's
claim and compare-and-set, the consent store's single-use state and conditional updates), so
that the consent service and the exchange can be tested as a core: no HTTP, no database.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, ClassVar

from valetkey.core.authorizations import Mode, PendingAuthorization, Status
from valetkey.core.clock import Clock
from valetkey.core.grants import Grant, GrantScope, Refresher, RefreshNeeded, merge_refreshed
from valetkey.core.models import Connector, Subject, SubjectType, TokenRequest
from valetkey.core.providers import (
    AuthorizationStart,
    Capabilities,
    ConfigField,
    DeviceStart,
    MintedToken,
    ProviderContext,
    RevokeResult,
    TokenSet,
    UserFlows,
    ValidatedConfig,
)
from valetkey.errors import AuthorizationPending, InvalidGrant, UnsupportedOperation


class MemoryGrantStore:
    """``GrantStore`` in memory, with the refresh claim and the compare-and-set on ``version``."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.grants: dict[str, Grant] = {}
        self._scopes: dict[GrantScope, str] = {}
        #: grant id -> the claim holding its refresh.
        self._claims: dict[str, object] = {}
        self._changed = asyncio.Event()
        self._ids = itertools.count(1)
        #: How many times ``refresh_grant`` was entered (each may take the claim).
        self.refresh_calls = 0

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def get_grant(self, scope: GrantScope) -> Grant | None:
        grant_id = self._scopes.get(scope)
        return None if grant_id is None else self.grants[grant_id]

    async def save_grant(self, scope: GrantScope, tokens: TokenSet, *, source: str) -> Grant:
        old_id = self._scopes.get(scope)
        old = None if old_id is None else self.grants[old_id]
        grant = Grant(
            id=old.id if old is not None else f"grt_{next(self._ids)}",
            team_id=scope.team_id,
            connector_id=scope.connector_id,
            project_id=scope.project_id,
            environment=scope.environment,
            subject=scope.subject,
            status="active",
            tokens=tokens,
            version=(old.version if old is not None else 0) + 1,
            source=source,
            obtained_at=self.clock.now(),
        )
        self._scopes[scope] = grant.id
        self.grants[grant.id] = grant
        self._claims.pop(grant.id, None)  # a refresh in flight for the old grant stores nothing
        self._wake()
        return grant

    def _read(self, grant_id: str) -> Grant:
        grant = self.grants.get(grant_id)
        if grant is None:
            raise InvalidGrant("the grant was removed")
        return grant

    def _settle(self, grant_id: str, claim: object, claimed: int, new: Grant | None) -> bool:
        """Store ``new`` and release the claim, if the claim and the version are still ours."""
        try:
            current = self.grants.get(grant_id)
            ours = (
                current is not None
                and self._claims.get(grant_id) is claim
                and current.version == claimed
            )
            if ours:
                del self._claims[grant_id]
                if new is not None:
                    self.grants[grant_id] = new
            return ours
        finally:
            self._wake()

    async def refresh_grant(
        self, grant_id: str, refresher: Refresher, *, needed: RefreshNeeded | None = None
    ) -> Grant:
        self.refresh_calls += 1
        while True:
            current = self._read(grant_id)
            if needed is not None and not needed(current):
                return current
            if grant_id in self._claims:
                await self._changed.wait()  # another request holds the claim
                continue
            claim = object()
            self._claims[grant_id] = claim
            try:
                new = await refresher(current)
            except InvalidGrant as exc:
                failed = replace(
                    current,
                    status="needs_consent",
                    failure=exc.message,
                    version=current.version + 1,
                )
                self._settle(grant_id, claim, current.version, failed)
                raise
            except BaseException:
                self._settle(grant_id, claim, current.version, None)
                raise
            if new is None:
                self._settle(grant_id, claim, current.version, None)
                return current
            merged = merge_refreshed(current.tokens, new)
            obtained = (
                current.obtained_at
                if merged.access_token == current.tokens.access_token
                else self.clock.now()
            )
            stored = replace(
                current, tokens=merged, version=current.version + 1, obtained_at=obtained
            )
            if self._settle(grant_id, claim, current.version, stored):
                return stored
            # replaced meanwhile (a new consent): what is stored wins; read it again

    async def delete_grants(
        self,
        team_id: str,
        connector_id: str,
        *,
        subject: Subject | None,
        project_id: str | None,
        environment: str | None,
    ) -> Sequence[Grant]:
        removed = []
        for scope, grant_id in list(self._scopes.items()):
            if (
                scope.team_id == team_id
                and scope.connector_id == connector_id
                and subject in (None, scope.subject)
                and project_id in (None, scope.project_id)
                and environment in (None, scope.environment)
            ):
                removed.append(self.grants.pop(grant_id))
                del self._scopes[scope]
        return removed


class MemoryConsentStore:
    """``ConsentStore`` in memory: state hashes are single use, updates are conditional."""

    def __init__(self) -> None:
        self.requests: dict[str, PendingAuthorization] = {}
        self._by_state: dict[str, str] = {}
        self.completed_at: dict[str, datetime | None] = {}

    async def create_authorization(
        self, pending: PendingAuthorization, *, state_hash: str | None
    ) -> None:
        self.requests[pending.id] = pending
        if state_hash is not None:
            self._by_state[state_hash] = pending.id

    async def take_by_state(self, state_hash: str) -> PendingAuthorization | None:
        authorization_id = self._by_state.get(state_hash)
        pending = None if authorization_id is None else self.requests[authorization_id]
        if pending is None or pending.status != "pending":
            return None
        taken = replace(pending, status="exchanging")
        self.requests[taken.id] = taken
        return taken

    async def get_authorization(self, authorization_id: str) -> PendingAuthorization | None:
        return self.requests.get(authorization_id)

    async def stale_authorizations(
        self, now: datetime, *, confirm_grace: timedelta, limit: int = 200
    ) -> Sequence[PendingAuthorization]:
        stale = [
            p
            for p in self.requests.values()
            if (p.status == "pending" and p.expires_at <= now)
            or (p.status == "confirming" and p.expires_at + confirm_grace <= now)
        ]
        return stale[:limit]

    async def by_user_code(self, user_code: str) -> PendingAuthorization | None:
        return next((p for p in self.requests.values() if p.user_code == user_code), None)

    async def latest_device_authorization(
        self,
        connector_id: str,
        project_id: str,
        environment: str,
        user_id: str,
        issuer: str | None = None,
        mode: Mode = "device",
    ) -> PendingAuthorization | None:
        mine = [
            p
            for p in self.requests.values()
            if p.mode == mode
            and (p.connector_id, p.project_id, p.environment, p.user_id, p.user_issuer)
            == (connector_id, project_id, environment, user_id, issuer)
        ]
        return max(mine, key=lambda p: p.created_at, default=None)

    async def update_authorization(
        self,
        authorization_id: str,
        *,
        expect: Sequence[Status] | None = None,
        due_by: datetime | None = None,
        **changes: Any,
    ) -> bool:
        pending = self.requests.get(authorization_id)
        if pending is None or (expect is not None and pending.status not in expect):
            return False
        if (
            due_by is not None
            and pending.next_poll_at is not None
            and pending.next_poll_at > due_by
        ):
            return False
        # ``completed_at`` is a column of the stored row, not of the domain record.
        self.completed_at[authorization_id] = changes.pop("completed_at", None)
        self.requests[authorization_id] = replace(pending, **changes)
        return True


@dataclass
class Notified:
    url: str
    event: Mapping[str, Any]
    dedupe_key: str | None


class MemoryNotifier:
    """``Notifier`` that keeps what it was asked to queue."""

    def __init__(self) -> None:
        self.sent: list[Notified] = []

    async def notify(
        self,
        url: str,
        event: Mapping[str, Any],
        *,
        team_id: str,
        dedupe_key: str | None = None,
    ) -> None:
        self.sent.append(Notified(url, dict(event), dedupe_key))


@dataclass
class UserProvider:
    """A provider for users that declares authorization code, device, refresh and revocation.

    Every call is counted in ``calls``; ``refreshes`` are answered in order (a ``TokenSet``, or an
    exception to raise); ``device_answers`` likewise for device polls.
    """

    clock: Clock
    type: ClassVar[str] = "users"
    services: ClassVar[tuple[str, ...]] = ("users",)
    config_fields: ClassVar[tuple[ConfigField, ...]] = ()
    refreshes: list[TokenSet | Exception] = field(default_factory=list)
    device_answers: list[TokenSet | Exception] = field(default_factory=list)
    device_endpoint: bool = True
    calls: dict[str, int] = field(default_factory=dict)
    states: list[str] = field(default_factory=list)
    verifiers_seen: list[str] = field(default_factory=list)
    revoked: list[tuple[str, str]] = field(default_factory=list)
    subjects: tuple[SubjectType, ...] = ("user",)

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def capabilities(self, connector: Connector) -> Capabilities:
        return Capabilities(self.subjects, scopable=True, short_lived=True, revocation=True)

    def validate_config(
        self, data: Mapping[str, Any], previous: ValidatedConfig | None = None
    ) -> ValidatedConfig:
        return ValidatedConfig(config=dict(data), secrets={})

    def user_flows(self) -> UserFlows | None:
        return UserFlows(authorization_code=self, device=self, refresh=self, revocation=self)

    async def mint(
        self, ctx: ProviderContext[object], connector: Connector, request: TokenRequest
    ) -> MintedToken:
        raise UnsupportedOperation("this provider mints no app token")

    async def revoke(
        self, ctx: ProviderContext[object], connector: Connector, token: MintedToken
    ) -> RevokeResult:
        return RevokeResult(revoked=False, skipped=True)

    async def start_authorization(
        self,
        ctx: ProviderContext[object],
        connector: Connector,
        *,
        redirect_uri: str,
        state: str,
        scopes: tuple[str, ...] | None,
        resources: tuple[str, ...] | None = None,
        login_hint: str | None = None,
        prompt: str | None = None,
    ) -> AuthorizationStart:
        self._count("start_authorization")
        self.states.append(state)
        verifier = f"pkce-{len(self.states)}"
        return AuthorizationStart(f"https://idp.example/authorize?state={state}", verifier)

    async def exchange_code(
        self,
        ctx: ProviderContext[object],
        connector: Connector,
        *,
        code: str,
        redirect_uri: str,
        code_verifier: str,
        nonce: str | None,
        resources: tuple[str, ...] | None = None,
    ) -> TokenSet:
        self._count("exchange_code")
        self.verifiers_seen.append(code_verifier)
        return TokenSet(
            access_token=f"at-{code}",
            expires_at=ctx.clock.now() + timedelta(hours=1),
            refresh_token=f"rt-{code}",
            scopes=("read",),
            provider_subject="acct-1",
        )

    async def start_device(
        self, ctx: ProviderContext[object], connector: Connector, *, scopes: tuple[str, ...] | None
    ) -> DeviceStart | None:
        self._count("start_device")
        if not self.device_endpoint:
            return None
        return DeviceStart(
            device_code="dev-code",
            user_code="WDJB-MJHT",
            verification_uri="https://idp.example/device",
            verification_uri_complete=None,
            expires_at=ctx.clock.now() + timedelta(minutes=5),
            interval=5,
        )

    async def poll_device(
        self, ctx: ProviderContext[object], connector: Connector, *, device_code: str
    ) -> TokenSet:
        self._count("poll_device")
        if not self.device_answers:
            raise AuthorizationPending("the user has not finished")
        answer = self.device_answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def refresh(
        self,
        ctx: ProviderContext[object],
        connector: Connector,
        *,
        refresh_token: str,
        scopes: tuple[str, ...] | None = None,
        resources: tuple[str, ...] | None = None,
    ) -> TokenSet:
        self._count("refresh")
        for _ in range(3):  # let concurrent requests pile up behind this refresh
            await asyncio.sleep(0)
        answer = self.refreshes.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def revoke_user_token(
        self, ctx: ProviderContext[object], connector: Connector, *, token: str, hint: str
    ) -> RevokeResult:
        self._count("revoke_user_token")
        self.revoked.append((token, hint))
        return RevokeResult(revoked=True)
