"""IdentityVerifier: dispatch by bearer kind, each refusal's code, the verified-result cache."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import httpx2
import pytest
from identity_helpers import (
    AUDIENCE,
    DROP,
    ISSUER,
    DictStore,
    TokenFactory,
    assert_refused,
    b64json,
    binding,
)
from joserfc.jwk import RSAKey

from valetkey.core.clock import FrozenClock
from valetkey.core.models import Identity
from valetkey.identity.access_tokens import new_access_token
from valetkey.identity.errors import IdentityError
from valetkey.identity.issuer import BrokerIssuer
from valetkey.identity.jwks import JwksCache
from valetkey.identity.keys import SigningKeys
from valetkey.identity.verifier import IdentityVerifier, check_environment

BROKER = "https://broker.example.com"


class Issuer:
    """The external issuer's documents, served over httpx2's MockTransport; counts requests."""

    def __init__(self, key: RSAKey) -> None:
        self.jwks = {"keys": [dict(key.as_dict(private=False))]}
        self.requests = 0

    def handler(self, request: httpx2.Request) -> httpx2.Response:
        self.requests += 1
        if request.url.path == "/.well-known/openid-configuration":
            return httpx2.Response(200, json={"issuer": ISSUER, "jwks_uri": ISSUER + "/jwks"})
        return httpx2.Response(200, json=self.jwks)


@pytest.fixture
def external(rsa_key: RSAKey) -> Issuer:
    return Issuer(rsa_key)


@pytest.fixture
async def http(external: Issuer) -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(transport=httpx2.MockTransport(external.handler)) as client:
        yield client


@pytest.fixture
def broker(clock: FrozenClock) -> BrokerIssuer:
    return BrokerIssuer(SigningKeys.generate(), BROKER, clock)


@pytest.fixture
def store() -> DictStore:
    return DictStore([binding("b1", {"repository_id": "123456"})])


@pytest.fixture
def verifier(
    broker: BrokerIssuer, http: httpx2.AsyncClient, store: DictStore, clock: FrozenClock
) -> IdentityVerifier:
    jwks = JwksCache(http, clock, allow_private_addresses=True)  # no DNS behind MockTransport
    return IdentityVerifier(issuer=broker, jwks=jwks, store=store, clock=clock)


async def refused(verifier: IdentityVerifier, token: str, code: str) -> IdentityError:
    with pytest.raises(IdentityError) as info:
        await verifier.verify(token)
    assert_refused(info.value, code, token)
    return info.value


def access_identity(clock: FrozenClock, **changes: Any) -> Identity:
    fields: dict[str, Any] = {
        "team_id": "t1",
        "project_id": "p1",
        "project_slug": "web",
        "environment": "production",
        "kind": "access_token",
        "subject": "at_1",
        "expires_at": clock.now() + timedelta(days=30),
    }
    fields.update(changes)
    return Identity(**fields)


# --- development identities -------------------------------------------------------------


async def test_development_identity_resolves_to_development(
    verifier: IdentityVerifier, broker: BrokerIssuer, store: DictStore
) -> None:
    """A broker-signed development identity verifies to its project, environment development."""
    token = broker.mint_development_identity(
        team_id="t1", project_id="p1", project_slug="web", subject="member:m1"
    )
    identity = await verifier.verify(token)
    assert (identity.kind, identity.environment) == ("development", "development")
    assert (identity.team_id, identity.project_id, identity.project_slug) == ("t1", "p1", "web")
    assert identity.subject == "member:m1"
    assert store.calls == 0  # own tokens need no store lookup


async def test_broker_token_for_production_is_refused(
    verifier: IdentityVerifier, broker: BrokerIssuer
) -> None:
    """A broker development-kind token claiming production is refused as environment_mismatch."""
    claims = {
        "sub": "m1",
        "vk_kind": "development",
        "vk_team": "t1",
        "vk_project": "p1",
        "vk_project_slug": "web",
        "vk_env": "production",
    }
    token = broker.mint(claims, audience=AUDIENCE, ttl_seconds=600)
    err = await refused(verifier, token, "environment_mismatch")
    assert err.status == 403


async def test_development_identity_cannot_be_used_for_production(
    verifier: IdentityVerifier, broker: BrokerIssuer
) -> None:
    """check_environment refuses a development identity used against production."""
    token = broker.mint_development_identity(
        team_id="t1", project_id="p1", project_slug="web", subject="m1"
    )
    identity = await verifier.verify(token)
    check_environment(identity, "development")
    with pytest.raises(IdentityError) as info:
        check_environment(identity, "production")
    assert_refused(info.value, "environment_mismatch")


async def test_broker_token_for_another_audience_is_refused(
    verifier: IdentityVerifier, broker: BrokerIssuer
) -> None:
    """A broker attestation minted for an app's audience is not an identity for the broker."""
    token = broker.mint({"sub": "x", "vk_kind": "development"}, audience="app", ttl_seconds=60)
    await refused(verifier, token, "audience_mismatch")


