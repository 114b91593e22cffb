"""Optional provider abilities are declared (``user_flows()``), never sniffed with ``hasattr``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from exchange_helpers import IDENTITY, CountingProvider, build_exchange, connector_of, view_of

from valetkey.core.models import Subject, TokenRequest
from valetkey.errors import UnsupportedOperation
from valetkey.providers.api_key import ApiKeyProvider
from valetkey.providers.oauth import OAuthProvider

SRC = Path(__file__).resolve().parents[3] / "src" / "valetkey"


def _hasattr_calls() -> list[str]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "hasattr"
            ):
                found.append(f"{path.relative_to(SRC.parent)}:{node.lineno}")
    return found


def test_src_never_asks_hasattr() -> None:
    """No module in src/ uses hasattr: a provider declares what it supports (user_flows())."""
    assert _hasattr_calls() == []


def test_built_in_providers_declare_their_user_grants() -> None:
    """api-key declares no user flows; oauth declares every user grant, each one typed."""
    assert ApiKeyProvider().user_flows() is None
    oauth = OAuthProvider()
    flows = oauth.user_flows()
    for grant in ("authorization_code", "device", "refresh", "assertion", "exchange", "revocation"):
        assert getattr(flows, grant) is oauth, grant


async def test_a_provider_serves_only_the_grants_it_declares() -> None:
    """A provider declaring only token exchange serves token subjects and refuses jwt-bearer by name."""
    provider = CountingProvider(("app", "token", "jwt-bearer"), exchange=True)
    exchange = build_exchange(
        provider, view_of(connector_of("counting"), subjects=("app", "token", "jwt-bearer"))
    )
    token = TokenRequest(Subject("token", "f" * 32), subject_token="upstream")
    issued = await exchange.service.exchange(IDENTITY, "counting/main", token)
    assert issued.token == "exchanged"
    assert provider.calls["token_exchange"] == 1

    assertion = TokenRequest(Subject("jwt-bearer", "robot"), assertion=())
    with pytest.raises(UnsupportedOperation, match="no jwt-bearer grant"):
        await exchange.service.exchange(IDENTITY, "counting/main", assertion)


async def test_a_provider_without_user_flows_cannot_act_for_a_user() -> None:
    """A provider whose user_flows() is None is refused a user subject it claims, by name."""
    provider = CountingProvider(("app", "user"))
    exchange = build_exchange(provider, view_of(connector_of("counting"), subjects=("app", "user")))
    with pytest.raises(UnsupportedOperation, match="cannot act for a user"):
        await exchange.service.exchange(
            IDENTITY, "counting/main", TokenRequest(Subject("user", "alice"))
        )
