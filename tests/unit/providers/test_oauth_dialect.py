"""A provider's departures from RFC 6749 are Dialect hooks, not forks of the engine.

Each hook is checked on its own (several inputs) and through the real provider against a
scripted server on 127.0.0.1: client authentication, where a refusal is found, and which
members of a token response hold the token.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import httpx2
import pytest
from tests.peers.context import TestContext, connector_for
from tests.peers.scripted import Reply, ScriptedServer, scripted_server

from valetkey.core.models import Connector, Subject, TokenRequest
from valetkey.errors import ProviderError
from valetkey.providers.oauth import Dialect, OAuthProvider
from valetkey.providers.oauth.client import request_token
from valetkey.providers.oauth.client_auth import ClientAuth

__all__ = ["scripted_server"]

FORM = "application/x-www-form-urlencoded; charset=utf-8"
GITHUB = Dialect(errors_on_success=True, form_bodies=True)
SLACK = Dialect(errors_on_success=True, token_member="authed_user")
SECRET = "s3cr+t:/ ~&=%"


@pytest.fixture
async def ctx() -> AsyncIterator[TestContext]:
    async with httpx2.AsyncClient() as http:
        yield TestContext(http)


def _provider_connector(
    server: ScriptedServer, dialect: Dialect, **changes: Any
) -> tuple[OAuthProvider, Connector]:
    provider = OAuthProvider(dialect=dialect)
    data = {"tokenUrl": f"{server.url}/token", "clientId": "id:1", "clientSecret": SECRET}
    return provider, connector_for(provider, {**data, **changes})


# -- client authentication -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("client_id", "secret", "expected"),
    [
        ("plain", "secret", "plain:secret"),
        ("id:1", "s3cr+t:/ ~&=%", "id%3A1:s3cr%2Bt%3A%2F+~%26%3D%25"),
        ('id"1', 'p\\a"s?#', "id%221:p%5Ca%22s%3F%23"),
    ],
)
def test_basic_header_form_encodes_id_and_secret(
    client_id: str, secret: str, expected: str
) -> None:
    """client_secret_basic: each part form-urlencoded (RFC 6749 §2.3.1, Appendix B), then base64."""
    form: dict[str, Any] = {}
    headers: dict[str, str] = {}
    Dialect().authenticate(ClientAuth(client_id, secret), form, headers)
    scheme, _, encoded = headers["Authorization"].partition(" ")
    assert scheme == "Basic"
    assert base64.b64decode(encoded).decode("ascii") == expected
    assert form == {}


@pytest.mark.parametrize("configured", ["client_secret_basic", "client_secret_post"])
def test_a_dialect_can_require_the_secret_in_the_body(configured: Any) -> None:
    """auth_method forces the method whatever the connector says: the secret goes in the body."""
    dialect = Dialect(auth_method="client_secret_post")
    method = dialect.method_for(configured)
    form: dict[str, Any] = {}
    headers: dict[str, str] = {}
    dialect.authenticate(ClientAuth("id:1", SECRET, method), form, headers)
    assert form == {"client_id": "id:1", "client_secret": SECRET}
    assert "Authorization" not in headers


def test_without_a_forced_method_the_connector_chooses() -> None:
    """The default dialect keeps the connector's authMethod."""
    assert Dialect().method_for("client_secret_post") == "client_secret_post"
    assert Dialect().method_for("private_key_jwt") == "private_key_jwt"


async def test_a_forced_post_method_reaches_the_wire(
    ctx: TestContext, scripted_server: ScriptedServer
) -> None:
    """Through the provider, a secret-in-body dialect sends no Authorization header."""
    scripted_server.reply("/token", Reply(json_body={"access_token": "at", "token_type": "x"}))
    provider, connector = _provider_connector(
        scripted_server, Dialect(auth_method="client_secret_post")
    )
    await provider.mint(ctx, connector, TokenRequest(subject=Subject("app")))
    sent = scripted_server.requests[0]
    assert "authorization" not in {k.lower() for k in sent.headers}
    assert sent.form["client_secret"] == [SECRET]
    assert sent.form["client_id"] == ["id:1"]


