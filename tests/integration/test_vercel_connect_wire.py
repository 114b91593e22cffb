"""The official ``vercel-connect`` package, unmodified, on a real broker and a real OAuth server:
``installation_id``, ``authorization_details``, ``jwt-bearer`` and ``token`` subjects, the codes
its typed errors are chosen by, the token response's optional fields, and the refusal a
Vercel-SDK app meets when browser consent waits for a confirm call it cannot make (issue 8).

The broker, the oidc-provider peer and the helpers are those of ``test_consent_flows``.
"""

# ruff: noqa: F811 - the fixtures imported from test_consent_flows are the parameters

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from tests.integration.test_consent_flows import (  # noqa: F401 - broker, oidc_peer, tls: fixtures
    EXCHANGER_SECRET,
    RETURN_URL,
    WEB_SECRET,
    App,
    WebhookReceiver,
    _expire_grant_access_token,
    _grant_tokens,
    _key_app_config,
    broker,
    browse,
    consent_at_peer,
    error_code,
    introspect,
    new_app,
    oidc_peer,
    receiver,
    returned,
    run_callback_flow,
    tls,
)
from tests.peers.oidc import OidcProviderPeer
from vercel.api import session
from vercel.connect import (
    ConnectApiError,
    ConnectAppTokenSubject,
    ConnectCustomAuthorizationDetail,
    ConnectGitHubAppInstallationAuthorizationDetail,
    ConnectJwtBearerTokenSubject,
    ConnectNotFoundError,
    ConnectOptions,
    ConnectorInstallationRequiredError,
    ConnectServiceOptions,
    ConnectTokenExchangeSubject,
    ConnectUserTokenSubject,
    InvalidGrantError,
    NoValidTokenError,
    UserAuthorizationRequiredError,
    get_connector_metadata,
    get_token,
    get_token_response,
    revoke_token,
    start_authorization,
)

from valetkey.testing import RunningBroker

ALICE = ConnectUserTokenSubject(id="alice")


def options(app: App, **kw: Any) -> ConnectOptions:
    return ConnectOptions(vercel_token=app.identity, no_cache=True, **kw)


def sdk(broker: RunningBroker) -> Any:
    """An SDK session of the official package pointed at the broker."""
    return session(service_options=[ConnectServiceOptions(base_url=broker.url)])


def signer_app(broker: RunningBroker, peer: OidcProviderPeer) -> App:
    return new_app(
        broker, peer, data=_key_app_config(peer, ["jwt_bearer"]), subjects=("jwt-bearer",)
    )


def exchanger_app(broker: RunningBroker, peer: OidcProviderPeer) -> App:
    return new_app(
        broker,
        peer,
        data={
            "issuer": peer.issuer,
            "clientId": "exchanger",
            "clientSecret": EXCHANGER_SECRET,
            "grants": ["token_exchange"],
            "scopes": ["read", "write"],
        },
        subjects=("token",),
    )


# -- installation_id ---------------------------------------------------------------------


