"""The official TypeScript package (``@vercel/connect``), unmodified, run by node against a real
broker and the oidc-provider peer: the requests issue 8 found refused now work as the package
sends them (``validityBufferMs`` in the token body, ``prompt`` with startAuthorization, and the
agent adapters' ``callbackUrl`` + ``webhook`` + ``deviceCode`` with the token parameters spread
in), and its typed errors fire on the codes it branches on.

``tests/peers/vercel_connect_ts/run.mjs`` sends the package's requests (always addressed to
api.vercel.com) to the broker and records each body, so every test also checks what was sent.
"""

# ruff: noqa: F811 - the fixtures imported from test_consent_flows are the parameters

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from tests.integration.test_consent_flows import (  # noqa: F401 - broker, oidc_peer, tls: fixtures
    RETURN_URL,
    App,
    WebhookReceiver,
    broker,
    browse,
    consent_at_peer,
    introspect,
    new_app,
    oidc_peer,
    receiver,
    returned,
    run_callback_flow,
    tls,
)
from tests.integration.test_vercel_connect_wire import submit_user_code
from tests.peers.oidc import OidcProviderPeer

from valetkey.testing import RunningBroker

PEER = Path(__file__).resolve().parents[1] / "peers" / "vercel_connect_ts"
USER = {"type": "user", "id": "alice"}


