"""A provider's numbers (``expires_in``, device ``interval``) are typed errors or bounded, never a crash."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx2
import pytest
from tests.peers.context import TestContext, connector_for
from tests.peers.scripted import Reply, ScriptedServer, scripted_server

from valetkey.core.models import Subject, TokenRequest
from valetkey.errors import ProviderError
from valetkey.providers.oauth import OAuthProvider
from valetkey.providers.oauth.client import MAX_EXPIRES_IN

__all__ = ["scripted_server"]


@pytest.fixture
async def ctx() -> AsyncIterator[TestContext]:
    async with httpx2.AsyncClient() as http:
        yield TestContext(http)


def _connector(server: ScriptedServer) -> Any:
    data = {
        "tokenUrl": f"{server.url}/token",
        "deviceAuthorizationUrl": f"{server.url}/device",
        "clientId": "c",
        "clientSecret": "client-secret-0123",
        "grants": ["client_credentials", "device_code"],
    }
    return connector_for(OAuthProvider(), data)


def _token_body(expires_in: str) -> Reply:
    """A token response with ``expires_in`` written as raw JSON (NaN and Infinity included)."""
    body = f'{{"access_token": "at-1", "token_type": "Bearer", "expires_in": {expires_in}}}'
    return Reply(body=body.encode())


@pytest.mark.parametrize(
    "raw",
    [
        "-1",
        "0",
        "0.5",
        "NaN",
        "Infinity",
        "-Infinity",
        "true",
        "false",
        "[]",
        "{}",
        '"NaN"',
        '"Infinity"',
        '"1e20"',
        '"-1"',
        '"0"',
        '""',
        '"3600.0"',
        '"3600s"',
        '"\u0663\u0666\u0660\u0660"',  # Arabic-Indic digits: digits, but not ASCII
        json.dumps("9" * 5000),
    ],
)
async def test_a_malformed_expires_in_is_an_invalid_response(
    ctx: TestContext, scripted_server: ScriptedServer, raw: str
) -> None:
    """Zero, negatives, NaN, infinities, booleans and non-digit strings are a typed provider error."""
    scripted_server.reply("/token", _token_body(raw))
    with pytest.raises(ProviderError) as caught:
        await OAuthProvider().mint(ctx, _connector(scripted_server), TokenRequest(Subject("app")))
    assert caught.value.details["error"] == "invalid_response"
    assert "expires_in" in caught.value.message


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        ("3600", 3600),
        ("3600.9", 3600),
        ("1", 1),
        ('"3600"', 3600),
        ('" 3600 "', 3600),
        ("1e20", MAX_EXPIRES_IN),
        ("1" + "0" * 30, MAX_EXPIRES_IN),
        ("1.7976931348623157e308", MAX_EXPIRES_IN),
        ('"99999999999999999999"', MAX_EXPIRES_IN),
        (str(MAX_EXPIRES_IN + 1), MAX_EXPIRES_IN),
    ],
)
async def test_usable_expires_in_values_are_accepted_and_huge_ones_cut(
    ctx: TestContext, scripted_server: ScriptedServer, raw: str, seconds: int
) -> None:
    """Numbers, digit strings and huge lifetimes are accepted; a lifetime above a year is cut to a year."""
    scripted_server.reply("/token", _token_body(raw))
    minted = await OAuthProvider().mint(
        ctx, _connector(scripted_server), TokenRequest(Subject("app"))
    )
    assert minted.expires_at == ctx.clock.now() + timedelta(seconds=seconds)


def _device(**changes: Any) -> Reply:
    body = {
        "device_code": "dc-0123456789",
        "user_code": "ABCD",
        "verification_uri": "https://p.test/device",
        "expires_in": 600,
        **changes,
    }
    return Reply(json_body=body)


@pytest.mark.parametrize(
    "changes",
    [
        {"interval": 10**20},
        {"interval": 3601},
        {"interval": -1},
        {"interval": 1.5},
        {"expires_in": 0},
        {"expires_in": "600"},
        {"expires_in": True},
    ],
)
async def test_a_malformed_device_authorization_is_an_invalid_response(
    ctx: TestContext, scripted_server: ScriptedServer, changes: dict[str, Any]
) -> None:
    """RFC 8628 numbers out of range are a typed provider error, not an overflow."""
    scripted_server.reply("/device", _device(**changes))
    with pytest.raises(ProviderError) as caught:
        await OAuthProvider().start_device(ctx, _connector(scripted_server), scopes=None)
    assert caught.value.details["error"] == "invalid_response"


async def test_a_huge_device_code_lifetime_is_cut_to_a_day(
    ctx: TestContext, scripted_server: ScriptedServer
) -> None:
    """A device code said to live 10^20 seconds is believed for a day."""
    scripted_server.reply("/device", _device(expires_in=10**20))
    started = await OAuthProvider().start_device(ctx, _connector(scripted_server), scopes=None)
    assert started is not None
    assert started.expires_at == ctx.clock.now() + timedelta(days=1)