class TestInstallationId:
    """No connector type has installations: an ``installation_id`` is refused as the package's
    ConnectorInstallationRequiredError (``connector_installation_required``), with Valetkey's
    reason and the field, on every call that takes one; never served as if it had been honoured."""

    @pytest.mark.parametrize("installation", ["T0123", "inst/with/slash", "i" * 200])
    async def test_get_token_for_a_user_refuses_it(
        self, broker: RunningBroker, oidc_peer: OidcProviderPeer, installation: str
    ) -> None:
        app = new_app(broker, oidc_peer)
        run_callback_flow(app, oidc_peer)
        async with sdk(broker):
            with pytest.raises(ConnectorInstallationRequiredError) as info:
                await get_token(
                    app.uid, subject=ALICE, installation_id=installation, options=options(app)
                )
            assert await get_token(app.uid, subject=ALICE, options=options(app))  # without: served
        error = info.value
        assert (error.status_code, error.code) == (403, "connector_installation_required")
        body = error.data["error"]  # type: ignore[index]
        assert (body["field"], body["reason"]) == ("installationId", "installations_not_supported")
        assert installation not in str(error)  # the refusal names the connector, not the value

    async def test_jwt_bearer_and_revoke_and_start_refuse_it(
        self, broker: RunningBroker, oidc_peer: OidcProviderPeer
    ) -> None:
        signer = signer_app(broker, oidc_peer)
        user_app = new_app(broker, oidc_peer)
        async with sdk(broker):
            with pytest.raises(ConnectorInstallationRequiredError):
                await get_token(
                    signer.uid,
                    subject=ConnectJwtBearerTokenSubject(sub="carol"),
                    installation_id="T1",
                    options=options(signer),
                )
            with pytest.raises(ConnectorInstallationRequiredError):
                await revoke_token(
                    user_app.uid, subject=ALICE, installation_id="T1", options=options(user_app)
                )
            with pytest.raises(ConnectorInstallationRequiredError):
                await start_authorization(
                    user_app.uid,
                    subject=ALICE,
                    return_url=RETURN_URL,
                    installation_id="T1",
                    options=options(user_app),
                )
            with pytest.raises(ConnectNotFoundError):  # an unknown connector is still not_found
                await get_token(
                    "oauth/missing", subject=ALICE, installation_id="T1", options=options(user_app)
                )

    @pytest.mark.parametrize(
        "value",
        ["i" * 201, 42, ["T1"], {"id": "T1"}, "tab\there"],
        ids=["oversize", "number", "list", "object", "control-character"],
    )
    def test_oversize_or_wrong_type_is_invalid_request(
        self, broker: RunningBroker, oidc_peer: OidcProviderPeer, value: Any
    ) -> None:
        app = new_app(broker, oidc_peer)
        for path, body in (
            (f"/v1/connect/token/{app.uid}", {"subject": {"type": "user", "id": "alice"}}),
            (
                f"/v1/connect/authorize/{app.uid}",
                {"subject": {"type": "user", "id": "alice"}, "returnUrl": RETURN_URL},
            ),
        ):
            refused = app.call(path, {**body, "installationId": value})
            assert refused.status_code == 400, refused.text
            assert error_code(refused) == "invalid_request"
            assert refused.json()["error"]["field"] == "installationId"


# -- authorization_details ---------------------------------------------------------------


def _deep(levels: int) -> list[Any]:
    value: list[Any] = [{"type": "x"}]
    for _ in range(levels):
        value = [{"type": "x", "nested": value}]
    return value


DEEP = _deep(40)  # deeper than the broker parses (32 levels)


