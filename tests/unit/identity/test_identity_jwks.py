"""JwksCache: discovery, checks, caching, refetch on unknown kid, SSRF and size bounds.

The issuer here is served through httpx2's MockTransport so each rule is checked in
isolation; tests/integration/test_identity_loopback_issuer.py runs the same cache
against a real HTTP server.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest
from identity_helpers import ISSUER
from joserfc.jwk import ECKey, OctKey

from valetkey.core.clock import FrozenClock
from valetkey.identity.errors import IssuerUnreachable, UnknownKey
from valetkey.identity.jwks import JwksCache


class FakeIssuer:
    """An OIDC issuer's two documents, with request counting and optional latency."""

    def __init__(self, issuer: str = ISSUER) -> None:
        self.issuer = issuer
        self.discovery_issuer = issuer
        self.keys: list[dict[str, Any]] = [self.new_key("k1")]
        self.requests: list[str] = []
        self.delay = 0.0
        self.jwks_response: httpx2.Response | None = None

    @staticmethod
    def new_key(kid: str) -> dict[str, Any]:
        return dict(ECKey.generate_key("P-256", parameters={"kid": kid}).as_dict(private=False))

    async def handler(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request.url.path)
        if self.delay:
            await asyncio.sleep(self.delay)
        base = httpx2.URL(self.issuer).path.rstrip("/")
        if request.url.path == base + "/.well-known/openid-configuration":
            body = {"issuer": self.discovery_issuer, "jwks_uri": self.issuer + "/keys"}
            return httpx2.Response(200, json=body)
        if request.url.path == base + "/keys":
            return self.jwks_response or httpx2.Response(200, json={"keys": self.keys})
        return httpx2.Response(404)

    @property
    def jwks_fetches(self) -> int:
        return sum(1 for p in self.requests if p.endswith("/keys"))


@pytest.fixture
def fake() -> FakeIssuer:
    return FakeIssuer()


@pytest.fixture
async def http(fake: FakeIssuer) -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(transport=httpx2.MockTransport(fake.handler)) as client:
        yield client


def cache(http: httpx2.AsyncClient, clock: FrozenClock, **kwargs: Any) -> JwksCache:
    # Mock transport: no DNS here, so the address check is off; the SSRF tests turn it on.
    kwargs.setdefault("allow_private_addresses", True)
    return JwksCache(http, clock, **kwargs)


async def test_keys_come_from_discovery_then_jwks(
    fake: FakeIssuer, http: httpx2.AsyncClient, clock: FrozenClock
) -> None:
    """The cache reads the discovery document, then its jwks_uri, and finds a key by kid."""
    jwks = cache(http, clock)
    key = await jwks.find_key(ISSUER, "k1")
    assert key.kid == "k1"
    assert fake.requests == ["/.well-known/openid-configuration", "/keys"]


async def test_issuer_with_a_path_appends_the_well_known_path(clock: FrozenClock) -> None:
    """For an issuer with a path, discovery is at {issuer}/.well-known/openid-configuration."""
    fake = FakeIssuer("https://login.example.com/tenant-1/v2.0")
    async with httpx2.AsyncClient(transport=httpx2.MockTransport(fake.handler)) as http:
        await cache(http, clock).key_set(fake.issuer)
    assert fake.requests[0] == "/tenant-1/v2.0/.well-known/openid-configuration"


async def test_keys_are_cached_until_the_ttl(
    fake: FakeIssuer, http: httpx2.AsyncClient, clock: FrozenClock
) -> None:
    """Within the TTL no request is made; after it the keys are fetched again."""
    jwks = cache(http, clock, ttl_seconds=600)
    await jwks.key_set(ISSUER)
    await jwks.key_set(ISSUER)
    assert fake.jwks_fetches == 1
    clock.advance(601)
    await jwks.key_set(ISSUER)
    assert fake.jwks_fetches == 2


async def test_unknown_kid_refetches_once_per_cooldown(
    fake: FakeIssuer, http: httpx2.AsyncClient, clock: FrozenClock
) -> None:
    """An unknown kid refetches at once (a routine fetch does not count), then not again within the cooldown."""
    jwks = cache(http, clock, cooldown_seconds=60)
    await jwks.key_set(ISSUER)
    fake.keys.append(fake.new_key("k2"))
    assert (await jwks.find_key(ISSUER, "k2")).kid == "k2"  # rotated just after a routine fetch
    assert fake.jwks_fetches == 2
    with pytest.raises(UnknownKey) as info:
        await jwks.find_key(ISSUER, "k3")  # within the cooldown of the kid refetch: no fetch
    assert info.value.code == "unknown_key"
    assert fake.jwks_fetches == 2
    clock.advance(61)
    fake.keys.append(fake.new_key("k3"))
    assert (await jwks.find_key(ISSUER, "k3")).kid == "k3"
    assert fake.jwks_fetches == 3


async def test_concurrent_misses_share_one_fetch(
    fake: FakeIssuer, http: httpx2.AsyncClient, clock: FrozenClock
) -> None:
    """Many simultaneous lookups of a new kid cause one refetch, not one each."""
    jwks = cache(http, clock, cooldown_seconds=60)
    await jwks.key_set(ISSUER)
    clock.advance(61)
    fake.keys.append(fake.new_key("k2"))
    fake.delay = 0.02
    keys = await asyncio.gather(*(jwks.find_key(ISSUER, "k2") for _ in range(10)))
    assert {k.kid for k in keys} == {"k2"}
    assert fake.jwks_fetches == 2


