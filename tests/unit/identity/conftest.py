"""Fixtures for the identity tests: a frozen clock, keys, and a JWT factory."""

from __future__ import annotations

from typing import Any

import pytest
from identity_helpers import START, TokenFactory, base_claims
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, RSAKey

from valetkey.core.clock import FrozenClock


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(START)


@pytest.fixture(scope="session")
def rsa_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "rsa-1", "use": "sig"})


@pytest.fixture(scope="session")
def ec_key() -> ECKey:
    return ECKey.generate_key("P-256", parameters={"kid": "ec-1"})


@pytest.fixture
def key_set(rsa_key: RSAKey, ec_key: ECKey) -> KeySet:
    """The public halves of both test keys."""
    return KeySet(
        [
            RSAKey.import_key(rsa_key.as_dict(private=False)),
            ECKey.import_key(ec_key.as_dict(private=False)),
        ]
    )


@pytest.fixture
def make_token(clock: FrozenClock, rsa_key: RSAKey) -> TokenFactory:
    """Sign GitHub-like claims (overridable by keyword) with ``key``, RS256 by default."""

    def factory(
        key: RSAKey | ECKey | None = None,
        alg: str | None = None,
        header: dict[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        key = key or rsa_key
        alg = alg or ("RS256" if isinstance(key, RSAKey) else "ES256")
        head = {"alg": alg, "kid": key.kid, **(header or {})}
        return jwt.encode(head, base_claims(clock.timestamp(), **claims), key, algorithms=[alg])

    return factory
