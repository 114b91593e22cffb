"""No secret a provider call carried comes back out of what the provider answers.

A scripted provider quotes every secret the request carried (client secret, Basic
credential, client assertion, refresh token, code, PKCE verifier, device code, subject
token, jwt-bearer assertion, the token being revoked) in each encoding a provider might
use, in each place it might put it; on each grant path the error raised (or the
revocation outcome) and the captured logs hold none of them.
"""

from __future__ import annotations

import base64
import html
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import quote, quote_plus

import httpx2
import pytest
from joserfc.jwk import ECKey
from tests.peers.context import TestContext, connector_for
from tests.peers.scripted import Recorded, Reply, ScriptedServer, scripted_server

from valetkey.core.models import Subject, TokenRequest
from valetkey.errors import ProviderError, ValetkeyError
from valetkey.providers.oauth import OAuthProvider
from valetkey.providers.oauth.client import SECRET_PARAMETERS
from valetkey.providers.redaction import MAX_TEXT, WITHHELD, Redactor

__all__ = ["scripted_server"]

CLIENT_SECRET = "cs-Secret/+=&value_0123"
REFRESH_TOKEN = "rt-Refresh/Token+value=="
CODE = "code-Value/0123+x"
DEVICE_CODE = "dc-Device/Code+0123"
SUBJECT_TOKEN = "st-Subject/Token+0123"
REVOKED_TOKEN = "rv-Revoked/Token+0123"
EC_PEM = ECKey.generate_key("P-256", private=True).as_pem(private=True).decode()
GRANTS = ["client_credentials", "authorization_code", "device_code", "jwt_bearer", "token_exchange"]

ENCODINGS: dict[str, Callable[[str], str]] = {
    "raw": lambda v: v,
    "form": lambda v: quote_plus(v, safe=""),
    "url": lambda v: quote(v, safe=""),
    "url-lower-hex": lambda v: quote(v, safe="").lower(),
    "json-escaped": lambda v: json.dumps(v)[1:-1].replace("/", "\\/"),
    "html": html.escape,
    "base64": lambda v: base64.b64encode(v.encode()).decode(),
    "upper-case": str.upper,
    "first-20": lambda v: v[:20],
}


def _carried(request: Recorded) -> list[str]:
    """Every secret value the request carried: secret form parameters and the Basic credential."""
    values = [v for name, vs in request.form.items() if name in SECRET_PARAMETERS for v in vs]
    authorization = request.headers.get("Authorization")
    if authorization:
        values += [authorization, authorization.partition(" ")[2]]
    return values


def _quoting(place: str, encode: Callable[[str], str]) -> Callable[[Recorded], Reply]:
    """A provider answer that quotes every secret of the request, encoded, in ``place``."""

    def reply(request: Recorded) -> Reply:
        quoted = " ".join(f"[{encode(v)}]" for v in _carried(request))
        if place == "error_description":
            return Reply(400, {"error": "invalid_grant", "error_description": f"bad {quoted}"})
        if place == "error":
            return Reply(400, {"error": quoted, "error_description": "refused"})
        if place == "error_uri":
            return Reply(400, {"error": "invalid_request", "error_uri": f"https://x/?{quoted}"})
        if place == "html":
            body = f"<html><body><p>Refused {quoted}</p></body></html>".encode()
            return Reply(400, body=body, headers={"Content-Type": "text/html"})
        return Reply(
            500, body=f"Traceback: {quoted}".encode(), headers={"Content-Type": "text/plain"}
        )

    return reply


@pytest.fixture
async def ctx() -> AsyncIterator[TestContext]:
    async with httpx2.AsyncClient() as http:
        yield TestContext(http)


Call = Callable[[TestContext, ScriptedServer], Awaitable[Any]]


def _connector(server: ScriptedServer, auth_method: str = "client_secret_basic") -> Any:
    data: dict[str, Any] = {
        "tokenUrl": f"{server.url}/token",
        "authorizationUrl": f"{server.url}/authorize",
        "deviceAuthorizationUrl": f"{server.url}/token",
        "revocationUrl": f"{server.url}/token",
        "clientId": "client-1",
        "authMethod": auth_method,
        "grants": GRANTS,
        "scopes": ["read"],
        "privateKey": EC_PEM,
    }
    if auth_method != "private_key_jwt":
        data["clientSecret"] = CLIENT_SECRET
    return connector_for(OAuthProvider(), data)