# -- where a refusal is found ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("dialect", "status", "data", "refused"),
    [
        (Dialect(), 200, {"error": "bad_verification_code"}, False),
        (GITHUB, 200, {"error": "bad_verification_code"}, True),
        (GITHUB, 200, {"access_token": "at", "token_type": "bearer"}, False),
        (GITHUB, 200, None, False),
        (SLACK, 200, {"ok": False, "error": "invalid_code"}, True),
        (Dialect(), 400, {"error": "invalid_grant"}, True),
        (Dialect(), 500, None, True),
    ],
)
def test_is_refusal(dialect: Dialect, status: int, data: Any, refused: bool) -> None:
    """Any status but 200 refuses; an error on a 200 refuses only where the dialect says so."""
    assert dialect.is_refusal(status, data) is refused


@pytest.mark.parametrize(
    ("dialect", "body", "content_type", "expected"),
    [
        (Dialect(), b'{"error": "x"}', "application/json", {"error": "x"}),
        (Dialect(), b"error=x", FORM, None),  # the default reads JSON only
        (
            GITHUB,
            b"error=bad_verification_code&error_description=The+code",
            FORM,
            {"error": "bad_verification_code", "error_description": "The code"},
        ),
        (
            GITHUB,
            b"access_token=at&token_type=bearer&scope=repo%2Cuser",
            FORM,
            {"access_token": "at", "token_type": "bearer", "scope": "repo,user"},
        ),
        (GITHUB, b"error=a&error=b", FORM, None),  # a repeated member is not trusted
        (GITHUB, b"\xff\xfe=1", FORM, None),
        (GITHUB, b"&".join([b"k%d=v" % i for i in range(101)]), FORM, None),
        (GITHUB, b'{"error": "x"}', "application/json", {"error": "x"}),
        (GITHUB, b"[1, 2]", "application/json", None),
    ],
)
def test_parse(dialect: Dialect, body: bytes, content_type: str, expected: Any) -> None:
    """JSON objects always; form bodies only where the dialect reads them, each member once."""
    assert dialect.parse(body, content_type) == expected


@pytest.mark.parametrize(
    "reply",
    [
        Reply(
            body=b"error=bad_verification_code&error_description=expired",
            headers={"Content-Type": FORM},
        ),
        Reply(json_body={"error": "bad_verification_code", "error_description": "expired"}),
    ],
    ids=["form-200", "json-200"],
)
async def test_an_error_answered_with_200_is_a_refusal(
    ctx: TestContext, scripted_server: ScriptedServer, reply: Reply
) -> None:
    """GitHub's 200 ``error=`` (form or JSON) raises the provider's code, like a 400 would."""
    scripted_server.reply("/token", reply)
    with pytest.raises(ProviderError) as caught:
        await request_token(
            ctx.http,
            f"{scripted_server.url}/token",
            ClientAuth("id", SECRET),
            {"grant_type": "authorization_code", "code": "c"},
            dialect=GITHUB,
        )
    assert caught.value.details["error"] == "bad_verification_code"
    assert caught.value.details["errorDescription"] == "expired"
    assert caught.value.details["providerStatus"] == 200


async def test_a_refusal_on_200_is_redacted(
    ctx: TestContext, scripted_server: ScriptedServer
) -> None:
    """A 200 refusal that echoes the code sent has it redacted, as any refusal does."""
    body = urlencode({"error": "bad_verification_code", "error_description": "code c0de-secret"})
    scripted_server.reply("/token", Reply(body=body.encode(), headers={"Content-Type": FORM}))
    with pytest.raises(ProviderError) as caught:
        await request_token(
            ctx.http,
            f"{scripted_server.url}/token",
            ClientAuth("id", SECRET),
            {"grant_type": "authorization_code", "code": "c0de-secret"},
            dialect=GITHUB,
        )
    assert "c0de-secret" not in str(caught.value)
    assert "c0de-secret" not in repr(caught.value.details)


async def test_the_default_dialect_reads_a_200_error_as_a_malformed_token(
    ctx: TestContext, scripted_server: ScriptedServer
) -> None:
    """Without the hook, RFC 6749 holds: a 200 without an access_token is invalid_response."""
    scripted_server.reply("/token", Reply(json_body={"error": "bad_verification_code"}))
    with pytest.raises(ProviderError) as caught:
        await request_token(
            ctx.http, f"{scripted_server.url}/token", ClientAuth("id", SECRET), {"grant_type": "x"}
        )
    assert caught.value.details["error"] == "invalid_response"


