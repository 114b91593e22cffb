"""A provider that quotes back what it was sent leaks nothing through the broker, on each store.

The scripted provider answers every grant with an error whose description quotes every secret
the request carried (client secret, Basic credential, client assertion, refresh token, code,
PKCE verifier, device code, subject token, jwt-bearer assertion, the token being revoked).
On each grant path through the real broker (client credentials, refresh, code exchange at the
callback, device poll, jwt-bearer, token exchange, revocation) none of those values reaches
the app's HTTP response, the callback page, ``/v1/audit``, a webhook or the broker's logs.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, quote_plus, urlsplit

import httpx2
import pytest
from joserfc.jwk import ECKey
from tests.integration.test_consent_flows import Tls, WebhookReceiver, _make_tls
from tests.peers.scripted import Recorded, Reply, ScriptedServer, scripted_server

from valetkey.providers.oauth.client import SECRET_PARAMETERS
from valetkey.testing import RunningBroker, running_broker

__all__ = ["scripted_server"]

CLIENT_SECRET = "cs-Leak/Secret+value_0123"
REFRESH_TOKEN = "rt-Leak/Refresh+Token_0123"
SUBJECT_TOKEN = "st-Leak/Subject+Token_0123"
CODE = "code-Leak/Code+0123"
DEVICE_CODE = "dc-Leak/Device+Code_0123"
EC_PEM = ECKey.generate_key("P-256", private=True).as_pem(private=True).decode()
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"


def _asked(request: Recorded) -> str:
    """The scope a request asked for, which the scripted provider grants exactly."""
    return request.form.get("scope", [""])[0]


def _carried(request: Recorded) -> list[str]:
    values = [v for name, vs in request.form.items() if name in SECRET_PARAMETERS for v in vs]
    authorization = request.headers.get("Authorization")
    if authorization:
        values += [authorization, authorization.partition(" ")[2]]
    return values


class Provider:
    """The scripted provider: quotes every carried secret; succeeds once when told to."""

    def __init__(self, server: ScriptedServer) -> None:
        self.server = server
        self.succeed_next = False
        server.reply("/token", self._token)
        server.reply("/revoke", self._quote)
        server.reply(
            "/device",
            Reply(
                json_body={
                    "device_code": DEVICE_CODE,
                    "user_code": "ABCD-EFGH",
                    "verification_uri": "https://provider.test/device",
                    "expires_in": 600,
                    "interval": 1,
                }
            ),
        )

    def _token(self, request: Recorded) -> Reply:
        if self.succeed_next:
            self.succeed_next = False
            return Reply(
                json_body={"access_token": "at-ok-0123456789", "token_type": "Bearer", "scope": _asked(request)}
            )
        return self._quote(request)

    def _quote(self, request: Recorded) -> Reply:
        values = _carried(request)
        quoted = " ".join(f"{v} / {quote_plus(v, safe='')} / {json.dumps(v)[1:-1]}" for v in values)
        code = "invalid_grant" if "refresh_token" in request.form else "invalid_request"
        return Reply(400, {"error": code, "error_description": f"rejected: {quoted}"})

    def carried(self) -> set[str]:
        return {v for r in self.server.requests for v in _carried(r)}


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return _make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def receiver(tls: Tls) -> Iterator[WebhookReceiver]:
    server = WebhookReceiver(tls)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def broker(database_url: str, tmp_path: Path, tls: Tls) -> Iterator[RunningBroker]:
    """A broker on each store that trusts the webhook receiver's CA."""
    with running_broker(tmp_path / "data", database_url=database_url, ca_file=tls.ca_file) as b:
        yield b


def _connector(server: ScriptedServer, **changes: Any) -> dict[str, Any]:
    return {
        "tokenUrl": f"{server.url}/token",
        "authorizationUrl": f"{server.url}/authorize",
        "deviceAuthorizationUrl": f"{server.url}/device",
        "revocationUrl": f"{server.url}/revoke",
        "clientId": "leak-client",
        "clientSecret": CLIENT_SECRET,
        "scopes": ["read"],
        **changes,
    }


def _setup(broker: RunningBroker, server: ScriptedServer) -> str:
    key = {"authMethod": "private_key_jwt", "privateKey": EC_PEM, "clientSecret": None}
    connectors: dict[str, tuple[dict[str, Any], list[str]]] = {
        "oauth/cc": (_connector(server), ["app"]),
        "oauth/ccpost": (_connector(server, authMethod="client_secret_post"), ["app"]),
        "oauth/cckey": (_connector(server, **key), ["app"]),
        "oauth/user": (
            _connector(server, grants=["authorization_code", "device_code"]),
            ["user"],
        ),
        "oauth/jb": (
            _connector(server, grants=["jwt_bearer"], privateKey=EC_PEM),
            ["jwt-bearer"],
        ),
        "oauth/tx": (_connector(server, grants=["token_exchange"]), ["token"]),
    }
    with broker.admin() as c:
        assert c.post("/v1/projects", json={"slug": "leaky"}).status_code == 201
        for uid, (data, subjects) in connectors.items():
            data = {k: v for k, v in data.items() if v is not None}
            service, name = uid.split("/")
            made = c.post("/v1/connectors", json={"service": service, "name": name, "data": data})
            assert made.status_code == 201, made.text
            linked = c.post(
                f"/v1/connectors/{uid}/links",
                json={"project": "leaky", "environments": ["development"], "subjects": subjects},
            )
            assert linked.status_code == 200, linked.text
        ident = c.post("/v1/projects/leaky/development-identity", json={})
        assert ident.status_code < 300, ident.text
        token: str = ident.json()["token"]
    return token