class TestAuthorizationDetails:
    """RFC 9396 details are parsed and refused as ``unsupported_operation`` naming the field (no
    connector here can honour them), for the package's typed details and for the body the
    TypeScript adapters spread into an authorization request; malformed ones are invalid_request."""

    @pytest.mark.parametrize(
        "details",
        [
            [ConnectGitHubAppInstallationAuthorizationDetail(org="acme", repositories=["r1"])],
            [ConnectCustomAuthorizationDetail(type="payment_initiation", details={"amount": "1"})],
            [
                ConnectCustomAuthorizationDetail(type="a"),
                ConnectCustomAuthorizationDetail(type="b", details={"locations": ["x"]}),
            ],
        ],
        ids=["github", "custom", "two"],
    )
    async def test_the_packages_details_are_a_clear_refusal(
        self, broker: RunningBroker, oidc_peer: OidcProviderPeer, details: list[Any]
    ) -> None:
        app = new_app(broker, oidc_peer)
        run_callback_flow(app, oidc_peer)
        async with sdk(broker):
            with pytest.raises(ConnectApiError) as info:
                await get_token(
                    app.uid, subject=ALICE, authorization_details=details, options=options(app)
                )
        assert (info.value.status_code, info.value.code) == (400, "unsupported_operation")
        assert info.value.data["error"]["field"] == "authorizationDetails"  # type: ignore[index]

    def test_in_an_authorization_request_too(
        self, broker: RunningBroker, oidc_peer: OidcProviderPeer
    ) -> None:
        app = new_app(broker, oidc_peer)
        refused = app.authorize(
            returnUrl=RETURN_URL, authorizationDetails=[{"type": "payment_initiation"}]
        )
        assert (refused.status_code, error_code(refused)) == (400, "unsupported_operation")
        assert app.authorize(returnUrl=RETURN_URL, authorizationDetails=[]).status_code == 200

    @pytest.mark.parametrize(
        "value",
        [{"type": "x"}, "payment", 7, ["x"], [{"details": 1}], [{"type": "x"}] * 101, DEEP],
        ids=["object", "string", "number", "not-objects", "no-type", "too-many", "too-deep"],
    )
    def test_malformed_details_are_invalid_request(
        self, broker: RunningBroker, oidc_peer: OidcProviderPeer, value: Any
    ) -> None:
        app = new_app(broker, oidc_peer)
        refused = app.call(
            f"/v1/connect/token/{app.uid}",
            {"subject": {"type": "user", "id": "alice"}, "authorizationDetails": value},
        )
        assert (refused.status_code, error_code(refused)) == (400, "invalid_request"), refused.text


# -- jwt-bearer and token subjects -------------------------------------------------------


CLAIMS = "subject.additionalClaims"


class TestJwtBearerSubject:
    """The package's jwt-bearer subject gets a token for its ``sub`` (RFC 7523), confirmed at the
    peer, with ``externalSubject`` naming it; bad claims and oversize values are refused."""

    @pytest.mark.parametrize("sub", ["carol", "dave@example.com", "s" * 120])
    async def test_a_token_for_the_asserted_subject(
        self, broker: RunningBroker, oidc_peer: OidcProviderPeer, sub: str
    ) -> None:
        app = signer_app(broker, oidc_peer)
        async with sdk(broker):
            response = await get_token_response(
                app.uid, subject=ConnectJwtBearerTokenSubject(sub=sub), options=options(app)
            )
        info = introspect(oidc_peer, response.token)
        assert (info["active"], info["sub"], info["client_id"]) == (True, sub, "key-app")
        assert response.external_subject == sub
        assert response.claims is None  # an assertion's sub is asked for, not verified by the broker
        assert response.connector.uid == app.uid

    @pytest.mark.parametrize(
        ("subject", "field"),
        [
            (ConnectJwtBearerTokenSubject(sub="carol", additional_claims={"exp": 1}), CLAIMS),
            (
                ConnectJwtBearerTokenSubject(
                    sub="carol", additional_claims={f"c{i}": i for i in range(33)}
                ),
                CLAIMS,
            ),
            (ConnectJwtBearerTokenSubject(sub="s" * 201), "subject.sub"),
            (ConnectJwtBearerTokenSubject(sub="carol", iss="i" * 2001), "subject.iss"),
        ],
        ids=["reserved-claim", "too-many-claims", "oversize-sub", "oversize-iss"],
    )
    async def test_bad_assertions_are_invalid_request(
        self, broker: RunningBroker, oidc_peer: OidcProviderPeer, subject: Any, field: str
    ) -> None:
        app = signer_app(broker, oidc_peer)
        async with sdk(broker):
            with pytest.raises(ConnectApiError) as info:
                await get_token(app.uid, subject=subject, options=options(app))
        assert (info.value.status_code, info.value.code) == (400, "invalid_request")
        assert info.value.data["error"]["field"] == field  # type: ignore[index]


