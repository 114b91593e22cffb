"""The OAuth provider on the wire, against a scripted server on 127.0.0.1.

The real oidc-provider peer (tests/integration/test_oauth_peer.py) checks correct
exchanges; these tests script what a real server will not do on demand: widen scopes,
answer garbage, stall, flood.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx2
import pytest
from tests.peers.context import TestContext, connector_for
from tests.peers.scripted import Reply, ScriptedServer, scripted_server

from valetkey.core.models import Connector, Subject, TokenRequest
from valetkey.core.providers import MintedToken
from valetkey.errors import ProviderError, UnsupportedOperation
from valetkey.providers.oauth import OAuthProvider
from valetkey.providers.oauth.client import (
    MAX_RESPONSE_BYTES,
    ClientAuth,
    request_token,
    revoke_token,
)

__all__ = ["scripted_server"]

APP = Subject("app")
SECRET = "s3cr+t:/ ~&=%"
OK = Reply(json_body={"access_token": "at-1", "token_type": "bearer", "expires_in": 600})


@pytest.fixture
async def ctx() -> AsyncIterator[TestContext]:
    async with httpx2.AsyncClient() as http:
        yield TestContext(http)


def _connector(server: ScriptedServer, **changes: Any) -> Connector:
    data: dict[str, Any] = {
        "tokenUrl": f"{server.url}/token",
        "clientId": "client id/1",
        "clientSecret": SECRET,
        "scopes": ["read", "write"],
        **changes,
    }
    return connector_for(OAuthProvider(), data)


async def _mint(ctx: TestContext, connector: Connector, **request: Any) -> MintedToken:
    return await OAuthProvider().mint(ctx, connector, TokenRequest(subject=APP, **request))


async def test_basic_auth_form_encodes_id_and_secret_before_base64(
    ctx: TestContext, scripted_server: ScriptedServer
) -> None:
    """client_secret_basic follows RFC 6749 §2.3.1: urlencode each part, then base64."""
    scripted_server.reply("/token", OK)
    minted = await _mint(ctx, _connector(scripted_server))
    sent = scripted_server.requests[0]
    scheme, _, encoded = sent.headers["Authorization"].partition(" ")
    assert scheme == "Basic"
    assert base64.b64decode(encoded).decode() == "client+id%2F1:s3cr%2Bt%3A%2F+~%26%3D%25"
    assert sent.form == {"grant_type": ["client_credentials"], "scope": ["read write"]}
    assert minted.token == "at-1"
    assert minted.token_type == "Bearer"
    assert minted.expires_at == ctx.clock.now() + timedelta(seconds=600)
    assert minted.scopes == ("read", "write")


async def test_post_auth_sends_credentials_in_the_body_only(
    ctx: TestContext, scripted_server: ScriptedServer
) -> None:
    """client_secret_post puts client_id and client_secret in the form, no Authorization header."""
    scripted_server.reply("/token", OK)
    await _mint(ctx, _connector(scripted_server, authMethod="client_secret_post"))
    sent = scripted_server.requests[0]
    assert "Authorization" not in sent.headers
    assert sent.form["client_id"] == ["client id/1"]
    assert sent.form["client_secret"] == [SECRET]


async def test_request_carries_scopes_resources_audience_and_token_params(
    ctx: TestContext, scripted_server: ScriptedServer
) -> None:
    """Requested scopes use the separator, resources repeat (RFC 8707), extra params are sent."""
    scripted_server.reply(
        "/token",
        Reply(json_body={"access_token": "at", "token_type": "Bearer", "scope": "read"}),
    )
    connector = _connector(
        scripted_server,
        scopeSeparator=",",
        tokenParams={"tenant": "acme"},
        audienceParam="audience",
    )
    minted = await _mint(
        ctx,
        connector,
        scopes=("read",),
        resources=("https://a.example.test", "https://b.example.test"),
        audience="https://api.example.test",
    )
    form = scripted_server.requests[0].form
    assert form["scope"] == ["read"]
    assert form["resource"] == ["https://a.example.test", "https://b.example.test"]
    assert form["tenant"] == ["acme"]
    assert form["audience"] == ["https://api.example.test"]
    assert minted.scopes == ("read",)
    assert minted.expires_at is None


async def test_audience_without_an_audience_param_is_refused(
    ctx: TestContext, scripted_server: ScriptedServer
) -> None:
    """A connector that cannot express an audience refuses it instead of ignoring it."""
    with pytest.raises(UnsupportedOperation):
        await _mint(ctx, _connector(scripted_server), audience="https://api.example.test")
    assert scripted_server.requests == []


async def test_user_subjects_are_refused(ctx: TestContext, scripted_server: ScriptedServer) -> None:
    """Client credentials act as the app only."""
    provider = OAuthProvider()
    request = TokenRequest(subject=Subject("user", "u1"))
    with pytest.raises(UnsupportedOperation):
        await provider.mint(ctx, _connector(scripted_server), request)


async def test_widened_scopes_are_refused_and_the_token_revoked(
    ctx: TestContext, scripted_server: ScriptedServer
) -> None:
    """A server granting more than asked gets its token revoked and the mint fails."""
    scripted_server.reply(
        "/token",
        Reply(json_body={"access_token": "wide", "token_type": "Bearer", "scope": "read admin"}),
    )
    scripted_server.reply("/revoke", Reply(body=b""))
    connector = _connector(scripted_server, revocationUrl=f"{scripted_server.url}/revoke")
    with pytest.raises(ProviderError) as caught:
        await _mint(ctx, connector, scopes=("read",))
    assert caught.value.details["error"] == "scope_widened"
    assert caught.value.details["widened"] == ["admin"]
    revocation = scripted_server.requests[1]
    assert revocation.path == "/revoke"
    assert revocation.form["token"] == ["wide"]


async def test_scopes_granted_when_none_were_asked_are_refused(
    ctx: TestContext, scripted_server: ScriptedServer
) -> None:
    """An empty request with a server adding default scopes counts as widening too."""
    scripted_server.reply(
        "/token", Reply(json_body={"access_token": "x", "token_type": "Bearer", "scope": "read"})
    )
    with pytest.raises(ProviderError) as caught:
        await _mint(ctx, _connector(scripted_server), scopes=())
    assert caught.value.details["error"] == "scope_widened"


async def test_narrower_grant_is_reported_as_granted(
    ctx: TestContext, scripted_server: ScriptedServer
) -> None:
    """When the server grants less than asked, the token carries what was granted."""
    scripted_server.reply(
        "/token", Reply(json_body={"access_token": "x", "token_type": "Bearer", "scope": "read"})
    )
    minted = await _mint(ctx, _connector(scripted_server), scopes=("read", "write"))
    assert minted.scopes == ("read",)


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (Reply(status=400, json_body={"error": "invalid_scope"}), "invalid_scope"),
        (Reply(status=401, json_body={"error": "invalid_client"}), "invalid_client"),
        (Reply(status=500, body=b"<html>oops</html>"), "invalid_response"),
        (Reply(status=400, json_body=["error"]), "invalid_response"),
        (Reply(status=302, headers={"Location": "https://evil.test/"}), "invalid_response"),
        (Reply(body=b"not json"), "invalid_response"),
        (Reply(json_body={"token_type": "Bearer"}), "invalid_response"),
        (Reply(json_body={"access_token": "x"}), "invalid_response"),
        (Reply(json_body={"access_token": "x", "token_type": "B", "expires_in": -1}), None),
        (Reply(json_body={"access_token": "x", "token_type": "B", "expires_in": "soon"}), None),
        (Reply(json_body={"access_token": "x", "token_type": "B", "scope": 3}), None),
        (Reply(json_body={"access_token": "x", "token_type": "B", "refresh_token": 1}), None),
    ],
)
async def test_bad_answers_become_provider_errors(
    ctx: TestContext, scripted_server: ScriptedServer, reply: Reply, error: str | None
) -> None:
    """RFC 6749 §5.2 errors keep the provider's code; malformed answers are invalid_response."""
    scripted_server.reply("/token", reply)
    with pytest.raises(ProviderError) as caught:
        await _mint(ctx, _connector(scripted_server))
    assert caught.value.details["error"] == (error or "invalid_response")
    assert SECRET not in repr(caught.value.to_wire())