def test_no_carried_secret_reaches_the_app_the_audit_a_webhook_or_the_logs(
    broker: RunningBroker,
    scripted_server: ScriptedServer,
    receiver: WebhookReceiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every grant path through the broker, against a provider quoting every secret it was sent."""
    caplog.set_level(logging.DEBUG)
    provider = Provider(scripted_server)
    identity = _setup(broker, scripted_server)
    auth = {"authorization": f"Bearer {identity}"}
    hook = f"{receiver.url}/hook"
    shown: list[str] = []

    def post(path: str, body: dict[str, Any], expect: int | None = None) -> httpx2.Response:
        answer = httpx2.post(f"{broker.url}{path}", json=body, headers=auth, timeout=30)
        shown.append(answer.text)
        if expect is not None:
            assert answer.status_code == expect, answer.text
        return answer

    # Client credentials, with each client authentication.
    for uid in ("oauth%2Fcc", "oauth%2Fccpost", "oauth%2Fcckey"):
        refused = post(f"/v1/connect/token/{uid}", {"subject": {"type": "app"}}, 502)
        assert refused.json()["error"]["error"] == "invalid_request"

    # Refresh: an imported grant whose access token has expired; the provider refuses the
    # refresh token (invalid_grant): grant.failed in the audit log and to the webhook.
    post(
        "/v1/connect/authorize/oauth%2Fuser",
        {"subject": {"type": "user", "id": "alice"}, "webhook": hook},
        200,
    )
    post(
        "/v1/connect/token/oauth%2Fuser/import",
        {
            "subject": {"type": "user", "id": "alice"},
            "accessToken": "at-expired-0123456789",
            "refreshToken": REFRESH_TOKEN,
            "expiresAt": 1000,
        },
        201,
    )
    refused = post("/v1/connect/token/oauth%2Fuser", {"subject": {"type": "user", "id": "alice"}})
    assert refused.json()["error"]["reason"] == "grant_failed", refused.text

    # Code exchange at the callback (the page the person sees, and the webhook).
    started = post(
        "/v1/connect/authorize/oauth%2Fuser",
        {"subject": {"type": "user", "id": "bob"}, "webhook": hook},
        200,
    ).json()
    state = parse_qs(urlsplit(started["url"]).query)["state"][0]
    page = httpx2.get(
        f"{broker.url}/v1/connect/callback", params={"state": state, "code": CODE}, timeout=30
    )
    shown.append(page.text)
    assert "code" in scripted_server.requests[-1].form

    # Device poll: the provider refuses the device code.
    post(
        "/v1/connect/authorize/oauth%2Fuser",
        {"subject": {"type": "user", "id": "carol"}, "deviceCode": True},
        200,
    )
    polled = post("/v1/connect/token/oauth%2Fuser", {"subject": {"type": "user", "id": "carol"}})
    assert polled.status_code == 502, polled.text
    assert scripted_server.requests[-1].form.get("device_code") == [DEVICE_CODE]

    # jwt-bearer and token exchange.
    post("/v1/connect/token/oauth%2Fjb", {"subject": {"type": "jwt-bearer", "sub": "dave"}}, 502)
    post(
        "/v1/connect/token/oauth%2Ftx",
        {"subject": {"type": "token", "token": SUBJECT_TOKEN}},
        502,
    )
    assert scripted_server.requests[-1].form["grant_type"] == [TOKEN_EXCHANGE]

    # Revocation: an app token the broker holds, revoked; the provider refuses and quotes it.
    provider.succeed_next = True
    issued = httpx2.post(
        f"{broker.url}/v1/connect/token/oauth%2Fcc",
        json={"subject": {"type": "app"}},
        headers=auth,
        timeout=30,
    )
    assert issued.status_code == 200, issued.text  # the one token the provider did issue
    with broker.admin() as c:
        revoked = c.request(
            "DELETE", "/v1/connect/connectors/oauth%2Fcc/tokens", json={"allTokens": True}
        )
        shown.append(revoked.text)
        assert revoked.json()["providerFailed"] == 1, revoked.text
        revoked = c.request(
            "DELETE", "/v1/connect/connectors/oauth%2Fuser/tokens", json={"allTokens": True}
        )
        shown.append(revoked.text)
    assert scripted_server.requests[-1].path == "/revoke"

    deadline = time.monotonic() + 15
    wanted = {"grant.failed", "authorization.failed"}
    while not wanted <= {json.loads(d.body)["type"] for d in receiver.deliveries}:
        assert time.monotonic() < deadline, [d.body for d in receiver.deliveries]
        time.sleep(0.05)
    hooks = list(receiver.deliveries)
    with broker.admin() as c:
        audit = c.get("/v1/audit", params={"limit": 500})
        assert audit.status_code == 200, audit.text
    assert any(row["action"] == "grant.failed" for row in audit.json())

    carried = provider.carried()
    kinds = {name for r in scripted_server.requests for name in r.form} & SECRET_PARAMETERS
    assert kinds >= {
        "client_secret",
        "client_assertion",
        "assertion",
        "refresh_token",
        "code",
        "code_verifier",
        "device_code",
        "subject_token",
        "token",
    }
    # The broker's own log lines (its thread), not the test clients' (whose URLs carry the code).
    logged = [
        caplog.handler.format(r) for r in caplog.records if r.threadName.startswith("broker-")
    ]
    assert logged, "no broker log line was captured: the check below would prove nothing"
    texts = [*shown, audit.text, *(h.body.decode() for h in hooks), *logged]
    for value in carried:
        for form in {value, quote_plus(value, safe=""), quote(value, safe=""), value[:16]}:
            for text in texts:
                assert form not in text, form