# --- access tokens -------------------------------------------------------------------------


async def test_access_token_resolves_through_the_store(
    verifier: IdentityVerifier, store: DictStore, clock: FrozenClock
) -> None:
    """An access token is looked up by its hash and returns the stored identity."""
    token, digest = new_access_token()
    store.access_tokens[digest] = access_identity(clock)
    assert (await verifier.verify(token)).subject == "at_1"


async def test_unknown_access_token_is_refused(verifier: IdentityVerifier) -> None:
    """An access token the store does not know (or revoked) is refused as token_revoked."""
    token, _ = new_access_token()
    await refused(verifier, token, "token_revoked")


async def test_malformed_access_token_is_refused_without_a_lookup(
    verifier: IdentityVerifier, store: DictStore
) -> None:
    """A vk_at_ string of the wrong shape is refused before touching the store."""
    await refused(verifier, "vk_at_tooshort", "malformed_token")
    assert store.calls == 0


async def test_access_token_cache_is_short_and_forget_evicts(
    verifier: IdentityVerifier, store: DictStore, clock: FrozenClock
) -> None:
    """An access token is re-checked after 60 s, and at once after forget(token_hash)."""
    token, digest = new_access_token()
    store.access_tokens[digest] = access_identity(clock)
    await verifier.verify(token)
    await verifier.verify(token)
    assert store.calls == 1
    clock.advance(61)
    await verifier.verify(token)
    assert store.calls == 2
    del store.access_tokens[digest]  # revoked
    verifier.forget(token_hash=digest)
    await refused(verifier, token, "token_revoked")


async def test_access_token_past_its_expiry_is_refused(
    verifier: IdentityVerifier, store: DictStore, clock: FrozenClock
) -> None:
    """An identity whose expiry has passed is refused even if the store returned it."""
    token, digest = new_access_token()
    store.access_tokens[digest] = access_identity(clock, expires_at=clock.now())
    await refused(verifier, token, "token_revoked")


# --- external OIDC identities ----------------------------------------------------------------


async def test_external_token_resolves_through_its_binding(
    verifier: IdentityVerifier, make_token: TokenFactory
) -> None:
    """A trusted issuer's token matching a binding gives an oidc identity with its claims."""
    identity = await verifier.verify(make_token())
    assert (identity.kind, identity.project_id, identity.environment) == (
        "oidc",
        "p1",
        "production",
    )
    assert identity.subject == "repo:acme/app:ref:refs/heads/main"
    assert identity.claims["repository_id"] == "123456"


async def test_most_specific_binding_wins(
    verifier: IdentityVerifier, store: DictStore, make_token: TokenFactory
) -> None:
    """With two matching bindings the more specific one decides the environment."""
    store.bindings.append(
        binding("b2", {"repository_id": "123456", "ref": "refs/heads/main"}, environment="preview")
    )
    assert (await verifier.verify(make_token())).environment == "preview"


