"""Identity verification against an independent OIDC issuer served over real HTTP on 127.0.0.1.

The issuer is a small ``http.server`` in a thread: it serves a discovery document
and a JWKS, signs its own tokens, and counts every request, so the tests can see
exactly when the broker's JwksCache goes to the network.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime

import httpx2
import pytest
from tests.peers.issuer import AUDIENCE, LoopbackIssuer

from valetkey.core.clock import FrozenClock
from valetkey.core.models import Identity
from valetkey.identity.bindings import TrustBinding
from valetkey.identity.errors import IdentityError
from valetkey.identity.issuer import BrokerIssuer
from valetkey.identity.jwks import JwksCache
from valetkey.identity.keys import SigningKeys
from valetkey.identity.verifier import IdentityVerifier

START = datetime(2030, 1, 1, tzinfo=UTC)


class MemoryStore:
    """The lead's IdentityStore, as a dict: trust bindings by issuer; no access tokens."""

    def __init__(self, bindings: Sequence[TrustBinding]) -> None:
        self.bindings = list(bindings)

    async def bindings_for_issuer(self, issuer: str) -> Sequence[TrustBinding]:
        return [b for b in self.bindings if b.issuer == issuer]

    async def access_token_identity(self, token_hash: str) -> Identity | None:
        return None


@pytest.fixture
def issuer() -> Iterator[LoopbackIssuer]:
    server = LoopbackIssuer()
    server.thread.start()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()
        server.thread.join(timeout=5)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(START)


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient() as client:
        yield client


@pytest.fixture
def jwks(http: httpx2.AsyncClient, clock: FrozenClock) -> JwksCache:
    return JwksCache(http, clock, cooldown_seconds=60, allow_private_addresses=True)


@pytest.fixture
def verifier(issuer: LoopbackIssuer, jwks: JwksCache, clock: FrozenClock) -> IdentityVerifier:
    binding = TrustBinding(
        id="b1",
        team_id="t1",
        project_id="p1",
        project_slug="agents",
        environment="production",
        issuer=issuer.url,
        audience=AUDIENCE,
        conditions={"kubernetes.io/namespace": "agents", "sub": "system:serviceaccount:agents:*"},
        algorithms=("ES256",),
    )
    broker = BrokerIssuer(SigningKeys.generate(), "https://broker.example.com", clock)
    return IdentityVerifier(issuer=broker, jwks=jwks, store=MemoryStore([binding]), clock=clock)


async def test_token_verifies_through_discovery_and_jwks(
    issuer: LoopbackIssuer, verifier: IdentityVerifier, clock: FrozenClock
) -> None:
    """A token from the loopback issuer resolves through its binding after one JWKS fetch."""
    identity = await verifier.verify(issuer.sign(clock))
    assert (identity.kind, identity.project_id, identity.environment) == (
        "oidc",
        "p1",
        "production",
    )
    assert identity.subject == "system:serviceaccount:agents:runner"
    assert issuer.requests["/.well-known/openid-configuration"] == 1
    assert issuer.jwks_fetches == 1


async def test_second_verify_of_the_same_token_does_no_http(
    issuer: LoopbackIssuer, verifier: IdentityVerifier, clock: FrozenClock
) -> None:
    """The verified-result cache answers a repeated token without any request."""
    token = issuer.sign(clock)
    first = await verifier.verify(token)
    before = issuer.total_requests
    assert await verifier.verify(token) is first
    assert issuer.total_requests == before


async def test_key_rotation_costs_one_refetch(
    issuer: LoopbackIssuer, verifier: IdentityVerifier, clock: FrozenClock
) -> None:
    """After the issuer rotates, a token with the new kid triggers one refetch, then verifies."""
    await verifier.verify(issuer.sign(clock))
    clock.advance(61)
    new_key = issuer.rotate("k2")
    identity = await verifier.verify(issuer.sign(clock, key=new_key, jti="a"))
    assert identity.project_id == "p1"
    assert issuer.jwks_fetches == 2
    await verifier.verify(issuer.sign(clock, key=new_key, jti="b"))  # a different token, same kid
    assert issuer.jwks_fetches == 2


async def test_unknown_kid_twice_within_the_cooldown_refetches_once(
    issuer: LoopbackIssuer, verifier: IdentityVerifier, clock: FrozenClock
) -> None:
    """Two tokens naming an unpublished kid inside one cooldown cause a single refetch."""
    await verifier.verify(issuer.sign(clock))
    clock.advance(61)
    ghost = LoopbackIssuer.new_key("ghost")
    for jti in ("1", "2"):
        with pytest.raises(IdentityError) as info:
            await verifier.verify(issuer.sign(clock, key=ghost, jti=jti))
        assert info.value.code == "unknown_key"
        clock.advance(10)
    assert issuer.jwks_fetches == 2


async def test_discovery_naming_another_issuer_is_refused(
    issuer: LoopbackIssuer, verifier: IdentityVerifier, clock: FrozenClock
) -> None:
    """A discovery document whose issuer is not the token's issuer is refused; no JWKS fetch."""
    issuer.discovery_issuer = "https://accounts.example.com"
    with pytest.raises(IdentityError) as info:
        await verifier.verify(issuer.sign(clock))
    assert info.value.code == "issuer_unreachable"
    assert issuer.jwks_fetches == 0


async def test_loopback_issuer_is_refused_without_allow_private_addresses(
    issuer: LoopbackIssuer, http: httpx2.AsyncClient, clock: FrozenClock
) -> None:
    """By default a loopback issuer URL is refused before any request (SSRF)."""
    strict = JwksCache(http, clock)
    with pytest.raises(IdentityError) as info:
        await strict.key_set(issuer.url)
    assert info.value.code == "issuer_unreachable"
    assert issuer.total_requests == 0