async def test_error_descriptions_never_echo_the_secret(
    ctx: TestContext, scripted_server: ScriptedServer
) -> None:
    """A provider quoting the client secret back has it redacted from the error."""
    scripted_server.reply(
        "/token",
        Reply(
            status=401,
            json_body={"error": "invalid_client", "error_description": f"bad secret {SECRET}"},
        ),
    )
    with pytest.raises(ProviderError) as caught:
        await _mint(ctx, _connector(scripted_server))
    wire = repr(caught.value.to_wire())
    assert SECRET not in wire
    assert caught.value.details["errorDescription"] == "bad secret ********"
    assert caught.value.details["providerStatus"] == 401


async def test_expires_in_as_a_numeric_string_is_accepted(
    ctx: TestContext, scripted_server: ScriptedServer
) -> None:
    """Some servers send expires_in as a string of digits; it still sets the expiry."""
    scripted_server.reply(
        "/token",
        Reply(json_body={"access_token": "x", "token_type": "Bearer", "expires_in": "60"}),
    )
    minted = await _mint(ctx, _connector(scripted_server))
    assert minted.expires_at == ctx.clock.now() + timedelta(seconds=60)


@pytest.mark.parametrize("chunked", [False, True])
async def test_oversized_answers_are_refused(
    ctx: TestContext, scripted_server: ScriptedServer, chunked: bool
) -> None:
    """A response above the size bound is cut off, with or without Content-Length."""
    padding = "x" * (MAX_RESPONSE_BYTES + 10)
    scripted_server.reply(
        "/token",
        Reply(
            json_body={"access_token": "x", "token_type": "Bearer", "pad": padding},
            chunked=chunked,
        ),
    )
    with pytest.raises(ProviderError) as caught:
        await _mint(ctx, _connector(scripted_server))
    assert caught.value.details["error"] == "response_too_large"