def _client_credentials(auth_method: str) -> Call:
    async def call(ctx: TestContext, server: ScriptedServer) -> Any:
        request = TokenRequest(subject=Subject("app"))
        return await OAuthProvider().mint(ctx, _connector(server, auth_method), request)

    return call


async def _refresh(ctx: TestContext, server: ScriptedServer) -> Any:
    return await OAuthProvider().refresh(ctx, _connector(server), refresh_token=REFRESH_TOKEN)


async def _code(ctx: TestContext, server: ScriptedServer) -> Any:
    provider = OAuthProvider()
    connector = _connector(server, "private_key_jwt")
    start = await provider.start_authorization(
        ctx, connector, redirect_uri="https://app.test/cb", state="s1", scopes=("read",)
    )
    return await provider.exchange_code(
        ctx,
        connector,
        code=CODE,
        redirect_uri="https://app.test/cb",
        code_verifier=start.code_verifier,
        nonce=None,
    )


async def _device_start(ctx: TestContext, server: ScriptedServer) -> Any:
    return await OAuthProvider().start_device(ctx, _connector(server), scopes=("read",))


async def _device_poll(ctx: TestContext, server: ScriptedServer) -> Any:
    return await OAuthProvider().poll_device(ctx, _connector(server), device_code=DEVICE_CODE)


async def _jwt_bearer(ctx: TestContext, server: ScriptedServer) -> Any:
    return await OAuthProvider().jwt_bearer(
        ctx,
        _connector(server, "client_secret_post"),
        subject="user-1",
        issuer=None,
        audience=None,
        claims={},
        scopes=("read",),
    )


async def _token_exchange(ctx: TestContext, server: ScriptedServer) -> Any:
    return await OAuthProvider().token_exchange(
        ctx,
        _connector(server),
        subject_token=SUBJECT_TOKEN,
        subject_token_type="urn:ietf:params:oauth:token-type:access_token",
        scopes=("read",),
        audience=None,
        resources=None,
    )


async def _revocation(ctx: TestContext, server: ScriptedServer) -> Any:
    return await OAuthProvider().revoke_user_token(
        ctx, _connector(server), token=REVOKED_TOKEN, hint="refresh_token"
    )


PATHS: dict[str, tuple[Call, set[str]]] = {
    "client_credentials/basic": (_client_credentials("client_secret_basic"), set()),
    "client_credentials/post": (_client_credentials("client_secret_post"), {"client_secret"}),
    "client_credentials/private_key_jwt": (
        _client_credentials("private_key_jwt"),
        {"client_assertion"},
    ),
    "refresh": (_refresh, {"refresh_token"}),
    "authorization_code": (_code, {"code", "code_verifier", "client_assertion"}),
    "device_authorization": (_device_start, set()),
    "device_poll": (_device_poll, {"device_code"}),
    "jwt_bearer": (_jwt_bearer, {"assertion", "client_secret"}),
    "token_exchange": (_token_exchange, {"subject_token"}),
    "revocation": (_revocation, {"token"}),
}


async def _check_nothing_comes_back(
    ctx: TestContext,
    server: ScriptedServer,
    caplog: pytest.LogCaptureFixture,
    path: str,
    place: str,
    encode: Callable[[str], str],
) -> None:
    caplog.set_level(logging.DEBUG)
    call, kinds = PATHS[path]
    server.reply("/token", _quoting(place, encode))
    try:
        outcome: Any = await call(ctx, server)
        shown = [repr(outcome), str(getattr(outcome, "error", ""))]
        assert path == "revocation", f"{path} succeeded on an error answer"
        assert outcome.revoked is False
    except ValetkeyError as exc:
        shown = [str(exc), repr(exc), json.dumps(exc.to_wire())]
    assert server.requests, f"{path} failed before calling the provider: {shown}"
    sent = server.requests[-1]
    assert kinds <= set(sent.form), f"{path} did not carry {kinds - set(sent.form)}"
    carried = _carried(sent)
    assert carried, "the request carried no secret: the test would prove nothing"
    for text in [*shown, caplog.text]:
        for value in carried:
            for form in {value, encode(value), value[:20]}:
                assert form not in text, (path, place, form)


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
async def test_no_carried_secret_comes_back_in_any_encoding(
    ctx: TestContext,
    scripted_server: ScriptedServer,
    caplog: pytest.LogCaptureFixture,
    path: str,
    encoding: str,
) -> None:
    """Whatever the grant and however a description quotes a carried secret, the error and logs hold none of it."""
    await _check_nothing_comes_back(
        ctx, scripted_server, caplog, path, "error_description", ENCODINGS[encoding]
    )


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("place", ["error", "error_uri", "html", "500"])
async def test_no_carried_secret_comes_back_from_any_part_of_an_answer(
    ctx: TestContext,
    scripted_server: ScriptedServer,
    caplog: pytest.LogCaptureFixture,
    path: str,
    place: str,
) -> None:
    """A secret quoted in the error code, the error URI, an HTML page or a 500 body never comes back either."""
    await _check_nothing_comes_back(ctx, scripted_server, caplog, path, place, ENCODINGS["raw"])


