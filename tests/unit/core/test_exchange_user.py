"""The exchange serving user tokens from grants: as stored, refreshed once, failed on invalid_grant."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

import pytest
from consent_helpers import CONNECTOR, Core, build_core
from exchange_helpers import IDENTITY

from valetkey.core.grants import GrantScope
from valetkey.core.models import Subject, TokenRequest
from valetkey.core.providers import TokenSet
from valetkey.errors import InvalidGrant, UserAuthorizationRequired

ALICE = Subject("user", "alice")
SCOPE = GrantScope(IDENTITY.team_id, CONNECTOR.id, IDENTITY.project_id, IDENTITY.environment, ALICE)
REQUEST = TokenRequest(ALICE)
N = 20


async def granted(core: Core, lifetime: timedelta = timedelta(hours=1)) -> None:
    tokens = TokenSet("at-1", core.clock.now() + lifetime, "rt-1", scopes=("read",))
    await core.grants.save_grant(SCOPE, tokens, source="import")


async def test_serves_the_grants_access_token() -> None:
    """A fresh grant's access token is handed out as is, with no provider call."""
    core = build_core()
    await granted(core)
    issued = await core.exchange().exchange(IDENTITY, CONNECTOR.uid, REQUEST)
    assert issued.token == "at-1"
    assert issued.scopes == ("read",)
    assert core.provider.calls == {}
    assert core.grants.refresh_calls == 0  # not even a refresh claim


async def test_failed_grant_is_not_served_while_its_token_is_valid() -> None:
    """A grant marked as needing consent is refused even if its access token has not expired."""
    core = build_core()
    await granted(core)
    grant = await core.grants.get_grant(SCOPE)
    assert grant is not None
    core.grants.grants[grant.id] = replace(grant, status="needs_consent", failure="revoked")
    with pytest.raises(UserAuthorizationRequired) as caught:
        await core.exchange().exchange(IDENTITY, CONNECTOR.uid, REQUEST)
    assert caught.value.details["reason"] == "grant_failed"
    assert caught.value.details["failure"] == "revoked"


async def test_no_grant_needs_consent() -> None:
    """A user without a grant gets user_authorization_required pointing at the consent start."""
    core = build_core()
    with pytest.raises(UserAuthorizationRequired) as caught:
        await core.exchange().exchange(IDENTITY, CONNECTOR.uid, REQUEST)
    assert caught.value.details["authorizeUrl"] == f"/v1/connect/authorize/{CONNECTOR.uid}"


async def test_expired_grant_refreshed_once_under_concurrency() -> None:
    """N concurrent requests on two replicas for an expired grant cost one provider refresh, and
    a refresh answer without a refresh token keeps the old one."""
    core = build_core()
    await granted(core)
    core.clock.advance(timedelta(hours=2).total_seconds())
    core.provider.refreshes.append(TokenSet("at-2", core.clock.now() + timedelta(hours=1)))
    replicas = (core.exchange(), core.exchange())
    issued = await asyncio.gather(
        *(replicas[i % 2].exchange(IDENTITY, CONNECTOR.uid, REQUEST) for i in range(N))
    )
    assert {i.token for i in issued} == {"at-2"}
    assert core.provider.calls == {"refresh": 1}
    grant = await core.grants.get_grant(SCOPE)
    assert grant is not None
    assert grant.tokens.refresh_token == "rt-1"
    assert grant.obtained_at == core.clock.now()


async def test_invalid_grant_marks_the_grant_failed() -> None:
    """A refresh refused with invalid_grant marks the grant failed, asks for consent again, and
    tells the app's webhook once; later requests do not ask the provider again."""
    core = build_core()
    core.webhooks["alice"] = "https://app.example/hook"
    await granted(core)
    core.clock.advance(timedelta(hours=2).total_seconds())
    core.provider.refreshes.append(InvalidGrant("refresh token revoked"))
    exchange = core.exchange()
    with pytest.raises(UserAuthorizationRequired) as caught:
        await exchange.exchange(IDENTITY, CONNECTOR.uid, REQUEST)
    assert caught.value.details["reason"] == "grant_failed"
    grant = await core.grants.get_grant(SCOPE)
    assert grant is not None
    assert grant.status == "needs_consent"
    with pytest.raises(UserAuthorizationRequired):
        await exchange.exchange(IDENTITY, CONNECTOR.uid, REQUEST)
    assert core.provider.calls == {"refresh": 1}
    for _ in range(3):
        await asyncio.sleep(0)  # the grant.failed event is queued in the background
    [sent] = core.notifier.sent
    assert sent.url == "https://app.example/hook"
    assert sent.event["type"] == "grant.failed"
    assert sent.event["error"] == "invalid_grant"


async def test_confirmed_consent_is_served() -> None:
    """After start, callback and confirm, the exchange serves the consented user's token."""
    core = build_core()
    flows = core.provider.user_flows()
    assert flows is not None
    started = await core.consent.start(
        IDENTITY,
        CONNECTOR,
        flows,
        user_id="alice",
        scopes=("read",),
        return_url="https://app.example/",
        webhook_url=None,
        device=False,
        lifetime=None,
    )
    await core.consent.callback(core.lookup, state=core.provider.states[0], code="c9", error=None)
    await core.consent.confirm(IDENTITY, CONNECTOR, started.authorization.id, started.verifier)
    issued = await core.exchange().exchange(IDENTITY, CONNECTOR.uid, REQUEST)
    assert issued.token == "at-c9"


async def test_revoking_a_user_forgets_the_grant_and_revokes_its_refresh_token() -> None:
    """Revoking a user's tokens deletes the grant, revokes its refresh token at the provider (RFC
    7009) and drops the cached token, so the next request needs consent again."""
    core = build_core()
    await granted(core)
    exchange = core.exchange()
    assert (await exchange.exchange(IDENTITY, CONNECTOR.uid, REQUEST)).token == "at-1"
    counts = await exchange.revoke(IDENTITY, CONNECTOR.uid, ALICE)
    # the issued token (this provider cannot revoke it: skipped) and the grant (revoked)
    assert (counts.tokens_found, counts.deleted) == (2, 2)
    assert (counts.provider_revoked, counts.provider_skipped) == (1, 1)
    assert core.provider.revoked == [("rt-1", "refresh_token")]
    assert await core.grants.get_grant(SCOPE) is None
    with pytest.raises(UserAuthorizationRequired):
        await exchange.exchange(IDENTITY, CONNECTOR.uid, REQUEST)
