"""The consent use cases: policy and capabilities checked first, grants saved, replicas told."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from consent_helpers import CONNECTOR, Core, build_core
from exchange_helpers import IDENTITY, MemoryExchangeStore

from valetkey.core.consent_cases import ConsentCases, ConsentRequest, TokenImport
from valetkey.core.grants import GrantScope
from valetkey.core.models import Link, Policy, Subject
from valetkey.core.ports import ConnectorView, Invalidation, LocalBus
from valetkey.errors import NotFound, ScopeNotAllowed, SubjectNotAllowed, UnsupportedOperation
from valetkey.providers.registry import ProviderRegistry

ALICE = Subject("user", "alice")


@dataclass
class Cases:
    core: Core
    cases: ConsentCases
    published: list[Invalidation]


USERS = Policy(subjects=("user",), scopes=("read", "write"))


def build_cases(policy: Policy = USERS) -> Cases:
    core = build_core()
    link = Link("lnk_1", CONNECTOR.id, IDENTITY.project_id, (IDENTITY.environment,), policy)
    bus = LocalBus()
    published: list[Invalidation] = []
    bus.subscribe(published.append)
    cases = ConsentCases(
        consent=core.consent,
        connectors=MemoryExchangeStore(ConnectorView(CONNECTOR, {IDENTITY.project_id: link})),
        providers=ProviderRegistry([core.provider]),
        grants=core.grants,
        bus=bus,
        audit=core.audit,
        clock=core.clock,
    )
    return Cases(core, cases, published)


async def test_authorize_asks_for_the_links_ceiling_when_no_scope_is_named() -> None:
    """Consent that names no scopes asks the provider for the link's ceiling, never for nothing."""
    c = build_cases()
    started = await c.cases.authorize(
        IDENTITY, CONNECTOR.uid, ConsentRequest(ALICE, (), return_url="https://app.example/")
    )
    assert started.started.authorization.scopes == ("read", "write")
    assert started.started.authorization.confirm is True


async def test_authorize_refuses_before_the_provider_is_asked() -> None:
    """A refused policy, an unknown connector or a provider that cannot act for users start nothing."""
    c = build_cases()
    with pytest.raises(ScopeNotAllowed):
        await c.cases.authorize(
            IDENTITY,
            CONNECTOR.uid,
            ConsentRequest(ALICE, ("admin",), return_url="https://app.example/"),
        )
    with pytest.raises(NotFound):
        await c.cases.authorize(
            IDENTITY, "users/other", ConsentRequest(ALICE, return_url="https://app.example/")
        )
    app_only = build_cases(Policy(subjects=("app",)))
    with pytest.raises(SubjectNotAllowed):
        await app_only.cases.authorize(
            IDENTITY, CONNECTOR.uid, ConsentRequest(ALICE, return_url="https://app.example/")
        )
    no_users = build_cases()
    no_users.core.provider.subjects = ("app",)
    with pytest.raises(UnsupportedOperation):
        await no_users.cases.authorize(
            IDENTITY, CONNECTOR.uid, ConsentRequest(ALICE, return_url="https://app.example/")
        )
    assert c.core.provider.calls == {}
    assert no_users.core.provider.calls == {}


async def test_confirm_tells_replicas_to_drop_the_users_tokens() -> None:
    """Confirming a consent saves the grant and publishes a tokens invalidation for that user."""
    c = build_cases()
    started = await c.cases.authorize(
        IDENTITY, CONNECTOR.uid, ConsentRequest(ALICE, return_url="https://app.example/")
    )
    await c.core.consent.callback(
        c.core.lookup, state=c.core.provider.states[0], code="c1", error=None
    )
    done = await c.cases.confirm(
        IDENTITY, CONNECTOR.uid, started.started.authorization.id, started.started.verifier
    )
    assert done.status == "completed"
    assert c.published == [
        Invalidation(kind="tokens", connector_id=CONNECTOR.id, subject_key="user:alice")
    ]


async def test_import_saves_the_grant_and_audits() -> None:
    """Imported tokens become the user's grant, replicas are told, and the import is audited."""
    c = build_cases()
    imported = await c.cases.import_tokens(
        IDENTITY, CONNECTOR.uid, TokenImport(ALICE, "at-x", "rt-x", scopes=("read",))
    )
    assert imported.refreshable
    scope = GrantScope(
        IDENTITY.team_id, CONNECTOR.id, IDENTITY.project_id, IDENTITY.environment, ALICE
    )
    grant = await c.core.grants.get_grant(scope)
    assert grant is not None
    assert grant.id == imported.grant_id
    assert grant.source == "import"
    assert c.published == [
        Invalidation(kind="tokens", connector_id=CONNECTOR.id, subject_key="user:alice")
    ]
    assert await c.core.actions() == [("grant.import", "allowed", "imported")]
    with pytest.raises(ScopeNotAllowed):
        await c.cases.import_tokens(
            IDENTITY, CONNECTOR.uid, TokenImport(ALICE, "at-y", scopes=("admin",))
        )
