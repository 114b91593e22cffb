"""Consent as a core: start, callback, confirm with the verifier, device polling, expiry."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from consent_helpers import CONNECTOR, Core, build_core
from exchange_helpers import IDENTITY

from valetkey.core.consent import Started
from valetkey.core.grants import GrantScope
from valetkey.core.models import Subject
from valetkey.core.providers import TokenSet, UserFlows
from valetkey.errors import (
    AuthorizationExpired,
    AuthorizationPending,
    InvalidRequest,
    NotFound,
    VerificationFailed,
)

ALICE = GrantScope(
    IDENTITY.team_id,
    CONNECTOR.id,
    IDENTITY.project_id,
    IDENTITY.environment,
    Subject("user", "alice"),
)


def flows(core: Core) -> UserFlows:
    declared = core.provider.user_flows()
    assert declared is not None
    return declared


async def start(core: Core, **how: object) -> Started:
    mode: dict[str, object] = {"return_url": None, "webhook_url": None, "device": False}
    mode.update(how or {"return_url": "https://app.example/done"})
    return await core.consent.start(
        IDENTITY,
        CONNECTOR,
        flows(core),
        user_id="alice",
        scopes=("read",),
        lifetime=None,
        **mode,  # type: ignore[arg-type]
    )


async def test_start_callback_confirm_makes_the_grant() -> None:
    """A browser consent waits for the app's confirm with the verifier, then becomes the grant."""
    core = build_core()
    started = await start(core)
    assert started.url.startswith("https://idp.example/authorize")
    result = await core.consent.callback(
        core.lookup, state=core.provider.states[0], code="c1", error=None
    )
    assert result.ok
    assert result.redirect is not None
    assert f"valetkey_request={started.authorization.id}" in result.redirect
    assert "valetkey_status=confirm" in result.redirect
    assert core.provider.verifiers_seen == ["pkce-1"]  # the PKCE verifier kept since start
    assert await core.grants.get_grant(ALICE) is None  # not before the app confirms
    done = await core.consent.confirm(
        IDENTITY, CONNECTOR, started.authorization.id, started.verifier
    )
    assert done.status == "completed"
    grant = await core.grants.get_grant(ALICE)
    assert grant is not None
    assert grant.tokens.access_token == "at-c1"
    with pytest.raises(InvalidRequest):  # single use
        await core.consent.confirm(IDENTITY, CONNECTOR, started.authorization.id, started.verifier)


async def test_wrong_verifier_ends_the_request() -> None:
    """One wrong verifier fails the request, revokes the held tokens, and the right one no longer works."""
    core = build_core()
    started = await start(core)
    await core.consent.callback(core.lookup, state=core.provider.states[0], code="c1", error=None)
    with pytest.raises(VerificationFailed):
        await core.consent.confirm(
            IDENTITY, CONNECTOR, started.authorization.id, "guess", provider=flows(core)
        )
    assert core.provider.revoked == [("rt-c1", "refresh_token")]
    with pytest.raises(InvalidRequest):
        await core.consent.confirm(IDENTITY, CONNECTOR, started.authorization.id, started.verifier)
    assert await core.grants.get_grant(ALICE) is None
    assert ("authorization.confirm", "denied", "verification_failed") in await core.actions()


async def test_state_is_single_use() -> None:
    """A consent link's state is honoured once; replaying it exchanges no second code."""
    core = build_core()
    await start(core)
    state = core.provider.states[0]
    assert (await core.consent.callback(core.lookup, state=state, code="c1", error=None)).ok
    replay = await core.consent.callback(core.lookup, state=state, code="c2", error=None)
    assert not replay.ok
    assert replay.message == "This consent link is not valid, or was already used."
    assert core.provider.calls["exchange_code"] == 1


async def test_expired_request_is_not_exchanged() -> None:
    """A callback after the request's lifetime ends it as expired without asking the provider."""
    core = build_core()
    started = await start(core)
    core.clock.advance(timedelta(minutes=10).total_seconds())
    result = await core.consent.callback(
        core.lookup, state=core.provider.states[0], code="c1", error=None
    )
    assert not result.ok
    assert result.redirect is not None
    assert "valetkey_status=expired" in result.redirect
    assert "exchange_code" not in core.provider.calls
    assert core.store.requests[started.authorization.id].status == "expired"