class TestTokenSubject:
    """The package's token subject exchanges a token it holds (RFC 8693) for one acting for the
    same person, confirmed at the peer; the subject token never comes back; bad ones are refused."""

    async def test_exchanges_a_users_token(
        self, broker: RunningBroker, oidc_peer: OidcProviderPeer
    ) -> None:
        user_app = new_app(broker, oidc_peer)
        exchanger = exchanger_app(broker, oidc_peer)
        for user in ("alice", "erin"):
            run_callback_flow(user_app, oidc_peer, user)
            subject = ConnectUserTokenSubject(id=user)
            async with sdk(broker):
                held = await get_token(user_app.uid, subject=subject, options=options(user_app))
                response = await get_token_response(
                    exchanger.uid,
                    subject=ConnectTokenExchangeSubject(token=held),
                    scopes=["read"],
                    options=options(exchanger),
                )
            info = introspect(oidc_peer, response.token)
            assert (info["active"], info["sub"], info["scope"]) == (True, user, "read")
            assert info["client_id"] == "exchanger"
            assert held not in response.model_dump_json().replace(response.token, "")

    @pytest.mark.parametrize(
        ("token", "code"),
        [("t" * 16385, "invalid_request"), ("not-a-token-the-peer-issued", "invalid_grant")],
        ids=["oversize", "unknown"],
    )
    async def test_bad_subject_tokens_are_refused(
        self, broker: RunningBroker, oidc_peer: OidcProviderPeer, token: str, code: str
    ) -> None:
        exchanger = exchanger_app(broker, oidc_peer)
        async with sdk(broker):
            with pytest.raises(ConnectApiError) as info:
                await get_token(
                    exchanger.uid,
                    subject=ConnectTokenExchangeSubject(token=token),
                    options=options(exchanger),
                )
        assert (info.value.status_code, info.value.code) == (400, code)
        if code == "invalid_grant":  # the peer refused it: the package's own typed error
            assert isinstance(info.value, InvalidGrantError)
        assert token[:40] not in str(info.value)


# -- the codes the package's typed errors are chosen by -----------------------------------


def break_the_grant(broker: RunningBroker, peer: OidcProviderPeer, user: str) -> None:
    """Revoke ``user``'s refresh token at the peer and make the stored access token look
    expired, so the next request must refresh and the provider refuses."""
    held = _grant_tokens(broker, user)
    revoked = httpx2.post(
        peer.revocation_url,
        data={"token": held["refreshToken"], "token_type_hint": "refresh_token"},
        auth=("web-app", WEB_SECRET),
    )
    assert revoked.status_code == 200
    _expire_grant_access_token(broker, user)
    broker.broker.exchange._tokens.clear()  # the in-memory copy of the old access token too


class TestTypedErrors:
    """An unusable grant is the package's NoValidTokenError (``no_token``), a grant never made its
    UserAuthorizationRequiredError; Valetkey's precise code and reason ride along."""

    async def test_a_grant_the_provider_no_longer_refreshes_is_no_valid_token(
        self, broker: RunningBroker, oidc_peer: OidcProviderPeer
    ) -> None:
        user = "nvt-" + ALICE.id
        app = new_app(broker, oidc_peer)
        run_callback_flow(app, oidc_peer, user)
        break_the_grant(broker, oidc_peer, user)
        async with sdk(broker):
            with pytest.raises(NoValidTokenError) as info:
                await get_token(app.uid, subject=ConnectUserTokenSubject(id=user), options=options(app))
            with pytest.raises(UserAuthorizationRequiredError) as never:
                await get_token(
                    app.uid, subject=ConnectUserTokenSubject(id="never"), options=options(app)
                )
        body = info.value.data["error"]  # type: ignore[index]
        assert (info.value.code, body["valetkeyCode"], body["reason"]) == (
            "no_token",
            "user_authorization_required",
            "grant_failed",
        )
        assert never.value.code == "user_authorization_required"


# -- what the token response and metadata carry ------------------------------------------