async def test_a_provider_description_without_secrets_is_kept_whole(
    ctx: TestContext, scripted_server: ScriptedServer
) -> None:
    """Redaction removes only secrets: an ordinary description reaches the error unchanged."""
    description = "The refresh token has expired; ask the user to sign in again."
    scripted_server.reply(
        "/token", Reply(400, {"error": "invalid_request", "error_description": description})
    )
    with pytest.raises(ProviderError) as caught:
        await _refresh(ctx, scripted_server)
    assert caught.value.details["errorDescription"] == description


@pytest.mark.parametrize("secret", ["y", "e", "ab", "rotated"])
async def test_a_short_client_secret_does_not_mangle_messages(
    ctx: TestContext, scripted_server: ScriptedServer, secret: str
) -> None:
    """A client secret shorter than the minimum is not substituted inside words; quoted alone, the text is withheld."""
    data = {"tokenUrl": f"{scripted_server.url}/token", "clientId": "c", "clientSecret": secret}
    connector = connector_for(OAuthProvider(), data)
    description = "the client credentials presented were not accepted by this server"
    scripted_server.reply(
        "/token", Reply(401, {"error": "invalid_client", "error_description": description})
    )
    with pytest.raises(ProviderError) as caught:
        await OAuthProvider().mint(ctx, connector, TokenRequest(subject=Subject("app")))
    assert caught.value.details["errorDescription"] == description
    assert caught.value.details["error"] == "invalid_client"
    scripted_server.reply(
        "/token",
        Reply(401, {"error": "invalid_client", "error_description": f"secret '{secret}' is wrong"}),
    )
    with pytest.raises(ProviderError) as caught:
        await OAuthProvider().mint(ctx, connector, TokenRequest(subject=Subject("app")))
    assert caught.value.details["errorDescription"] == WITHHELD
    assert caught.value.details["error"] == "invalid_client"


@pytest.mark.parametrize("secret", ["grant", "invalid", "a"])
async def test_a_short_secret_inside_an_error_code_keeps_the_code(
    ctx: TestContext, scripted_server: ScriptedServer, secret: str
) -> None:
    """A short secret that is part of an OAuth error code's word does not turn the code into noise."""
    data = {"tokenUrl": f"{scripted_server.url}/token", "clientId": "c", "clientSecret": secret}
    connector = connector_for(OAuthProvider(), data)
    scripted_server.reply("/token", Reply(400, {"error": "invalid_grant"}))
    with pytest.raises(ProviderError) as caught:
        await OAuthProvider().mint(ctx, connector, TokenRequest(subject=Subject("app")))
    assert caught.value.details["error"] == "invalid_grant"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("bad\u200b token\u202e here", "bad token here"),
        ("line one\r\nFAKE LOG LINE\x1b[31m", "line one FAKE LOG LINE [31m"),
        ("x" * 5000, "x" * (MAX_TEXT - 1) + "…"),
        ("", None),
        ("\u200b\u200b", None),
    ],
)
def test_provider_text_is_cleaned_and_bounded(text: str, expected: str | None) -> None:
    """Control and format characters are removed and provider text is bounded in length."""
    assert Redactor([]).text(text) == expected


def test_a_secret_split_by_a_cut_leaves_no_fragment() -> None:
    """Redaction happens before the text is bounded, so a cut never leaves part of a value."""
    secret = "rt-" + "A1b2C3d4" * 40
    text = Redactor([secret]).text("x" * 150 + secret)
    assert text is not None
    assert secret[:8] not in text
    assert text.startswith("x" * 150)
