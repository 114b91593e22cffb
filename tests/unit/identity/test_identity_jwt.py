"""verify_jwt: signature first, then the claim policy; every refusal has its own code."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from identity_helpers import AUDIENCE, DROP, ISSUER, TokenFactory, assert_refused, b64, b64json
from joserfc.jwk import ECKey, KeySet, RSAKey

from valetkey.core.clock import FrozenClock
from valetkey.identity.errors import IdentityError
from valetkey.identity.jwt import LEEWAY_SECONDS, IssuerPolicy, verify_jwt

POLICY = IssuerPolicy(
    issuer=ISSUER, audience=AUDIENCE, algorithms=("RS256", "ES256"), max_lifetime_seconds=3600
)


def refused(
    token: str, keys: KeySet, clock: FrozenClock, code: str, policy: IssuerPolicy = POLICY
) -> IdentityError:
    with pytest.raises(IdentityError) as info:
        verify_jwt(token, keys, policy, clock)
    assert_refused(info.value, code, token)
    return info.value


def test_valid_token_returns_its_claims(
    make_token: TokenFactory, key_set: KeySet, clock: FrozenClock
) -> None:
    """A well-signed token within policy verifies and yields its claims."""
    claims = verify_jwt(make_token(), key_set, POLICY, clock)
    assert claims["sub"] == "repo:acme/app:ref:refs/heads/main"
    assert claims["repository_id"] == "123456"


def test_es256_token_verifies(
    make_token: TokenFactory, key_set: KeySet, ec_key: ECKey, clock: FrozenClock
) -> None:
    """An ES256 token signed by the EC key in the set verifies."""
    assert verify_jwt(make_token(key=ec_key), key_set, POLICY, clock)["iss"] == ISSUER


def test_alg_none_is_refused(key_set: KeySet, clock: FrozenClock) -> None:
    """An unsigned token (alg none) is refused as algorithm_not_allowed."""
    now = int(clock.timestamp())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "iat": now, "exp": now + 60}
    token = f"{b64json({'alg': 'none', 'typ': 'JWT'})}.{b64json(claims)}."
    refused(token, key_set, clock, "algorithm_not_allowed")


def test_hs256_signed_with_the_public_key_is_refused(
    key_set: KeySet, rsa_key: RSAKey, clock: FrozenClock
) -> None:
    """The key-confusion attack (HMAC keyed with the issuer's public PEM) is refused."""
    now = int(clock.timestamp())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "iat": now, "exp": now + 60}
    head = b64json({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"})
    signing_input = f"{head}.{b64json(claims)}".encode()
    public_pem = rsa_key.as_pem(private=False)
    signature = hmac.new(public_pem, signing_input, hashlib.sha256).digest()
    token = f"{signing_input.decode()}.{b64(signature)}"
    refused(token, key_set, clock, "algorithm_not_allowed")


def test_algorithm_outside_the_policy_is_refused(
    make_token: TokenFactory, key_set: KeySet, clock: FrozenClock
) -> None:
    """A genuine RS256 token is refused for an issuer whose policy lists only ES256."""
    policy = IssuerPolicy(
        issuer=ISSUER, audience=AUDIENCE, algorithms=("ES256",), max_lifetime_seconds=3600
    )
    refused(make_token(), key_set, clock, "algorithm_not_allowed", policy)


@pytest.mark.parametrize("alg", ["none", "HS256", "HS512", "RSA1_5"])
def test_a_policy_cannot_list_symmetric_or_none(alg: str) -> None:
    """Policies refuse none, HMAC and non-signature algorithms at construction."""
    with pytest.raises(ValueError, match="not allowed"):
        IssuerPolicy(issuer=ISSUER, audience=AUDIENCE, algorithms=(alg,), max_lifetime_seconds=60)


def test_key_of_the_wrong_type_for_the_header_alg_is_refused(
    make_token: TokenFactory, key_set: KeySet, ec_key: ECKey, clock: FrozenClock
) -> None:
    """A header claiming RS256 but naming the EC key's kid is refused as invalid_signature."""
    token = make_token(key=ec_key, header={"alg": "ES256"})
    parts = token.split(".")
    forged = f"{b64json({'alg': 'RS256', 'kid': 'ec-1'})}.{parts[1]}.{parts[2]}"
    refused(forged, key_set, clock, "invalid_signature")


def test_tampered_payload_is_refused(
    make_token: TokenFactory, key_set: KeySet, clock: FrozenClock
) -> None:
    """Changing one claim after signing breaks the signature."""
    head, _, signature = make_token().split(".")
    payload = b64json({"iss": ISSUER, "aud": AUDIENCE, "sub": "attacker", "iat": 1, "exp": 2})
    refused(f"{head}.{payload}.{signature}", key_set, clock, "invalid_signature")


def test_signature_by_another_key_with_the_same_kid_is_refused(
    make_token: TokenFactory, key_set: KeySet, clock: FrozenClock
) -> None:
    """A token signed by an impostor key reusing a trusted kid is refused."""
    impostor = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})
    refused(make_token(key=impostor), key_set, clock, "invalid_signature")


def test_unknown_kid_is_refused(
    make_token: TokenFactory, key_set: KeySet, clock: FrozenClock
) -> None:
    """A kid that is not in the key set is refused as unknown_key."""
    stranger = ECKey.generate_key("P-256", parameters={"kid": "who-is-this"})
    err = refused(make_token(key=stranger), key_set, clock, "unknown_key")
    assert err.details["kid"] == "who-is-this"