class TestResponseFields:
    """``externalSubject`` and ``claims.sub`` from the verified ID token of the user's consent;
    ``connector.serviceName`` where the connector names a service; ``clientUrl`` from the
    configuration; nothing invented where the broker does not know the value."""

    async def test_a_users_token_names_the_provider_account(
        self, broker: RunningBroker, oidc_peer: OidcProviderPeer
    ) -> None:
        app = new_app(broker, oidc_peer, service="acme-crm")
        run_callback_flow(app, oidc_peer)
        async with sdk(broker):
            response = await get_token_response(app.uid, subject=ALICE, options=options(app))
            metadata = await get_connector_metadata(app.uid, options=options(app))
        sub = introspect(oidc_peer, response.token)["sub"]
        assert response.external_subject == sub
        assert response.claims == {"sub": sub}
        assert response.connector.service_name == "acme-crm"
        assert (response.name, response.tenant_id, response.installation_id) == (None, None, None)
        assert metadata.client_url == oidc_peer.issuer

    async def test_an_app_token_has_no_external_subject(
        self, broker: RunningBroker, oidc_peer: OidcProviderPeer
    ) -> None:
        app = new_app(
            broker,
            oidc_peer,
            data={
                "tokenUrl": oidc_peer.token_url,
                "clientId": "exchanger",
                "clientSecret": EXCHANGER_SECRET,
                "grants": ["client_credentials"],
                "scopes": ["read"],
            },
            subjects=("app",),
        )
        async with sdk(broker):
            metadata = await get_connector_metadata(app.uid, options=options(app))
        token_url = urlsplit(oidc_peer.token_url)
        assert metadata.client_url == f"{token_url.scheme}://{token_url.netloc}"


# -- what the TypeScript package sends: validityBufferMs, prompt, several channels at once -----


USER = {"type": "user", "id": "alice"}