async def test_a_stalled_token_endpoint_times_out(
    ctx: TestContext, scripted_server: ScriptedServer
) -> None:
    """A server slower than the time limit yields a timeout error, not a hang."""
    scripted_server.reply("/token", Reply(json_body={}, delay=1.0))
    auth = ClientAuth("c", SECRET)
    with pytest.raises(ProviderError) as caught:
        await request_token(
            ctx.http, f"{scripted_server.url}/token", auth, {"grant_type": "x"}, time_limit=0.2
        )
    assert caught.value.details["error"] == "timeout"


async def test_an_unreachable_token_endpoint_is_reported(ctx: TestContext) -> None:
    """A closed port yields an unreachable error naming no secret."""
    server = ScriptedServer()
    url = server.url
    server.close()
    with pytest.raises(ProviderError) as caught:
        await request_token(ctx.http, f"{url}/token", ClientAuth("c", SECRET), {"grant_type": "x"})
    assert caught.value.details["error"] == "unreachable"


async def test_revoke_posts_rfc7009_with_client_auth(
    ctx: TestContext, scripted_server: ScriptedServer
) -> None:
    """Revocation sends token and token_type_hint with the client's authentication."""
    scripted_server.reply("/revoke", Reply(body=b""))
    connector = _connector(scripted_server, revocationUrl=f"{scripted_server.url}/revoke")
    token = MintedToken(token="at-9", expires_at=None)
    result = await OAuthProvider().revoke(ctx, connector, token)
    assert result.revoked is True
    sent = scripted_server.requests[0]
    assert sent.form == {"token": ["at-9"], "token_type_hint": ["access_token"]}
    assert sent.headers["Authorization"].startswith("Basic ")


async def test_revoke_without_a_revocation_url_is_skipped(
    ctx: TestContext, scripted_server: ScriptedServer
) -> None:
    """No revocation endpoint: nothing is sent and the result says skipped."""
    token = MintedToken(token="at-9", expires_at=None)
    result = await OAuthProvider().revoke(ctx, _connector(scripted_server), token)
    assert (result.revoked, result.skipped) == (False, True)
    assert scripted_server.requests == []


@pytest.mark.parametrize(
    "reply",
    [
        Reply(status=503, json_body={"error": "temporarily_unavailable"}),
        Reply(status=400, json_body={"error": "unsupported_token_type"}),
        Reply(status=500, body=b"boom"),
    ],
)
async def test_revoke_failures_are_reported_not_raised(
    ctx: TestContext, scripted_server: ScriptedServer, reply: Reply
) -> None:
    """A refused revocation comes back as an error result holding no secret."""
    scripted_server.reply("/revoke", reply)
    outcome = await revoke_token(
        ctx.http, f"{scripted_server.url}/revoke", ClientAuth("c", SECRET), "at-9"
    )
    assert outcome.revoked is False
    assert outcome.error is not None
    assert SECRET not in outcome.error
