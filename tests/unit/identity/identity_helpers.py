"""Helpers shared by the identity unit tests: claim defaults, bindings, an in-memory store."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from valetkey.core.models import Identity
from valetkey.errors import ValetkeyError
from valetkey.identity.bindings import TrustBinding

ISSUER = "https://ci.example.com"
AUDIENCE = "valetkey"
START = datetime(2030, 1, 1, tzinfo=UTC)
#: A claim override that removes the claim.
DROP: Any = object()

TokenFactory = Callable[..., str]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: Any) -> str:
    return b64(json.dumps(value).encode())


def base_claims(now: float, **overrides: Any) -> dict[str, Any]:
    """Claims shaped like a GitHub Actions token; a value of DROP removes the claim."""
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "repo:acme/app:ref:refs/heads/main",
        "repository": "acme/app",
        "repository_id": "123456",
        "repository_owner_id": "42",
        "ref": "refs/heads/main",
        "iat": int(now),
        "nbf": int(now),
        "exp": int(now) + 300,
    }
    for name, value in overrides.items():
        if value is DROP:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


def assert_refused(error: ValetkeyError, code: str, token: str | None = None) -> None:
    """The error has ``code``, and nothing it carries contains the token or a piece of it."""
    assert error.code == code, error
    if token:
        wire = json.dumps(error.to_wire())
        assert token not in repr(error)
        for part in token.split("."):
            if len(part) > 8:
                assert part not in wire


def binding(
    id: str = "b1",
    conditions: dict[str, str] | None = None,
    *,
    project_id: str = "p1",
    environment: str = "production",
    issuer: str = ISSUER,
    audience: str = AUDIENCE,
    algorithms: tuple[str, ...] = ("RS256", "ES256"),
) -> TrustBinding:
    return TrustBinding(
        id=id,
        team_id="t1",
        project_id=project_id,
        project_slug=f"slug-{project_id}",
        environment=environment,
        issuer=issuer,
        audience=audience,
        conditions=conditions if conditions is not None else {"repository_id": "123456"},
        algorithms=algorithms,
        created_at=START,
    )


class DictStore:
    """An in-memory IdentityStore: bindings by issuer, identities by access-token hash."""

    def __init__(self, bindings: Sequence[TrustBinding] = ()) -> None:
        self.bindings = list(bindings)
        self.access_tokens: dict[str, Identity] = {}
        self.calls = 0

    async def bindings_for_issuer(self, issuer: str) -> Sequence[TrustBinding]:
        self.calls += 1
        return [b for b in self.bindings if b.issuer == issuer]

    async def access_token_identity(self, token_hash: str) -> Identity | None:
        self.calls += 1
        return self.access_tokens.get(token_hash)