class TestTypeScriptRequestFields:
    """The TypeScript package's extra request fields, bounded before anything stores them (the
    package itself is driven against the broker in test_vercel_connect_ts)."""

    @pytest.mark.parametrize("buffer", [0, 30_000, 86_400_000])
    def test_validity_buffer_is_accepted(
        self, broker: RunningBroker, oidc_peer: OidcProviderPeer, buffer: int
    ) -> None:
        app = new_app(broker, oidc_peer)
        run_callback_flow(app, oidc_peer)
        served = app.call(
            f"/v1/connect/token/{app.uid}", {"subject": USER, "validityBufferMs": buffer}
        )
        assert served.status_code == 200, served.text
        started = app.authorize(returnUrl=RETURN_URL, validityBufferMs=buffer)
        assert started.status_code == 200, started.text

    @pytest.mark.parametrize(
        "buffer",
        [-1, 86_400_001, 10**30, "30000", True, 1.5, None.__class__.__name__, [30000]],
        ids=["negative", "over-a-day", "huge", "string", "bool", "float", "word", "list"],
    )
    def test_validity_buffer_out_of_bounds_is_invalid_request(
        self, broker: RunningBroker, oidc_peer: OidcProviderPeer, buffer: Any
    ) -> None:
        app = new_app(broker, oidc_peer)
        for path, body in (
            (f"/v1/connect/token/{app.uid}", {"subject": USER}),
            (f"/v1/connect/authorize/{app.uid}", {"subject": USER, "returnUrl": RETURN_URL}),
        ):
            refused = app.call(path, {**body, "validityBufferMs": buffer})
            assert (refused.status_code, error_code(refused)) == (400, "invalid_request")
            assert refused.json()["error"]["field"] == "validityBufferMs"

    @pytest.mark.parametrize("prompt", ["consent", "login consent", "select_account", "none"])
    def test_prompt_is_forwarded_to_the_provider(
        self, broker: RunningBroker, oidc_peer: OidcProviderPeer, prompt: str
    ) -> None:
        app = new_app(broker, oidc_peer)
        started = app.started(returnUrl=RETURN_URL, prompt=prompt)
        assert parse_qs(urlsplit(started["url"]).query)["prompt"] == [prompt]
        plain = app.started(returnUrl=RETURN_URL)
        assert "prompt" not in parse_qs(urlsplit(plain["url"]).query)

    @pytest.mark.parametrize(
        "prompt",
        ["", "a" * 41, "consent\n", "consent&x=1", "a b c d e f g h i", 7, ["consent"]],
        ids=["empty", "oversize", "newline", "query", "nine-values", "number", "list"],
    )
    def test_bad_prompts_are_invalid_request(
        self, broker: RunningBroker, oidc_peer: OidcProviderPeer, prompt: Any
    ) -> None:
        refused = new_app(broker, oidc_peer).authorize(returnUrl=RETURN_URL, prompt=prompt)
        assert (refused.status_code, error_code(refused)) == (400, "invalid_request")
        assert refused.json()["error"]["field"] == "prompt"

    def test_token_parameters_spread_into_authorize(
        self, broker: RunningBroker, oidc_peer: OidcProviderPeer
    ) -> None:
        """resources are forwarded (RFC 8707), audience is checked against the link and not
        used; ones the link does not allow, several audiences and oversize ones are refused."""
        api = "https://api.example.test/"
        app = new_app(broker, oidc_peer, link={"resources": [api], "audiences": [api]})
        refused = new_app(broker, oidc_peer).authorize(returnUrl=RETURN_URL, resources=[api])
        assert (refused.status_code, error_code(refused)) == (403, "target_not_allowed")
        started = app.started(
            returnUrl=RETURN_URL,
            scopes=["read"],
            resources=["https://api.example.test/"],
            audience="https://api.example.test/",
        )
        assert parse_qs(urlsplit(started["url"]).query)["resource"] == ["https://api.example.test/"]
        for body, field in (
            ({"resources": ["https://x.test/" + "a" * 2001]}, "resources"),
            ({"resources": api}, None),
            ({"audience": [api, "https://b.test"]}, "audience"),
            ({"resources": [7]}, "resources"),
        ):
            answer = app.authorize(returnUrl=RETURN_URL, **body)
            if field is None:  # one string is one resource, as on the token endpoint
                assert answer.status_code == 200, answer.text
                continue
            assert answer.status_code == 400, answer.text
            assert answer.json()["error"]["field"] == field

    def test_return_url_webhook_and_device_code_together(
        self,
        broker: RunningBroker,
        oidc_peer: OidcProviderPeer,
        receiver: WebhookReceiver,
    ) -> None:
        """One request, three channels: the device code works on the broker's device page, the
        browser comes back to the return URL, the webhook fires, and the grant is served."""
        app = new_app(broker, oidc_peer)
        hook = f"{receiver.url}/hooks/all-three"
        started = app.started(returnUrl=RETURN_URL, webhook=hook, deviceCode=True)
        assert started["deviceCode"]
        assert started["url"].startswith(f"{broker.url}/device?user_code=")
        seen = len(receiver.deliveries)
        at_peer = submit_user_code(broker, started["deviceCode"])
        back = returned(browse(consent_at_peer(oidc_peer, at_peer, "alice")))
        assert back == {"valetkey_request": started["request"], "valetkey_status": "completed"}
        event = json.loads(receiver.wait(seen + 1)[seen].body)
        assert (event["type"], event["request"]) == ("authorization.completed", started["request"])
        assert app.user_token().status_code == 200

    def test_return_url_and_webhook_together_still_confirm(
        self,
        broker: RunningBroker,
        oidc_peer: OidcProviderPeer,
        receiver: WebhookReceiver,
    ) -> None:
        """Without a device code the browser returns with status confirm and the webhook says
        confirmation is required: both channels, and the default link still wants the confirm."""
        app = new_app(broker, oidc_peer)
        seen = len(receiver.deliveries)
        started = app.started(returnUrl=RETURN_URL, webhook=f"{receiver.url}/hooks/two")
        back = returned(browse(consent_at_peer(oidc_peer, started["url"], "alice")))
        assert back["valetkey_status"] == "confirm"
        event = json.loads(receiver.wait(seen + 1)[seen].body)
        assert event["type"] == "authorization.confirmation_required"
        assert app.confirm(started["request"], started["verifier"]).status_code == 200
        assert app.user_token().status_code == 200