async def test_untrusted_issuer_is_refused(
    verifier: IdentityVerifier, make_token: TokenFactory, external: Issuer
) -> None:
    """A token from an issuer without bindings is refused before any key fetch."""
    err = await refused(verifier, make_token(iss="https://evil.example.com"), "untrusted_issuer")
    assert err.details["issuer"] == "https://evil.example.com"
    assert external.requests == 0


async def test_claims_matching_no_binding_are_refused(
    verifier: IdentityVerifier, make_token: TokenFactory
) -> None:
    """A genuine token whose claims match no binding is refused (403)."""
    err = await refused(verifier, make_token(repository_id="999"), "no_matching_binding")
    assert err.status == 403


async def test_ambiguous_bindings_are_refused(
    verifier: IdentityVerifier, store: DictStore, make_token: TokenFactory
) -> None:
    """Equally specific bindings for different environments refuse the token."""
    store.bindings.append(binding("b2", {"ref": "refs/heads/main"}, environment="preview"))
    await refused(verifier, make_token(), "ambiguous_binding")


@pytest.mark.parametrize(
    "conditions",
    [
        {"repository_id": "123456", "ref": "refs/heads/main"},  # more specific
        {"repository_id": "123456"},  # equally specific, same claims
        {"repository_id": "1234*"},  # a glob
    ],
)
async def test_bindings_of_two_teams_for_one_audience_select_nothing(
    verifier: IdentityVerifier,
    store: DictStore,
    make_token: TokenFactory,
    conditions: dict[str, str],
) -> None:
    """Should a store ever return two teams' bindings for one (iss, aud), the token is refused,
    never served to either team (the store returns only the pair's owning team)."""
    store.bindings.append(replace(binding("b2", conditions, project_id="p2"), team_id="t2"))
    await refused(verifier, make_token(), "ambiguous_binding")


async def test_wrong_audience_is_refused(
    verifier: IdentityVerifier, make_token: TokenFactory
) -> None:
    """A token whose audience no binding expects is refused, naming the expected audience."""
    err = await refused(verifier, make_token(aud="sts.amazonaws.com"), "audience_mismatch")
    assert err.details["expected"] == [AUDIENCE]


async def test_wrong_audience_names_no_audience_when_several_teams_use_the_issuer(
    verifier: IdentityVerifier, store: DictStore, make_token: TokenFactory
) -> None:
    """With two teams' bindings on one issuer, an audience mismatch lists neither team's audience."""
    other = replace(binding("b2", audience="valetkey:team-b", project_id="p2"), team_id="t2")
    store.bindings.append(other)
    token = make_token(aud="sts.amazonaws.com")
    err = await refused(verifier, token, "audience_mismatch")
    assert "expected" not in err.details
    assert AUDIENCE not in err.message
    assert "team-b" not in err.message


async def test_multiple_audiences_are_refused(
    verifier: IdentityVerifier, make_token: TokenFactory
) -> None:
    """A token with two audiences is refused."""
    await refused(verifier, make_token(aud=[AUDIENCE, "x"]), "multiple_audiences")


async def test_algorithm_not_in_the_binding_is_refused(
    verifier: IdentityVerifier, store: DictStore, make_token: TokenFactory
) -> None:
    """An RS256 token is refused when the issuer's bindings allow only ES256."""
    store.bindings[:] = [binding("b1", algorithms=("ES256",))]
    await refused(verifier, make_token(), "algorithm_not_allowed")


async def test_an_algorithm_outside_the_binding_list_is_never_used(
    verifier: IdentityVerifier, store: DictStore, make_token: TokenFactory
) -> None:
    """A stored binding naming PS384 (which creation refuses) does not make PS384 tokens valid."""
    store.bindings[:] = [binding("b1", algorithms=("PS384",))]
    error = await refused(verifier, make_token(alg="PS384"), "untrusted_issuer")
    assert "no usable algorithm" in error.message


