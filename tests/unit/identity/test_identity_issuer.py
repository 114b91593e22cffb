"""The broker's own issuer: discovery, JWKS, minting and verifying its own tokens."""

from __future__ import annotations

import pytest
from identity_helpers import assert_refused
from joserfc import jws

from valetkey.core.clock import FrozenClock
from valetkey.errors import InvalidRequest
from valetkey.identity.errors import IdentityError
from valetkey.identity.issuer import BrokerIssuer
from valetkey.identity.keys import SigningKeys

URL = "https://broker.example.com"


@pytest.fixture
def issuer(clock: FrozenClock) -> BrokerIssuer:
    return BrokerIssuer(SigningKeys.generate(), URL + "/", clock)


def test_openid_configuration_names_the_issuer_and_jwks(issuer: BrokerIssuer) -> None:
    """Discovery gives the exact issuer (no trailing slash), its JWKS URL and ES256."""
    doc = issuer.openid_configuration()
    assert doc["issuer"] == URL
    assert doc["jwks_uri"] == URL + "/.well-known/jwks.json"
    assert doc["id_token_signing_alg_values_supported"] == ["ES256"]


def test_jwks_lists_public_keys_only(issuer: BrokerIssuer) -> None:
    """The JWKS holds the public key with its kid, alg and use, and no private member."""
    (key,) = issuer.jwks()["keys"]
    assert key["kid"] == issuer.keys.current.kid
    assert (key["kty"], key["alg"], key["use"]) == ("EC", "ES256", "sig")
    assert "d" not in key


def test_mint_adds_registered_claims(issuer: BrokerIssuer, clock: FrozenClock) -> None:
    """mint() adds iss, aud, iat, nbf, exp and a unique jti, signed ES256 with the current kid."""
    token = issuer.mint({"sub": "s", "x": 1}, audience="app", ttl_seconds=120)
    claims = issuer.verify_own(token, audience="app")
    now = int(clock.timestamp())
    assert (claims["iss"], claims["aud"], claims["iat"], claims["nbf"]) == (URL, "app", now, now)
    assert claims["exp"] == now + 120
    assert (
        claims["jti"]
        != issuer.verify_own(
            issuer.mint({"sub": "s"}, audience="app", ttl_seconds=120), audience="app"
        )["jti"]
    )
    header = jws.extract_compact(token.encode()).headers()
    assert header["kid"] == issuer.keys.current.kid
    assert header["alg"] == "ES256"


def test_mint_refuses_reserved_claims_and_long_lifetimes(issuer: BrokerIssuer) -> None:
    """Callers cannot set iss/exp themselves, nor mint beyond the maximum lifetime."""
    with pytest.raises(InvalidRequest):
        issuer.mint({"exp": 1}, audience="app", ttl_seconds=60)
    with pytest.raises(InvalidRequest):
        issuer.mint({}, audience="app", ttl_seconds=BrokerIssuer.max_lifetime_seconds + 1)


def test_development_identity_claims(issuer: BrokerIssuer) -> None:
    """A development identity carries the vk_ claims and the broker audience, 8 hours long."""
    token = issuer.mint_development_identity(
        team_id="t1", project_id="p1", project_slug="web", subject="member:m1"
    )
    claims = issuer.verify_own(token, audience="valetkey")
    assert claims["vk_kind"] == "development"
    assert claims["vk_env"] == "development"
    assert (claims["vk_team"], claims["vk_project"], claims["vk_project_slug"]) == (
        "t1",
        "p1",
        "web",
    )
    assert claims["exp"] - claims["iat"] == 8 * 3600


def test_verify_own_refuses_another_audience(issuer: BrokerIssuer) -> None:
    """A broker token minted for one audience does not verify for another."""
    token = issuer.mint({"sub": "s"}, audience="destination-a", ttl_seconds=60)
    with pytest.raises(IdentityError) as info:
        issuer.verify_own(token, audience="valetkey")
    assert_refused(info.value, "audience_mismatch", token)


def test_verify_own_refuses_expired_tokens(issuer: BrokerIssuer, clock: FrozenClock) -> None:
    """A broker token past exp and the leeway is refused as token_expired."""
    token = issuer.mint({"sub": "s"}, audience="valetkey", ttl_seconds=60)
    clock.advance(121)
    with pytest.raises(IdentityError) as info:
        issuer.verify_own(token, audience="valetkey")
    assert_refused(info.value, "token_expired", token)


def test_tokens_signed_before_rotation_still_verify(clock: FrozenClock) -> None:
    """After a key rotation, tokens signed with the previous key still verify."""
    keys = SigningKeys.generate()
    before = BrokerIssuer(keys, URL, clock).mint({"sub": "s"}, audience="valetkey", ttl_seconds=60)
    rotated = BrokerIssuer(keys.rotate(), URL, clock)
    assert rotated.verify_own(before, audience="valetkey")["sub"] == "s"
    assert len(rotated.jwks()["keys"]) == 2


def test_tokens_from_another_broker_key_are_refused(
    issuer: BrokerIssuer, clock: FrozenClock
) -> None:
    """A token with the broker's iss but signed by a key it never had is refused (unknown_key)."""
    other = BrokerIssuer(SigningKeys.generate(), URL, clock)
    token = other.mint({"sub": "s"}, audience="valetkey", ttl_seconds=60)
    with pytest.raises(IdentityError) as info:
        issuer.verify_own(token, audience="valetkey")
    assert_refused(info.value, "unknown_key", token)