def test_missing_kid_with_several_keys_is_refused(
    make_token: TokenFactory, key_set: KeySet, ec_key: ECKey, clock: FrozenClock
) -> None:
    """Without a kid, a key set of several keys gives no key: unknown_key."""
    _, payload, signature = make_token(key=ec_key).split(".")
    no_kid = b64json({"alg": "ES256", "typ": "JWT"})
    refused(f"{no_kid}.{payload}.{signature}", key_set, clock, "unknown_key")


def test_expired_token_is_refused_after_the_leeway(
    make_token: TokenFactory, key_set: KeySet, clock: FrozenClock
) -> None:
    """exp in the past is tolerated for the one leeway, then refused as token_expired."""
    token = make_token()
    clock.advance(300 + LEEWAY_SECONDS - 1)
    verify_jwt(token, key_set, POLICY, clock)
    clock.advance(1)
    refused(token, key_set, clock, "token_expired")


def test_nbf_in_the_future_is_refused(
    make_token: TokenFactory, key_set: KeySet, clock: FrozenClock
) -> None:
    """nbf beyond now + leeway is refused as token_not_yet_valid."""
    now = int(clock.timestamp())
    err = refused(make_token(nbf=now + LEEWAY_SECONDS + 5), key_set, clock, "token_not_yet_valid")
    assert err.details["claim"] == "nbf"


def test_iat_in_the_future_is_refused(
    make_token: TokenFactory, key_set: KeySet, clock: FrozenClock
) -> None:
    """A token issued in the future (iat beyond the leeway) is refused."""
    now = int(clock.timestamp())
    token = make_token(iat=now + 600, nbf=DROP, exp=now + 900)
    err = refused(token, key_set, clock, "token_not_yet_valid")
    assert err.details["claim"] == "iat"


def test_nbf_is_optional(make_token: TokenFactory, key_set: KeySet, clock: FrozenClock) -> None:
    """A token without nbf is accepted (nbf is checked only when present)."""
    assert "nbf" not in verify_jwt(make_token(nbf=DROP), key_set, POLICY, clock)


@pytest.mark.parametrize("claim", ["exp", "iat", "iss", "aud", "sub"])
def test_missing_required_claim_is_refused(
    claim: str, make_token: TokenFactory, key_set: KeySet, clock: FrozenClock
) -> None:
    """Each required claim, when absent, is refused as missing_claim naming it."""
    err = refused(make_token(**{claim: DROP}), key_set, clock, "missing_claim")
    assert err.details["claim"] == claim
    assert claim in err.message


def test_wrong_audience_is_refused(
    make_token: TokenFactory, key_set: KeySet, clock: FrozenClock
) -> None:
    """A token for another audience is refused, naming the expected one."""
    err = refused(make_token(aud="sts.amazonaws.com"), key_set, clock, "audience_mismatch")
    assert err.details["expected"] == AUDIENCE


def test_several_audiences_are_refused(
    make_token: TokenFactory, key_set: KeySet, clock: FrozenClock
) -> None:
    """A token carrying two audiences is refused even when one is ours."""
    refused(make_token(aud=[AUDIENCE, "other"]), key_set, clock, "multiple_audiences")


def test_a_list_of_one_audience_is_accepted(
    make_token: TokenFactory, key_set: KeySet, clock: FrozenClock
) -> None:
    """aud as a one-element list equal to the expected audience is accepted."""
    assert verify_jwt(make_token(aud=[AUDIENCE]), key_set, POLICY, clock)["aud"] == [AUDIENCE]


def test_issuer_must_match_exactly(
    make_token: TokenFactory, key_set: KeySet, clock: FrozenClock
) -> None:
    """An iss differing only by a trailing slash is refused as untrusted_issuer."""
    refused(make_token(iss=ISSUER + "/"), key_set, clock, "untrusted_issuer")


def test_lifetime_longer_than_the_maximum_is_refused(
    make_token: TokenFactory, key_set: KeySet, clock: FrozenClock
) -> None:
    """exp - iat above the policy's maximum is refused as token_lifetime_too_long."""
    now = int(clock.timestamp())
    refused(make_token(exp=now + 3601), key_set, clock, "token_lifetime_too_long")


@pytest.mark.parametrize(
    "token",
    ["", "not-a-jwt", "a.b", "a.b.c.d", "!!!.eyJ9.x", f"{b64(b'not json')}.{b64json({})}.sig"],
)
def test_malformed_tokens_are_refused(token: str, key_set: KeySet, clock: FrozenClock) -> None:
    """Strings that are not compact JWS are refused as malformed_token."""
    refused(token, key_set, clock, "malformed_token")


def test_non_numeric_exp_is_refused(
    make_token: TokenFactory, key_set: KeySet, clock: FrozenClock
) -> None:
    """An exp given as a string is refused as malformed_token."""
    refused(make_token(exp="2030-01-01"), key_set, clock, "malformed_token")


def test_unknown_critical_header_is_refused(
    rsa_key: RSAKey, key_set: KeySet, clock: FrozenClock
) -> None:
    """A correctly signed token whose crit header names an unknown extension is refused."""
    now = int(clock.timestamp())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "iat": now, "exp": now + 60}
    head = b64json({"alg": "RS256", "kid": "rsa-1", "crit": ["x-unknown"], "x-unknown": 1})
    signing_input = f"{head}.{b64json(claims)}".encode()
    private = rsa_key.private_key
    assert private is not None
    signature = private.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    refused(f"{signing_input.decode()}.{b64(signature)}", key_set, clock, "malformed_token")


def test_embedded_jwk_header_is_ignored(
    make_token: TokenFactory, key_set: KeySet, clock: FrozenClock
) -> None:
    """A token signed by its own embedded key (jwk header) is not trusted by it."""
    attacker = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})
    token = make_token(key=attacker, header={"jwk": attacker.as_dict(private=False)})
    refused(token, key_set, clock, "invalid_signature")