async def test_alg_none_is_refused_for_external_issuers(
    verifier: IdentityVerifier, clock: FrozenClock
) -> None:
    """An unsigned token from a trusted issuer is refused as algorithm_not_allowed."""
    now = int(clock.timestamp())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "s", "repository_id": "123456",
              "iat": now, "exp": now + 60}  # fmt: skip
    await refused(
        verifier, f"{b64json({'alg': 'none'})}.{b64json(claims)}.", "algorithm_not_allowed"
    )


async def test_expired_external_token_is_refused(
    verifier: IdentityVerifier, make_token: TokenFactory, clock: FrozenClock
) -> None:
    """An external token past exp + leeway is refused as token_expired."""
    token = make_token()
    clock.advance(400)
    await refused(verifier, token, "token_expired")


async def test_missing_exp_is_refused(verifier: IdentityVerifier, make_token: TokenFactory) -> None:
    """An external token without exp is refused as missing_claim."""
    await refused(verifier, make_token(exp=DROP), "missing_claim")


async def test_overlong_external_token_is_refused(
    verifier: IdentityVerifier, make_token: TokenFactory, clock: FrozenClock
) -> None:
    """An external token living longer than 24 hours is refused."""
    now = int(clock.timestamp())
    await refused(verifier, make_token(exp=now + 25 * 3600), "token_lifetime_too_long")


async def test_unknown_kid_is_refused(verifier: IdentityVerifier, make_token: TokenFactory) -> None:
    """A token whose kid the issuer does not publish is refused as unknown_key."""
    stranger = RSAKey.generate_key(2048, parameters={"kid": "stranger"})
    await refused(verifier, make_token(key=stranger), "unknown_key")


@pytest.mark.parametrize("bearer", ["", "x" * 20_000, "garbage", "a.b.c"])
async def test_malformed_bearers_are_refused(verifier: IdentityVerifier, bearer: str) -> None:
    """Empty, oversized or non-JWT bearers are refused as malformed_token."""
    await refused(verifier, bearer, "malformed_token")


# --- the verified-result cache ---------------------------------------------------------------


async def test_second_verify_uses_the_cache(
    verifier: IdentityVerifier, store: DictStore, external: Issuer, make_token: TokenFactory
) -> None:
    """A repeated external token needs no store lookup and no HTTP request."""
    token = make_token()
    first = await verifier.verify(token)
    calls, requests = store.calls, external.requests
    assert await verifier.verify(token) is first
    assert (store.calls, external.requests) == (calls, requests)


async def test_cached_tokens_expire_with_the_token(
    verifier: IdentityVerifier, make_token: TokenFactory, clock: FrozenClock
) -> None:
    """A cached identity is not served past the token's exp: the token is re-verified."""
    token = make_token()
    await verifier.verify(token)
    clock.advance(300 + 61)
    await refused(verifier, token, "token_expired")


async def test_cache_is_bounded(
    broker: BrokerIssuer, http: httpx2.AsyncClient, store: DictStore, clock: FrozenClock
) -> None:
    """With cache_size=2, the least recently used entry is evicted."""
    verifier = IdentityVerifier(
        issuer=broker, jwks=JwksCache(http, clock), store=store, clock=clock, cache_size=2
    )
    tokens = []
    for i in range(3):
        token, digest = new_access_token()
        store.access_tokens[digest] = access_identity(clock, subject=f"at_{i}")
        tokens.append(token)
        await verifier.verify(token)
    calls = store.calls
    await verifier.verify(tokens[2])
    await verifier.verify(tokens[1])
    assert store.calls == calls
    await verifier.verify(tokens[0])
    assert store.calls == calls + 1


async def test_forget_all_clears_the_cache(
    verifier: IdentityVerifier, store: DictStore, clock: FrozenClock
) -> None:
    """forget(all=True) makes every bearer be verified again."""
    token, digest = new_access_token()
    store.access_tokens[digest] = access_identity(clock)
    await verifier.verify(token)
    verifier.forget(all=True)
    await verifier.verify(token)
    assert store.calls == 2