# -- a Vercel-SDK app and the confirm step -----------------------------------------------


class TestUnconfirmedConsent:
    """An app on the package cannot call confirm: after browser consent its get_token is the
    package's UserAuthorizationRequiredError whose message names the link setting to change
    (confirmConsent, --no-confirm-consent); with that setting, or with a device code asked for
    too, the same calls finish."""

    async def test_the_refusal_names_the_link_setting(
        self, broker: RunningBroker, oidc_peer: OidcProviderPeer
    ) -> None:
        app = new_app(broker, oidc_peer)
        async with sdk(broker):
            started = await start_authorization(
                app.uid, subject=ALICE, return_url=RETURN_URL, options=options(app)
            )
            back = returned(browse(consent_at_peer(oidc_peer, started.url, "alice")))
            assert back["valetkey_status"] == "confirm"
            with pytest.raises(UserAuthorizationRequiredError) as info:
                await get_token(app.uid, subject=ALICE, options=options(app))
            other = ConnectUserTokenSubject(id="bob")  # no consent at all: the plain refusal
            with pytest.raises(UserAuthorizationRequiredError) as plain:
                await get_token(app.uid, subject=other, options=options(app))
        message = str(info.value)
        assert "--no-confirm-consent" in message
        assert "confirmConsent" in message
        assert started.request in message
        body = info.value.data["error"]  # type: ignore[index]
        assert (body["reason"], body["setting"], body["request"]) == (
            "awaiting_confirmation",
            "confirmConsent",
            started.request,
        )
        assert "confirmConsent" not in str(plain.value)

    async def test_device_code_next_to_a_return_url_needs_no_confirm(
        self, broker: RunningBroker, oidc_peer: OidcProviderPeer
    ) -> None:
        """As the TypeScript adapters ask: return URL and device code together. The broker's
        device page is used, the browser returns to the app, and get_token is served."""
        app = new_app(broker, oidc_peer)
        async with sdk(broker):
            started = await start_authorization(
                app.uid,
                subject=ALICE,
                return_url=RETURN_URL,
                device_code=True,
                options=options(app),
            )
            assert started.device_code
            assert started.url.startswith(f"{broker.url}/device?user_code=")
            at_peer = submit_user_code(broker, started.device_code)
            back = returned(browse(consent_at_peer(oidc_peer, at_peer, "alice")))
            assert back == {"valetkey_request": started.request, "valetkey_status": "completed"}
            token = await get_token(app.uid, subject=ALICE, options=options(app))
        assert introspect(oidc_peer, token)["sub"] == "alice"

    async def test_app_subject_codes_are_unchanged(
        self, broker: RunningBroker, oidc_peer: OidcProviderPeer
    ) -> None:
        app = new_app(broker, oidc_peer)
        async with sdk(broker):
            with pytest.raises(ConnectApiError) as info:
                await get_token(app.uid, subject=ConnectAppTokenSubject(), options=options(app))
        assert (info.value.code, info.value.status_code) == ("subject_not_allowed", 403)


def submit_user_code(broker: RunningBroker, user_code: str) -> str:
    """Submit ``user_code`` on the broker's device page; the provider URL it redirects to."""
    answer = httpx2.post(
        f"{broker.url}/device", data={"user_code": user_code}, follow_redirects=False, timeout=30
    )
    assert answer.status_code == 303, answer.text
    return answer.headers["location"]