async def test_a_form_encoded_token_response_is_read(
    ctx: TestContext, scripted_server: ScriptedServer
) -> None:
    """A form-encoded success (GitHub without JSON) gives the token, its scopes and lifetime."""
    body = b"access_token=gho_1&token_type=bearer&scope=repo&expires_in=28800"
    scripted_server.reply("/token", Reply(body=body, headers={"Content-Type": FORM}))
    response = await request_token(
        ctx.http,
        f"{scripted_server.url}/token",
        ClientAuth("id", SECRET),
        {"grant_type": "x"},
        dialect=GITHUB,
    )
    assert response.access_token == "gho_1"
    assert response.scopes == ("repo",)
    assert response.expires_in == 28800


# -- token-response fields -------------------------------------------------------------------

SLACK_RESPONSE = {
    "ok": True,
    "access_token": "xoxb-bot-token",
    "token_type": "bot",
    "scope": "commands",
    "team": {"id": "T1"},
    "authed_user": {
        "id": "U1",
        "scope": "chat:write,users:read",
        "access_token": "xoxp-user-token",
        "token_type": "user",
        "refresh_token": "xoxe-refresh",
        "expires_in": 43200,
    },
}


def test_token_fields_come_from_the_nested_member() -> None:
    """Slack: the user token and its members replace the outer (bot) ones, which are dropped."""
    fields = SLACK.token_fields(SLACK_RESPONSE)
    assert fields["access_token"] == "xoxp-user-token"
    assert fields["refresh_token"] == "xoxe-refresh"
    assert fields["token_type"] == "user"
    assert fields["team"] == {"id": "T1"}
    assert "xoxb-bot-token" not in repr(fields)
    assert "authed_user" not in fields


@pytest.mark.parametrize(
    "data",
    [
        {"access_token": "xoxb", "token_type": "bot"},
        {"authed_user": "xoxp-user-token"},
        {"authed_user": ["xoxp"]},
    ],
)
def test_a_missing_nested_member_is_an_invalid_response(data: dict[str, Any]) -> None:
    """Without the nested object there is no token to take, and the outer one is never used."""
    with pytest.raises(ProviderError) as caught:
        SLACK.token_fields(data)
    assert caught.value.details["error"] == "invalid_response"
    assert "xoxp" not in str(caught.value)


def test_the_default_dialect_reads_the_top_level() -> None:
    """RFC 6749 §5.1 as written: the members are the response's own."""
    data = {"access_token": "at", "token_type": "Bearer"}
    assert Dialect().token_fields(data) is data


async def test_a_nested_user_token_through_the_provider(
    ctx: TestContext, scripted_server: ScriptedServer
) -> None:
    """Redeeming a code with the Slack-like dialect yields the user token, scopes split by ','."""
    scripted_server.reply("/token", Reply(json_body=SLACK_RESPONSE))
    provider, connector = _provider_connector(
        scripted_server,
        SLACK,
        grants=["authorization_code"],
        authorizationUrl=f"{scripted_server.url}/authorize",
        scopeSeparator=",",
    )
    tokens = await provider.exchange_code(
        ctx,
        connector,
        code="c",
        redirect_uri="http://127.0.0.1:9/cb",
        code_verifier="v" * 43,
        nonce=None,
    )
    assert tokens.access_token == "xoxp-user-token"
    assert tokens.refresh_token == "xoxe-refresh"
    assert tokens.scopes == ("chat:write", "users:read")
    assert tokens.extra["team"] == {"id": "T1"}
    assert "xoxb-bot-token" not in repr(tokens.extra)


class _IdInBodyToo(Dialect):
    """A server that wants HTTP Basic and the client_id repeated in the body."""

    def authenticate(self, auth: ClientAuth, form: dict[str, Any], headers: dict[str, str]) -> None:
        super().authenticate(auth, form, headers)
        form["client_id"] = auth.client_id


async def test_a_subclass_overrides_one_hook_and_keeps_the_rest(
    ctx: TestContext, scripted_server: ScriptedServer
) -> None:
    """Overriding authenticate() changes only the credentials; parsing and refusals stay RFC's."""
    scripted_server.reply("/token", Reply(status=400, json_body={"error": "invalid_client"}))
    provider, connector = _provider_connector(scripted_server, _IdInBodyToo())
    with pytest.raises(ProviderError) as caught:
        await provider.mint(ctx, connector, TokenRequest(subject=Subject("app")))
    sent = scripted_server.requests[0]
    assert sent.headers["Authorization"].startswith("Basic ")
    assert sent.form["client_id"] == ["id:1"]
    assert "client_secret" not in sent.form
    assert caught.value.details["error"] == "invalid_client"
    assert SECRET not in str(caught.value)
