"""External OIDC identities through the running broker: an independent issuer on loopback HTTP,
trust bindings created through the management API, and every refusal with its own code."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx2
import pytest
from tests.peers.issuer import LoopbackIssuer

from valetkey.core.clock import FrozenClock
from valetkey.testing import RunningBroker


@pytest.fixture
def issuer() -> Iterator[LoopbackIssuer]:
    server = LoopbackIssuer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _now() -> FrozenClock:
    return FrozenClock(datetime.now(UTC))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(header: dict[str, Any], claims: dict[str, Any], key: bytes | None = None) -> str:
    signing_input = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())
    if key is None:
        return signing_input + "."
    return (
        signing_input + "." + _b64(hmac.new(key, signing_input.encode(), hashlib.sha256).digest())
    )


def _exchange(broker: RunningBroker, identity: str) -> httpx2.Response:
    return httpx2.post(
        f"{broker.url}/v1/connect/token/api-key%2Fsearch",
        json={"subject": {"type": "app"}},
        headers={"authorization": f"Bearer {identity}"},
        timeout=10,
    )


def _bind(
    broker: RunningBroker, issuer: LoopbackIssuer, environment: str, claims: dict[str, str]
) -> httpx2.Response:
    with broker.admin() as c:
        return c.post(
            "/v1/projects/agent/trust-bindings",
            json={
                "environment": environment,
                "issuer": issuer.url,
                "audience": "valetkey",
                "claims": claims,
                "algorithms": ["ES256"],
            },
        )


@pytest.fixture
def bound(broker: RunningBroker, issuer: LoopbackIssuer) -> RunningBroker:
    broker.setup_project(
        "agent", {"api-key/search": {"apiKey": "sk-ext"}}, environments=("production", "preview")
    )
    assert (
        _bind(
            broker, issuer, "production", {"sub": "system:serviceaccount:agents:runner"}
        ).status_code
        == 201
    )
    return broker


def test_external_token_matching_a_binding_gets_its_environment(
    bound: RunningBroker, issuer: LoopbackIssuer
) -> None:
    """A token from a bound issuer resolves to the binding's project and environment and is served."""
    response = _exchange(bound, issuer.sign(_now()))
    assert response.status_code == 200, response.text
    assert response.json()["token"] == "sk-ext"
    with bound.admin() as c:
        event = c.get("/v1/audit", params={"action": "token.exchange"}).json()[0]
    assert event["environment"] == "production"


def test_most_specific_binding_wins(bound: RunningBroker, issuer: LoopbackIssuer) -> None:
    """With a glob binding and an exact one both matching, the one with more exact conditions decides."""
    assert (
        _bind(
            bound,
            issuer,
            "preview",
            {"sub": "system:serviceaccount:agents:*", "namespace": "agents"},
        ).status_code
        == 201
    )
    _exchange(bound, issuer.sign(_now(), namespace="agents"))
    with bound.admin() as c:
        event = c.get("/v1/audit", params={"action": "token.exchange"}).json()[0]
    assert event["environment"] == "preview"


def test_binding_without_claim_conditions_is_refused(
    broker: RunningBroker, issuer: LoopbackIssuer
) -> None:
    """A trust binding with no claim condition is an error at creation, not 'allow all'."""
    broker.setup_project("agent")
    response = _bind(broker, issuer, "production", {})
    assert response.status_code == 400
    with broker.admin() as c:
        assert c.get("/v1/trust-bindings").json() == []


def test_issuer_key_rotation_is_followed(bound: RunningBroker, issuer: LoopbackIssuer) -> None:
    """After the issuer rotates its key, a token with the new kid verifies (one JWKS refetch)."""
    assert _exchange(bound, issuer.sign(_now())).status_code == 200
    fetches = issuer.jwks_fetches
    new_key = issuer.rotate("k2")
    assert _exchange(bound, issuer.sign(_now(), key=new_key)).status_code == 200
    assert issuer.jwks_fetches == fetches + 1


def test_every_identity_refusal_has_its_own_code(
    bound: RunningBroker, issuer: LoopbackIssuer
) -> None:
    """Wrong or several audiences, expiry, nbf, missing exp, alg none, HS256-with-public-key, unknown kid,
    untrusted issuer and unmatched claims are each refused with their own code, and nothing is issued."""
    clock = _now()
    now = int(clock.timestamp())
    public_pem = issuer.keys[0].as_pem(private=False)
    base = {
        "iss": issuer.url,
        "aud": "valetkey",
        "sub": "system:serviceaccount:agents:runner",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
    }
    stranger = LoopbackIssuer()
    stranger.start()
    try:
        cases = {
            "audience_mismatch": issuer.sign(clock, aud="someone-else"),
            "multiple_audiences": issuer.sign(clock, aud=["valetkey", "other"]),
            "token_expired": issuer.sign(clock, iat=now - 7200, nbf=now - 7200, exp=now - 3600),
            "token_not_yet_valid": issuer.sign(clock, nbf=now + 3600, exp=now + 4000),
            "missing_claim": _signed_without_exp(issuer, clock),
            "algorithm_not_allowed": _unsigned({"alg": "none", "kid": "k1"}, base),
            "algorithm_not_allowed ": _unsigned({"alg": "HS256", "kid": "k1"}, base, public_pem),
            "unknown_key": issuer.sign(clock, key=LoopbackIssuer.new_key("never-published")),
            "untrusted_issuer": stranger.sign(clock),
            "no_matching_binding": issuer.sign(clock, sub="system:serviceaccount:other:runner"),
        }
        for code, token in cases.items():
            response = _exchange(bound, token)
            assert response.status_code in (401, 403), (code, response.text)
            assert response.json()["error"]["code"] == code.strip(), (code, response.text)
            assert token not in response.text
    finally:
        stranger.stop()
    with bound.admin() as c:
        assert c.get("/v1/usage").json()["counters"] == {}


def _signed_without_exp(issuer: LoopbackIssuer, clock: FrozenClock) -> str:
    from joserfc import jwt

    now = int(clock.timestamp())
    claims = {
        "iss": issuer.url,
        "aud": "valetkey",
        "sub": "system:serviceaccount:agents:runner",
        "iat": now,
        "nbf": now,
    }
    key = issuer.keys[0]
    return jwt.encode({"alg": "ES256", "kid": key.kid}, claims, key, algorithms=["ES256"])