async def test_discovery_naming_another_issuer_is_refused(
    fake: FakeIssuer, http: httpx2.AsyncClient, clock: FrozenClock
) -> None:
    """A discovery document whose issuer differs (even by a slash) is refused."""
    fake.discovery_issuer = ISSUER + "/"
    with pytest.raises(IssuerUnreachable) as info:
        await cache(http, clock).key_set(ISSUER)
    assert info.value.code == "issuer_unreachable"
    assert info.value.status == 503
    assert fake.jwks_fetches == 0


async def test_failures_back_off(
    fake: FakeIssuer, http: httpx2.AsyncClient, clock: FrozenClock
) -> None:
    """After a failed fetch, the issuer is not asked again until the backoff passes."""
    fake.jwks_response = httpx2.Response(500)
    jwks = cache(http, clock, failure_backoff_seconds=5)
    for _ in range(3):
        with pytest.raises(IssuerUnreachable):
            await jwks.key_set(ISSUER)
    assert fake.jwks_fetches == 1
    clock.advance(6)
    fake.jwks_response = None
    await jwks.key_set(ISSUER)
    assert fake.jwks_fetches == 2


@pytest.mark.parametrize(
    "response",
    [
        httpx2.Response(200, content=b"x" * 300_000),
        httpx2.Response(200, content=b"not json"),
        httpx2.Response(200, json=["not", "an", "object"]),
        httpx2.Response(200, json={"keys": "nope"}),
        httpx2.Response(302, headers={"location": "http://169.254.169.254/"}),
        httpx2.Response(404),
    ],
)
async def test_bad_jwks_responses_are_refused(
    response: httpx2.Response, fake: FakeIssuer, http: httpx2.AsyncClient, clock: FrozenClock
) -> None:
    """Oversized, non-JSON, non-object, redirecting or failing JWKS answers are refused."""
    fake.jwks_response = response
    with pytest.raises(IssuerUnreachable):
        await cache(http, clock).key_set(ISSUER)
    assert not any("169.254" in r for r in fake.requests)


async def test_symmetric_encryption_and_private_keys_are_ignored(
    fake: FakeIssuer, http: httpx2.AsyncClient, clock: FrozenClock
) -> None:
    """A JWKS offering only an oct key, an enc key or a private key yields no usable key."""
    oct_key = dict(OctKey.generate_key(256, parameters={"kid": "hmac"}).as_dict())
    enc_key = {**fake.new_key("enc"), "use": "enc"}
    private = dict(ECKey.generate_key("P-256", parameters={"kid": "priv"}).as_dict(private=True))
    fake.keys = [oct_key, enc_key, private]
    with pytest.raises(IssuerUnreachable) as info:
        await cache(http, clock).key_set(ISSUER)
    assert "no usable signing key" in info.value.message


async def test_unknown_key_types_are_skipped(
    fake: FakeIssuer, http: httpx2.AsyncClient, clock: FrozenClock
) -> None:
    """Keys the cache does not understand are skipped; the others are kept."""
    fake.keys.append({"kty": "ML-DSA", "kid": "pq", "pub": "AAAA"})
    keys = await cache(http, clock).key_set(ISSUER)
    assert [k.kid for k in keys] == ["k1"]


@pytest.mark.parametrize(
    "issuer",
    [
        "http://ci.example.com",  # https required
        "https://127.0.0.1",
        "https://localhost",
        "https://10.1.2.3",
        "https://169.254.169.254",
        "https://[::1]",
        "https://[::ffff:127.0.0.1]",
        "https://user:pw@ci.example.com",
        "https://[64:ff9b::7f00:1]",  # NAT64 of 127.0.0.1
        "https://[2002:a9fe:a9fe::1]",  # 6to4 of 169.254.169.254
        "https://[::10.0.0.1]",  # IPv4-compatible
        "https://0177.0.0.1",
        "https://0x7f.1",
        "https://2130706433",
        "https://xn--zz.example",
    ],
)
async def test_ssrf_targets_are_refused(
    issuer: str, fake: FakeIssuer, http: httpx2.AsyncClient, clock: FrozenClock
) -> None:
    """Plain http, private, loopback or link-local hosts and userinfo are refused unrequested."""
    with pytest.raises(IssuerUnreachable):
        await JwksCache(http, clock).key_set(issuer)
    assert fake.requests == []


async def test_http_on_loopback_needs_allow_private_addresses(
    http: httpx2.AsyncClient, clock: FrozenClock
) -> None:
    """http is accepted only for a loopback host, and only when private addresses are allowed."""
    with pytest.raises(IssuerUnreachable):
        await cache(http, clock).key_set("http://ci.example.com")
    fake_local = FakeIssuer("http://127.0.0.1:8999")
    async with httpx2.AsyncClient(transport=httpx2.MockTransport(fake_local.handler)) as local:
        keys = await cache(local, clock).key_set(fake_local.issuer)
    assert [k.kid for k in keys] == ["k1"]