def run_ts(app: App, *calls: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run ``calls`` through the TypeScript package as ``app``; its results and requests."""
    node = shutil.which("node")
    if node is None or not (PEER / "node_modules" / "@vercel" / "connect").is_dir():
        pytest.fail(f"node and {PEER}/node_modules are needed: run `make peers`")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VERCEL", "NODE_OPTIONS"))}
    done = subprocess.run(
        [node, str(PEER / "run.mjs")],
        input=json.dumps({"baseUrl": app.broker.url, "token": app.identity, "calls": calls}),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=PEER,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    return out["results"], out["requests"]


def ok(result: dict[str, Any]) -> dict[str, Any]:
    assert result["ok"], result
    value: dict[str, Any] = result["value"]
    return value


def token_call(app: App, **params: Any) -> dict[str, Any]:
    return {"op": "getTokenResponse", "connector": app.uid, "params": {"subject": USER, **params}}


def start_call(app: App, params: dict[str, Any], **options: Any) -> dict[str, Any]:
    return {
        "op": "startAuthorization",
        "connector": app.uid,
        "params": {"subject": USER, **params},
        "options": options,
    }


class TestValidityBuffer:
    """getTokenResponse puts ``validityBufferMs`` into the body; the broker accepts it (bounded,
    otherwise ignored: it is the package's own cache margin) and serves the token."""

    @pytest.mark.parametrize("buffer", [0, 30_000, 600_000])
    def test_sent_and_served(
        self, broker: RunningBroker, oidc_peer: OidcProviderPeer, buffer: int
    ) -> None:
        app = new_app(broker, oidc_peer)
        run_callback_flow(app, oidc_peer)
        results, requests = run_ts(app, token_call(app, validityBufferMs=buffer))
        served = ok(results[0])
        assert introspect(oidc_peer, served["token"])["sub"] == "alice"
        assert requests[0]["body"]["validityBufferMs"] == buffer
        assert served["externalSubject"] == "alice"
        assert served["claims"] == {"sub": "alice"}

    @pytest.mark.parametrize("buffer", [-1, 86_400_001, "30000"])
    def test_out_of_bounds_is_the_packages_connect_error(
        self, broker: RunningBroker, oidc_peer: OidcProviderPeer, buffer: Any
    ) -> None:
        app = new_app(broker, oidc_peer)
        results, requests = run_ts(app, token_call(app, validityBufferMs=buffer))
        assert requests[0]["body"]["validityBufferMs"] == buffer
        failed = results[0]
        assert (failed["ok"], failed["name"], failed["status"]) == (False, "ConnectError", 400)
        assert failed["code"] == "invalid_request"
        assert "validityBufferMs" in failed["message"]


class TestPrompt:
    """startAuthorization's ``prompt`` reaches the provider's authorization URL."""

    @pytest.mark.parametrize("prompt", ["consent", "login", "select_account consent"])
    def test_forwarded(self, broker: RunningBroker, oidc_peer: OidcProviderPeer, prompt: str) -> None:
        app = new_app(broker, oidc_peer)
        results, requests = run_ts(
            app, start_call(app, {"scopes": ["read"]}, callbackUrl=RETURN_URL, prompt=prompt)
        )
        started = ok(results[0])
        assert requests[0]["body"]["prompt"] == prompt
        assert parse_qs(urlsplit(started["url"]).query)["prompt"] == [prompt]

    def test_a_prompt_the_broker_cannot_forward_is_refused(
        self, broker: RunningBroker, oidc_peer: OidcProviderPeer
    ) -> None:
        app = new_app(broker, oidc_peer)
        results, _ = run_ts(
            app, start_call(app, {}, callbackUrl=RETURN_URL, prompt="consent&redirect_uri=x")
        )
        assert (results[0]["ok"], results[0]["code"], results[0]["status"]) == (
            False,
            "invalid_request",
            400,
        )


class TestAdapterChannels:
    """What the package's agent adapter (``@vercel/connect/eve``) sends: ``callbackUrl``, an
    https ``webhook`` and ``deviceCode: true`` together, with the token parameters spread in.
    The device code works, the browser returns, the webhook fires, get_token is served."""

    def test_all_three_channels_and_the_spread_token_parameters(
        self,
        broker: RunningBroker,
        oidc_peer: OidcProviderPeer,
        receiver: WebhookReceiver,
    ) -> None:
        api = "https://api.example.test/"
        app = new_app(broker, oidc_peer, link={"resources": [api], "audiences": [api]})
        hook = f"{receiver.url}/hooks/ts-adapter"
        # The resource is forwarded to the provider (checked below, on a request of its own):
        # this peer knows no resource server, so a consent naming one would fail invalid_target.
        spread = {"scopes": ["read"], "audience": api, "validityBufferMs": 30_000}
        results, requests = run_ts(
            app, start_call(app, spread, callbackUrl=RETURN_URL, webhook=hook, deviceCode=True)
        )
        started = ok(results[0])
        sent = requests[0]["body"]
        assert (sent["returnUrl"], sent["webhook"], sent["deviceCode"]) == (RETURN_URL, hook, True)
        assert sent["audience"] == api
        assert started["deviceCode"]
        assert started["connector"]["uid"] == app.uid
        seen = len(receiver.deliveries)
        at_peer = submit_user_code(broker, started["deviceCode"])
        back = returned(browse(consent_at_peer(oidc_peer, at_peer, "alice")))
        assert back == {"valetkey_request": started["request"], "valetkey_status": "completed"}
        event = json.loads(receiver.wait(seen + 1)[seen].body)
        assert (event["type"], event["request"]) == ("authorization.completed", started["request"])
        results, _ = run_ts(
            app,
            token_call(app, scopes=["read"], validityBufferMs=30_000),
            start_call(
                app,
                {**spread, "resources": [api], "authorizationDetails": []},
                callbackUrl=RETURN_URL,
                webhook=hook,
                deviceCode=True,
            ),
            start_call(
                app,
                {**spread, "authorizationDetails": [{"type": "payment_initiation"}]},
                callbackUrl=RETURN_URL,
                deviceCode=True,
            ),
        )
        assert introspect(oidc_peer, ok(results[0])["token"])["sub"] == "alice"
        with_resource = submit_user_code(broker, ok(results[1])["deviceCode"])
        assert parse_qs(urlsplit(with_resource).query)["resource"] == [api]
        assert (results[2]["code"], results[2]["status"]) == ("unsupported_operation", 400)

    def test_callback_and_webhook_without_device_code(
        self,
        broker: RunningBroker,
        oidc_peer: OidcProviderPeer,
        receiver: WebhookReceiver,
    ) -> None:
        """Two channels: the browser returns and the webhook fires; on the default link the
        package's getToken then says which link setting lets it finish without confirm."""
        app = new_app(broker, oidc_peer)
        seen = len(receiver.deliveries)
        results, _ = run_ts(
            app, start_call(app, {}, callbackUrl=RETURN_URL, webhook=f"{receiver.url}/hooks/ts2")
        )
        started = ok(results[0])
        back = returned(browse(consent_at_peer(oidc_peer, started["url"], "alice")))
        assert back["valetkey_status"] == "confirm"
        assert json.loads(receiver.wait(seen + 1)[seen].body)["type"] == (
            "authorization.confirmation_required"
        )
        results, _ = run_ts(app, token_call(app))
        refused = results[0]
        assert (refused["name"], refused["code"]) == (
            "UserAuthorizationRequiredError",
            "user_authorization_required",
        )
        assert "--no-confirm-consent" in refused["message"]


class TestTypedErrors:
    """The package's own classes fire on the codes it branches on."""

    def test_installation_id_is_connector_installation_required(
        self, broker: RunningBroker, oidc_peer: OidcProviderPeer
    ) -> None:
        app = new_app(broker, oidc_peer)
        run_callback_flow(app, oidc_peer)
        results, requests = run_ts(
            app, token_call(app, installationId="T0123"), token_call(app)
        )
        assert requests[0]["body"]["installationId"] == "T0123"
        assert results[0]["name"] == "ConnectorInstallationRequiredError"
        assert results[0]["code"] == "connector_installation_required"
        assert ok(results[1])["token"]

    def test_unlinked_connector_is_forbidden_not_linked(
        self, broker: RunningBroker, oidc_peer: OidcProviderPeer
    ) -> None:
        """The adapter's provisioning fallback recognizes an unlinked connector by ``forbidden``
        and "connector is not linked to this project" (403) in the message."""
        app = new_app(broker, oidc_peer)
        other = new_app(broker, oidc_peer)
        results, _ = run_ts(
            app,
            {"op": "getTokenResponse", "connector": other.uid, "params": {"subject": USER}},
            {"op": "getConnectorMetadata", "connector": other.uid},
            {"op": "getConnectorMetadata", "connector": app.uid},
        )
        for refused in results[:2]:
            assert (refused["ok"], refused["status"], refused["code"]) == (False, 403, "forbidden")
            assert "connector is not linked to this project" in refused["message"].lower()
        metadata = ok(results[2])
        assert metadata["clientUrl"] == oidc_peer.issuer
        assert metadata["uid"] == app.uid