async def test_confirmation_that_never_comes_is_swept() -> None:
    """Maintenance expires a consent left confirming past its grace and revokes its tokens."""
    core = build_core()
    started = await start(core)
    await core.consent.callback(core.lookup, state=core.provider.states[0], code="c1", error=None)
    core.clock.advance(timedelta(minutes=19).total_seconds())
    assert await core.consent.sweep(core.lookup) == 0  # within expiry + grace
    core.clock.advance(timedelta(minutes=1).total_seconds())
    assert await core.consent.sweep(core.lookup) == 1
    assert core.store.requests[started.authorization.id].status == "expired"
    assert core.provider.revoked == [("rt-c1", "refresh_token")]
    with pytest.raises(InvalidRequest):
        await core.consent.confirm(IDENTITY, CONNECTOR, started.authorization.id, started.verifier)


async def test_webhook_mode_queues_the_event() -> None:
    """A webhook consent queues a confirmation_required event (no secret in it) after the callback."""
    core = build_core()
    started = await start(core, webhook_url="https://app.example/hook")
    await core.consent.callback(core.lookup, state=core.provider.states[0], code="c1", error=None)
    [sent] = core.notifier.sent
    assert sent.url == "https://app.example/hook"
    assert sent.event["type"] == "authorization.confirmation_required"
    assert sent.event["request"] == started.authorization.id
    assert "at-c1" not in repr(sent.event)
    assert "rt-c1" not in repr(sent.event)


async def test_device_flow_pending_then_approved() -> None:
    """Device polling reports pending, honours the interval, and makes the grant once approved."""
    core = build_core()
    started = await start(core, device=True)
    assert started.user_code == "WDJB-MJHT"
    with pytest.raises(AuthorizationPending):
        await core.consent.poll(IDENTITY, CONNECTOR, flows(core), "alice")
    with pytest.raises(AuthorizationPending):  # too soon: the provider is not asked
        await core.consent.poll(IDENTITY, CONNECTOR, flows(core), "alice")
    assert core.provider.calls["poll_device"] == 1
    core.provider.device_answers.append(
        TokenSet("at-dev", core.clock.now() + timedelta(hours=1), "rt-dev")
    )
    core.clock.advance(5)
    await core.consent.poll(IDENTITY, CONNECTOR, flows(core), "alice")
    assert core.provider.calls["poll_device"] == 2
    grant = await core.grants.get_grant(ALICE)
    assert grant is not None
    assert grant.tokens.access_token == "at-dev"


async def test_device_code_expires() -> None:
    """A device authorization polled after its expiry is ended as expired."""
    core = build_core()
    started = await start(core, device=True)
    core.clock.advance(timedelta(minutes=5).total_seconds())
    with pytest.raises(AuthorizationExpired):
        await core.consent.poll(IDENTITY, CONNECTOR, flows(core), "alice")
    assert core.store.requests[started.authorization.id].status == "expired"
    assert "poll_device" not in core.provider.calls


async def test_watch_follows_its_own_request_not_an_earlier_grant() -> None:
    """A user with a grant already: watching a new device request stays pending until the
    provider approves that request; another project's request is not found."""
    core = build_core()
    await core.grants.save_grant(
        ALICE, TokenSet("at-old", core.clock.now() + timedelta(hours=1), "rt-old"), source="import"
    )
    started = await start(core, device=True)
    request = started.authorization.id
    with pytest.raises(AuthorizationPending):
        await core.consent.watch(IDENTITY, CONNECTOR, flows(core), request)
    core.provider.device_answers.append(
        TokenSet("at-new", core.clock.now() + timedelta(hours=1), "rt-new")
    )
    core.clock.advance(5)
    done = await core.consent.watch(IDENTITY, CONNECTOR, flows(core), request)
    assert done.status == "completed"
    grant = await core.grants.get_grant(ALICE)
    assert grant is not None
    assert grant.tokens.access_token == "at-new"
    again = await core.consent.watch(IDENTITY, CONNECTOR, flows(core), request)
    assert again.status == "completed"
    other = replace(IDENTITY, project_id="prj_other")
    with pytest.raises(NotFound):
        await core.consent.watch(other, CONNECTOR, flows(core), request)


async def test_watch_reports_a_browser_request_pending_until_it_is_confirmed() -> None:
    """A browser request is pending while the user has not come back, and while it awaits confirm."""
    core = build_core()
    started = await start(core)
    with pytest.raises(AuthorizationPending):
        await core.consent.watch(IDENTITY, CONNECTOR, flows(core), started.authorization.id)
