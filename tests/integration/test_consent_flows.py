"""User consent end to end: the real broker, the real oidc-provider, a headless user agent.

The app is an HTTP client holding a development identity (or the Valetkey SDK, or the official
``vercel-connect`` package); the person is a plain httpx2 client that follows the peer's login and
consent forms (``devInteractions``) and the broker's own pages. What the broker claims is
checked at the peer: RFC 7662 introspection says which account a token acts for, and whether it
is still active.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ipaddress
import json
import re
import secrets
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx2
import pytest
import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet
from tests.peers.context import TestContext, connector_for
from tests.peers.oidc import OidcProviderPeer, confidential_client
from vercel.api import session
from vercel.connect import (
    AuthorizationPendingError,
    ConnectOptions,
    ConnectServiceOptions,
    ConnectUserTokenSubject,
    get_token,
    start_authorization,
)

import valetkey
from valetkey.core.clock import SystemClock
from valetkey.providers.oauth import (
    DEVICE_CODE_GRANT,
    JWT_BEARER_GRANT,
    TOKEN_EXCHANGE_GRANT,
    OAuthProvider,
)
from valetkey.providers.signing import SigningKey
from valetkey.store import tables
from valetkey.store.consent import authorization_aad, grant_aad
from valetkey.testing import RunningBroker, free_port, running_broker

#: The module's broker, and the per-store brokers of the happy path, listen on ports chosen
#: when the peers start (the peers must know their callback URLs as redirect URIs).
_PORTS: dict[str, int] = {}


def port(name: str) -> int:
    """A free port for ``name`` ("broker" or "store"), chosen on first use and kept."""
    return _PORTS.setdefault(name, free_port())


DIRECT_REDIRECT = "http://127.0.0.1:9/direct"  # the import test's own client flow
WEB_SECRET = "web-secret-value-0123"
EXCHANGER_SECRET = "exchanger-secret-value-0123"
KEY_APP = SigningKey.from_pem(
    ECKey.generate_key("P-256", private=True).as_pem(private=True).decode(), "key-1"
)


def _callback(port: int) -> str:
    return f"http://127.0.0.1:{port}/v1/connect/callback"


def _peer_config(*, device: bool) -> dict[str, Any]:
    redirects = [_callback(port("broker")), _callback(port("store")), DIRECT_REDIRECT]
    return {
        "scopes": ["read", "write"],
        "features": {"deviceFlow": device},
        "clients": [
            confidential_client(
                "web-app",
                WEB_SECRET,
                grant_types=(
                    "authorization_code",
                    "refresh_token",
                    *([DEVICE_CODE_GRANT] if device else []),
                ),
                redirect_uris=redirects,
                scope="openid read write",
            ),
            {
                "client_id": "key-app",
                "token_endpoint_auth_method": "private_key_jwt",
                "jwks": {"keys": [KEY_APP.public_jwk()]},
                "grant_types": [JWT_BEARER_GRANT],
                "redirect_uris": [],
                "response_types": [],
                "scope": "read write",
            },
            confidential_client(
                "exchanger",
                EXCHANGER_SECRET,
                grant_types=(TOKEN_EXCHANGE_GRANT,),
                scope="read write",
            ),
        ],
        "jwtBearer": {"issuers": {"key-app": KEY_APP.public_jwk()}},
        "tokenExchange": True,
    }


@pytest.fixture(scope="module")
def oidc_peer() -> Iterator[OidcProviderPeer]:
    with OidcProviderPeer.start(_peer_config(device=True)) as peer:
        yield peer


@pytest.fixture(scope="module")
def plain_peer() -> Iterator[OidcProviderPeer]:
    """The same server without RFC 8628: its discovery document has no device endpoint."""
    with OidcProviderPeer.start(_peer_config(device=False)) as peer:
        yield peer


# -- an HTTPS webhook receiver, with its own CA -----------------------------------------


@dataclass(frozen=True)
class Tls:
    ca_file: Path
    cert_file: Path
    key_file: Path


def _make_tls(directory: Path) -> Tls:
    """A CA and a 127.0.0.1 server certificate it signed (the broker trusts the CA)."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "valetkey test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    tls = Tls(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    tls.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    tls.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    tls.key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return tls


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes


class WebhookReceiver:
    """An HTTPS server on 127.0.0.1 that records each POST and answers 204."""

    def __init__(self, tls: Tls) -> None:
        self.deliveries: list[Delivery] = []
        self._arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver._arrived:
                    receiver.deliveries.append(
                        Delivery(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    receiver._arrived.notify_all()
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tls.cert_file, tls.key_file)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def wait(self, count: int, timeout: float = 10) -> list[Delivery]:
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self.deliveries) >= count, timeout):
                raise AssertionError(f"{len(self.deliveries)} webhook deliveries, expected {count}")
            return list(self.deliveries)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return _make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def receiver(tls: Tls) -> Iterator[WebhookReceiver]:
    server = WebhookReceiver(tls)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory, tls: Tls) -> Iterator[RunningBroker]:
    """One SQLite broker for the module (each test works in a project of its own); it trusts
    the webhook receiver's CA through the ``ca_file`` setting."""
    with running_broker(
        tmp_path_factory.mktemp("broker"), port=port("broker"), ca_file=tls.ca_file
    ) as running:
        yield running


# -- the app and the person ------------------------------------------------------------


@dataclass
class App:
    """One project at the broker, linked to one connector, with its development identity."""

    broker: RunningBroker
    identity: str
    uid: str

    def call(self, path: str, body: dict[str, Any]) -> httpx2.Response:
        return httpx2.post(
            f"{self.broker.url}{path}",
            json=body,
            headers={"authorization": f"Bearer {self.identity}"},
            timeout=30,
        )

    def authorize(self, user: str = "alice", **body: Any) -> httpx2.Response:
        return self.call(
            f"/v1/connect/authorize/{self.uid}", {"subject": {"type": "user", "id": user}, **body}
        )

    def started(self, user: str = "alice", **body: Any) -> dict[str, Any]:
        response = self.authorize(user, **body)
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    def confirm(self, request: str, verifier: str) -> httpx2.Response:
        return self.call(
            f"/v1/connect/authorize/{self.uid}/confirm", {"request": request, "verifier": verifier}
        )

    def token(self, subject: dict[str, Any]) -> httpx2.Response:
        return self.call(f"/v1/connect/token/{self.uid}", {"subject": subject})

    def user_token(self, user: str = "alice") -> httpx2.Response:
        return self.token({"type": "user", "id": user})

    def sdk(self) -> valetkey.AsyncClient:
        return valetkey.AsyncClient(base_url=self.broker.url, identity=self.identity)


def new_app(
    broker: RunningBroker,
    peer: OidcProviderPeer,
    *,
    data: dict[str, Any] | None = None,
    subjects: tuple[str, ...] = ("user",),
    link: dict[str, Any] | None = None,
    service: str = "oauth",
) -> App:
    """A fresh project and ``oauth`` connector (web-app at the peer, unless ``data`` says), created
    under ``service`` (``oauth`` unless named)."""
    name = f"c{secrets.token_hex(4)}"
    project = f"p{secrets.token_hex(4)}"
    config = data or {
        "issuer": peer.issuer,
        "clientId": "web-app",
        "clientSecret": WEB_SECRET,
        "grants": ["authorization_code", "device_code"],
        "scopes": ["openid", "read", "write"],
        "userScopes": ["openid", "read"],
    }
    with broker.admin() as admin:
        for method, path, body in (
            ("POST", "/v1/projects", {"slug": project}),
            (
                "POST",
                "/v1/connectors",
                {"service": service, "name": name, "type": "oauth", "data": config},
            ),
            (
                "POST",
                f"/v1/connectors/{service}/{name}/links",
                {
                    "project": project,
                    "environments": ["development"],
                    "subjects": list(subjects),
                    **(link or {}),
                },
            ),
            ("POST", f"/v1/projects/{project}/development-identity", {}),
        ):
            response = admin.request(method, path, json=body)
            assert response.status_code < 300, f"{path}: {response.text}"
    return App(broker, response.json()["token"], f"{service}/{name}")


def consent_at_peer(peer: OidcProviderPeer, url: str, login: str) -> str:
    """Sign in at the peer as ``login`` and consent; the redirect back (the broker's callback)."""
    back = peer.authorize(url, login=login)
    assert back.startswith(_callback(port("broker"))) or back.startswith(
        _callback(port("store"))
    ), back
    return back


def browse(url: str) -> httpx2.Response:
    """The person's browser loading ``url`` (redirects are not followed)."""
    return httpx2.get(url, follow_redirects=False, timeout=30)


def submit_code(broker: RunningBroker, code: str) -> httpx2.Response:
    """The person's browser posting a code on the broker's device page."""
    return httpx2.post(f"{broker.url}/device", data={"user_code": code}, follow_redirects=False)


def returned(response: httpx2.Response) -> dict[str, str]:
    """The query the broker's 303 back to the app's returnUrl carries."""
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    assert location.startswith(RETURN_URL + "?"), location
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def error_code(response: httpx2.Response) -> str:
    """Valetkey's precise code: ``valetkeyCode`` where the official clients' ``code`` differs."""
    error = response.json()["error"]
    code: str = error.get("valetkeyCode", error["code"])
    return code


def introspect(peer: OidcProviderPeer, token: str) -> dict[str, Any]:
    return peer.introspect(token, "web-app", WEB_SECRET)


def run_callback_flow(app: App, peer: OidcProviderPeer, user: str = "alice") -> dict[str, Any]:
    """Start consent for ``user``, finish it at the peer as ``user``, confirm; the start body."""
    started = app.started(user, returnUrl=RETURN_URL)
    back = returned(browse(consent_at_peer(peer, started["url"], user)))
    assert back == {"valetkey_request": started["request"], "valetkey_status": "confirm"}
    confirmed = app.confirm(started["request"], started["verifier"])
    assert confirmed.status_code == 200, confirmed.text
    return started


RETURN_URL = "http://127.0.0.1:9/back"


# -- 1. callback ------------------------------------------------------------------------


def test_callback_flow_on_each_store(
    database_url: str, tmp_path: Path, oidc_peer: OidcProviderPeer
) -> None:
    """Authorize with a returnUrl, consent at the peer, come back with confirm; the user token
    exists only after the app confirms with its verifier, and the peer says it acts for alice."""
    with running_broker(
        tmp_path / "data", database_url=database_url, port=port("store")
    ) as running:
        app = new_app(running, oidc_peer)
        started = app.started(returnUrl=RETURN_URL)
        assert set(started) >= {"url", "request", "verifier", "expiresAt", "connector"}
        assert started["connector"]["uid"] == app.uid
        query = parse_qs(urlsplit(started["url"]).query)
        assert query["redirect_uri"] == [_callback(port("store"))]
        assert query["code_challenge_method"] == ["S256"]
        assert started["verifier"] not in started["url"]

        back = returned(browse(consent_at_peer(oidc_peer, started["url"], "alice")))
        assert back == {"valetkey_request": started["request"], "valetkey_status": "confirm"}

        before = app.user_token()
        assert before.status_code == 403, before.text
        assert error_code(before) == "user_authorization_required"

        confirmed = app.confirm(started["request"], started["verifier"])
        assert confirmed.status_code == 200, confirmed.text
        assert confirmed.json() == {
            "request": started["request"],
            "status": "completed",
            "user": "alice",
        }

        issued = app.user_token()
        assert issued.status_code == 200, issued.text
        info = introspect(oidc_peer, issued.json()["token"])
        assert (info["active"], info["sub"], info["client_id"]) == (True, "alice", "web-app")
        # With no scopes named, consent asks for the connector's userScopes.
        assert sorted(info["scope"].split()) == ["openid", "read"]
        again = app.confirm(started["request"], started["verifier"])
        assert (again.status_code, error_code(again)) == (400, "invalid_request")


# -- 2. the forwarded link --------------------------------------------------------------


def test_a_forwarded_link_finished_by_someone_else_attaches_nothing(
    broker: RunningBroker, oidc_peer: OidcProviderPeer
) -> None:
    """Mallory finishes alice's link: no grant appears; a wrong verifier ends the request for good
    (the right one then fails too) and revokes mallory's held tokens at the peer; replaying the
    callback shows the invalid-link page."""
    app = new_app(broker, oidc_peer)
    started = app.started(returnUrl=RETURN_URL)
    callback_url = consent_at_peer(oidc_peer, started["url"], "mallory")
    back = returned(browse(callback_url))
    assert back["valetkey_status"] == "confirm"  # lands in mallory's session, which cannot confirm
    assert error_code(app.user_token()) == "user_authorization_required"

    held = _held_for_confirmation(broker, started["request"])
    assert introspect(oidc_peer, held["refreshToken"])["sub"] == "mallory"

    wrong = app.confirm(started["request"], "not-the-verifier")
    assert wrong.status_code == 403, wrong.text
    assert error_code(wrong) == "verification_failed"
    # Mallory's tokens will never be a grant: the broker revoked them at the peer (RFC 7009).
    assert introspect(oidc_peer, held["refreshToken"]) == {"active": False}
    assert introspect(oidc_peer, held["accessToken"]) == {"active": False}
    right = app.confirm(started["request"], started["verifier"])
    assert right.status_code == 400, right.text
    assert error_code(right) == "invalid_request"
    assert error_code(app.user_token()) == "user_authorization_required"

    replay = browse(callback_url)
    assert replay.status_code == 400
    assert "Invalid link" in replay.text
    assert "location" not in replay.headers
    assert error_code(app.user_token()) == "user_authorization_required"
    assert error_code(app.confirm(started["request"], started["verifier"])) == "invalid_request"


def _held_for_confirmation(broker: RunningBroker, request: str) -> dict[str, Any]:
    """The tokens the broker holds while a request awaits confirmation (decrypted with its key
    ring, so the test can ask the peer about them)."""
    engine = sa.create_engine(f"sqlite:///{broker.data_dir / 'valetkey.db'}")
    try:
        with engine.connect() as connection:
            payload = connection.execute(
                sa.select(tables.Authorization.payload).where(tables.Authorization.id == request)
            ).scalar_one()
    finally:
        engine.dispose()
    secret = broker.broker.keyring.decrypt_json(payload, aad=authorization_aad(request))
    tokens: dict[str, Any] = secret["tokens"]
    return tokens


def test_the_callback_refuses_missing_or_unknown_state(broker: RunningBroker) -> None:
    """A callback without state, or with a state the broker never issued, is the invalid-link page."""
    for query in ("", "?state=made-up&code=x"):
        page = browse(f"{_callback(port('broker'))}{query}")
        assert page.status_code == 400
        assert "Invalid link" in page.text
        assert page.headers["cache-control"] == "no-store"


def test_a_confirm_for_another_project_is_not_found(
    broker: RunningBroker, oidc_peer: OidcProviderPeer
) -> None:
    """Another app holding the request id and verifier cannot confirm: the request is not its own."""
    app = new_app(broker, oidc_peer)
    started = app.started(returnUrl=RETURN_URL)
    returned(browse(consent_at_peer(oidc_peer, started["url"], "alice")))
    other = App(broker, new_app(broker, oidc_peer).identity, app.uid)
    stolen = other.confirm(started["request"], started["verifier"])
    assert stolen.status_code == 404, stolen.text
    assert app.confirm(started["request"], started["verifier"]).status_code == 200


def test_a_refusal_at_the_provider_returns_denied(
    broker: RunningBroker, oidc_peer: OidcProviderPeer
) -> None:
    """The provider sending error=access_denied to the callback returns the browser with status
    denied and the error; the state is spent and nothing can be confirmed."""
    app = new_app(broker, oidc_peer)
    started = app.started(returnUrl=RETURN_URL)
    state = parse_qs(urlsplit(started["url"]).query)["state"][0]
    back = returned(browse(f"{_callback(port('broker'))}?state={state}&error=access_denied"))
    assert back == {
        "valetkey_request": started["request"],
        "valetkey_status": "denied",
        "valetkey_error": "access_denied",
    }
    assert "Invalid link" in browse(consent_at_peer(oidc_peer, started["url"], "alice")).text
    assert error_code(app.confirm(started["request"], started["verifier"])) == "invalid_request"
    assert error_code(app.user_token()) == "user_authorization_required"


# -- 3. lifetimes and expiry ------------------------------------------------------------


def _expire(broker: RunningBroker, request: str, seconds: int = 1) -> None:
    """Move a pending authorization's expiry into the past, in the broker's SQLite file."""
    engine = sa.create_engine(f"sqlite:///{broker.data_dir / 'valetkey.db'}")
    try:
        with engine.begin() as connection:
            changed = connection.execute(
                sa.update(tables.Authorization)
                .where(tables.Authorization.id == request)
                .values(expires_at=datetime.now(UTC) - timedelta(seconds=seconds))
            )
            assert changed.rowcount == 1
    finally:
        engine.dispose()


def test_request_lifetime_bounds_and_an_expired_callback(
    broker: RunningBroker, oidc_peer: OidcProviderPeer
) -> None:
    """expiresInMs below 30 s or above 1 h is invalid_request; consent finished after the request
    expired sends the browser back with status expired, and nothing can be confirmed."""
    app = new_app(broker, oidc_peer)
    for ms in (29_999, 3_600_001, "30000", True):
        refused = app.authorize(returnUrl=RETURN_URL, expiresInMs=ms)
        assert refused.status_code == 400, refused.text
        assert error_code(refused) == "invalid_request"
        assert refused.json()["error"]["field"] == "expiresInMs"
    now_ms = datetime.now(UTC).timestamp() * 1000
    started = app.started(returnUrl=RETURN_URL, expiresInMs=30_000)
    assert now_ms + 25_000 < started["expiresAt"] < now_ms + 35_000
    assert (
        app.started(returnUrl=RETURN_URL, expiresInMs=3_600_000)["expiresAt"] > now_ms + 3_500_000
    )

    _expire(broker, started["request"])
    back = returned(browse(consent_at_peer(oidc_peer, started["url"], "alice")))
    assert back == {"valetkey_request": started["request"], "valetkey_status": "expired"}
    refused = app.confirm(started["request"], started["verifier"])
    assert (refused.status_code, error_code(refused)) == (400, "invalid_request")
    assert error_code(app.user_token()) == "user_authorization_required"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"returnUrl": "http://example.com/back"}, "returnUrl"),
        ({"returnUrl": "https://user:pw@example.com/back"}, "returnUrl"),
        ({"webhook": "http://127.0.0.1:9/hook"}, "webhook"),
        ({"returnUrl": "http://example.com/back", "deviceCode": True}, "returnUrl"),
        ({"returnUrl": RETURN_URL, "webhook": "http://127.0.0.1:9/hook"}, "webhook"),
        ({}, "returnUrl"),
        ({"returnUrl": RETURN_URL, "surprise": 1}, "surprise"),
    ],
)
def test_start_refuses_bad_destinations(
    broker: RunningBroker, oidc_peer: OidcProviderPeer, body: dict[str, Any], field: str
) -> None:
    """http:// off localhost, credentials in the URL, an http webhook (alone or next to another
    channel), no way to finish, and unknown fields are each invalid_request naming the field."""
    refused = new_app(broker, oidc_peer).authorize(**body)
    assert refused.status_code == 400, refused.text
    assert (error_code(refused), refused.json()["error"]["field"]) == ("invalid_request", field)


def test_local_return_urls_are_accepted(broker: RunningBroker, oidc_peer: OidcProviderPeer) -> None:
    """http:// on localhost, 127.0.0.1 and *.localhost, and any https://, may be returnUrls."""
    app = new_app(broker, oidc_peer)
    for url in (
        "http://localhost:3000/cb",
        "http://app.localhost/cb",
        "https://app.example.com/cb?x=1",
    ):
        assert app.authorize(returnUrl=url).status_code == 200, url


# -- 4. webhook -------------------------------------------------------------------------


def _b64_sha256(body: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(body).digest()).rstrip(b"=").decode()


def test_webhook_flow_with_a_signature_checked_against_the_broker_jwks(
    broker: RunningBroker, oidc_peer: OidcProviderPeer, receiver: WebhookReceiver
) -> None:
    """Consent in webhook mode: the app gets a signed confirmation_required event naming the
    provider account; the signature verifies with the broker's public keys; confirm makes the grant."""
    app = new_app(broker, oidc_peer)
    hook = f"{receiver.url}/hooks/{secrets.token_hex(4)}"
    started = app.started(webhook=hook)
    seen = len(receiver.deliveries)
    page = browse(consent_at_peer(oidc_peer, started["url"], "alice"))
    assert page.status_code == 200, page.text
    assert "Consent received" in page.text
    delivery = receiver.wait(seen + 1)[seen]
    assert delivery.path == urlsplit(hook).path

    event = json.loads(delivery.body)
    assert event["type"] == "authorization.confirmation_required"
    assert (event["request"], event["user"], event["status"]) == (
        started["request"],
        "alice",
        "confirming",
    )
    assert event["providerSubject"] == "alice"
    assert started["verifier"] not in delivery.body.decode()

    jwks = browse(f"{broker.url}/.well-known/jwks.json").json()
    token = jwt.decode(
        delivery.headers["valetkey-signature"], KeySet.import_key_set(jwks), algorithms=["ES256"]
    )
    claims = token.claims
    assert claims["aud"] == hook
    assert claims["iss"] == broker.url
    assert claims["body_sha256"] == _b64_sha256(delivery.body)
    assert claims["event"] == "authorization.confirmation_required"
    now = datetime.now(UTC).timestamp()
    assert claims["iat"] - 60 <= now < claims["exp"] <= now + 301
    jwt.JWTClaimsRegistry(aud={"essential": True, "value": hook}).validate(claims)

    assert error_code(app.user_token()) == "user_authorization_required"
    assert app.confirm(started["request"], started["verifier"]).status_code == 200
    issued = app.user_token()
    assert issued.status_code == 200, issued.text
    assert introspect(oidc_peer, issued.json()["token"])["sub"] == "alice"


def test_a_refused_consent_is_reported_to_the_webhook(
    broker: RunningBroker, oidc_peer: OidcProviderPeer, receiver: WebhookReceiver
) -> None:
    """The provider answering access_denied at the callback reaches the app as authorization.failed."""
    app = new_app(broker, oidc_peer)
    hook = f"{receiver.url}/hooks/denied"
    started = app.started(webhook=hook)
    state = parse_qs(urlsplit(started["url"]).query)["state"][0]
    seen = len(receiver.deliveries)
    page = browse(f"{_callback(port('broker'))}?state={state}&error=access_denied")
    assert page.status_code == 400
    event = json.loads(receiver.wait(seen + 1)[seen].body)
    assert (event["type"], event["status"], event["error"]) == (
        "authorization.failed",
        "denied",
        "access_denied",
    )
    assert "providerSubject" not in event


def _expire_grant_access_token(broker: RunningBroker, user: str) -> None:
    """Make the broker's stored access token for ``user`` look expired (re-encrypted in place),
    so the next request must refresh; the provider's own tokens are untouched."""
    engine = sa.create_engine(f"sqlite:///{broker.data_dir / 'valetkey.db'}")
    try:
        with engine.begin() as connection:
            grant_id, payload = connection.execute(
                sa.select(tables.Grant.id, tables.Grant.payload).where(
                    tables.Grant.subject_id == user
                )
            ).one()
            keyring = broker.broker.keyring
            data = keyring.decrypt_json(payload, aad=grant_aad(grant_id))
            data["expiresAt"] = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
            connection.execute(
                sa.update(tables.Grant)
                .where(tables.Grant.id == grant_id)
                .values(payload=keyring.encrypt_json(data, aad=grant_aad(grant_id)))
            )
            # The shared copy the exchange keeps of that access token goes too.
            connection.execute(sa.delete(tables.CachedToken))
    finally:
        engine.dispose()


def test_a_failed_refresh_is_reported_to_the_webhook(
    broker: RunningBroker, oidc_peer: OidcProviderPeer, receiver: WebhookReceiver
) -> None:
    """When the provider refuses the stored refresh token, the app's webhook receives a signed
    grant.failed event naming the user and how to restart consent, and get_token says so."""
    user = f"u{secrets.token_hex(3)}"
    app = new_app(broker, oidc_peer)
    hook = f"{receiver.url}/hooks/grant-{user}"
    started = app.started(user, webhook=hook)
    seen = len(receiver.deliveries)
    browse(consent_at_peer(oidc_peer, started["url"], user))
    receiver.wait(seen + 1)
    assert app.confirm(started["request"], started["verifier"]).status_code == 200
    assert app.user_token(user).status_code == 200
    held = _grant_tokens(broker, user)
    revoked = httpx2.post(
        oidc_peer.revocation_url,
        data={"token": held["refreshToken"], "token_type_hint": "refresh_token"},
        auth=("web-app", WEB_SECRET),
    )
    assert revoked.status_code == 200
    _expire_grant_access_token(broker, user)
    broker.broker.exchange._tokens.clear()  # the in-memory copy of the old access token too
    seen = len(receiver.deliveries)
    refused = app.user_token(user)
    assert error_code(refused) == "user_authorization_required"
    assert refused.json()["error"]["code"] == "no_token"  # the official clients' NoValidTokenError
    assert refused.json()["error"]["reason"] == "grant_failed"
    delivery = receiver.wait(seen + 1)[seen]
    event = json.loads(delivery.body)
    assert (event["type"], event["user"], event["error"]) == ("grant.failed", user, "invalid_grant")
    assert event["authorizeUrl"] == f"/v1/connect/authorize/{app.uid}"
    jwks = browse(f"{broker.url}/.well-known/jwks.json").json()
    claims = jwt.decode(
        delivery.headers["valetkey-signature"], KeySet.import_key_set(jwks), algorithms=["ES256"]
    ).claims
    assert (claims["aud"], claims["event"]) == (hook, "grant.failed")


def _grant_tokens(broker: RunningBroker, user: str) -> dict[str, Any]:
    engine = sa.create_engine(f"sqlite:///{broker.data_dir / 'valetkey.db'}")
    try:
        with engine.connect() as connection:
            grant_id, payload = connection.execute(
                sa.select(tables.Grant.id, tables.Grant.payload).where(
                    tables.Grant.subject_id == user
                )
            ).one()
    finally:
        engine.dispose()
    tokens: dict[str, Any] = broker.broker.keyring.decrypt_json(payload, aad=grant_aad(grant_id))
    return tokens


# -- 5. device flow at the provider -----------------------------------------------------


def _abort_device(peer: OidcProviderPeer, user_code: str) -> None:
    """The person presses Abort on the peer's device confirmation page."""
    with httpx2.Client(follow_redirects=False) as browser:
        page = browser.get(f"{peer.issuer}/device")
        xsrf = re.search(r'name="xsrf" value="([^"]+)"', page.text)
        assert xsrf is not None
        aborted = browser.post(
            f"{peer.issuer}/device",
            data={"xsrf": xsrf.group(1), "user_code": user_code, "abort": "yes"},
        )
    assert aborted.status_code == 200, aborted.text[:300]
    assert "The Sign-in request was interrupted" in aborted.text


async def test_device_flow_fronting_the_provider(
    broker: RunningBroker, oidc_peer: OidcProviderPeer
) -> None:
    """deviceCode gives the peer's user code and page; get_token is AuthorizationPending (and
    does not poll the peer faster than the interval) until the person approves, then a token."""
    app = new_app(broker, oidc_peer)
    started = app.started(deviceCode=True)
    assert started["url"].startswith(f"{oidc_peer.issuer}/device")
    assert started["deviceCode"]
    assert started["interval"] == 5
    async with app.sdk() as sdk:
        polls = oidc_peer.stats()["token"].get(DEVICE_CODE_GRANT, 0)
        with pytest.raises(valetkey.AuthorizationPending) as pending:
            await sdk.get_token(app.uid, user="alice")
        assert pending.value.details["request"] == started["request"]
        with pytest.raises(valetkey.AuthorizationPending):
            await sdk.get_token(app.uid, user="alice")
        assert oidc_peer.stats()["token"].get(DEVICE_CODE_GRANT, 0) == polls + 1

        oidc_peer.approve_device(started["deviceCode"], login="alice")
        await asyncio.sleep(pending.value.details["interval"])
        token = await sdk.get_token(app.uid, user="alice")
    info = introspect(oidc_peer, token)
    assert (info["active"], info["sub"]) == (True, "alice")
    assert (
        app.confirm(started["request"], started["verifier"]).status_code == 400
    )  # nothing to confirm


async def test_a_device_flow_the_person_aborts_is_access_denied(
    broker: RunningBroker, oidc_peer: OidcProviderPeer
) -> None:
    """Abort on the peer's device page: get_token raises AccessDenied, and keeps saying so."""
    app = new_app(broker, oidc_peer)
    started = app.started(deviceCode=True)
    _abort_device(oidc_peer, started["deviceCode"])
    async with app.sdk() as sdk:
        for _ in range(2):
            with pytest.raises(valetkey.AccessDenied):
                await sdk.get_token(app.uid, user="alice")


async def test_an_expired_device_flow_is_expired_token(
    broker: RunningBroker, oidc_peer: OidcProviderPeer
) -> None:
    """A device authorization past its expiry: get_token raises AuthorizationExpired (expired_token)."""
    app = new_app(broker, oidc_peer)
    started = app.started(deviceCode=True)
    _expire(broker, started["request"])
    async with app.sdk() as sdk:
        with pytest.raises(valetkey.AuthorizationExpired):
            await sdk.get_token(app.uid, user="alice")
        app.started(deviceCode=True)  # a fresh start supersedes it
        with pytest.raises(valetkey.AuthorizationPending):
            await sdk.get_token(app.uid, user="alice")


# -- 6. the broker's own device page ----------------------------------------------------


async def test_device_flow_through_the_broker_device_page(
    broker: RunningBroker, plain_peer: OidcProviderPeer
) -> None:
    """A provider without a device endpoint: the code leads to the broker's /device page, which
    sends the person through the peer's browser flow; the grant is made without a confirm."""
    assert "device_authorization_endpoint" not in plain_peer.metadata()
    app = new_app(broker, plain_peer)
    started = app.started(deviceCode=True)
    code = started["deviceCode"]
    assert re.fullmatch(r"[B-DF-HJ-NP-TV-XZ]{4}-[B-DF-HJ-NP-TV-XZ]{4}", code)
    assert started["url"] == f"{broker.url}/device?user_code={code}"
    async with app.sdk() as sdk:
        with pytest.raises(valetkey.AuthorizationPending):
            await sdk.get_token(app.uid, user="alice")

        form = browse(started["url"])
        assert form.status_code == 200
        assert f'value="{code}"' in form.text
        typed = code.lower().replace("-", " ")  # people type codes loosely
        sent = submit_code(broker, typed)
        assert sent.status_code == 303, sent.text
        to_peer = urljoin(broker.url, sent.headers["location"])
        assert to_peer.startswith(plain_peer.authorization_url)
        done = browse(consent_at_peer(plain_peer, to_peer, "alice"))
        assert done.status_code == 200, done.text
        assert "Done" in done.text

        token = await sdk.get_token(app.uid, user="alice")
    assert introspect(plain_peer, token)["sub"] == "alice"
    reused = submit_code(broker, code)
    assert reused.status_code == 400
    assert "not valid" in reused.text


def test_the_device_page_refuses_an_unknown_code(broker: RunningBroker) -> None:
    """A code the broker never issued is an error on the form, not a redirect; what the page
    echoes back is escaped."""
    refused = submit_code(broker, "BCDF-GHJK")
    assert refused.status_code == 400
    assert 'name="user_code"' in refused.text
    echoed = browse(f"{broker.url}/device?user_code=%22%3E%3Cscript%3E")
    assert "<script>" not in echoed.text
    assert "&#34;&gt;&lt;script&gt;" in echoed.text or "&quot;&gt;&lt;script&gt;" in echoed.text
    assert echoed.headers["x-frame-options"] == "DENY"


async def test_a_refusal_on_the_device_page_flow_is_access_denied(
    broker: RunningBroker, plain_peer: OidcProviderPeer
) -> None:
    """The person refuses at the provider after the broker's device page: get_token raises AccessDenied."""
    app = new_app(broker, plain_peer)
    started = app.started(deviceCode=True)
    sent = submit_code(broker, started["deviceCode"])
    state = parse_qs(urlsplit(sent.headers["location"]).query)["state"][0]
    page = browse(f"{_callback(port('broker'))}?state={state}&error=access_denied")
    assert page.status_code == 400
    assert "Consent was not given" in page.text
    async with app.sdk() as sdk:
        with pytest.raises(valetkey.AccessDenied):
            await sdk.get_token(app.uid, user="alice")


# -- 7. revocation by the user ----------------------------------------------------------


async def test_revoking_my_tokens_revokes_at_the_provider(
    broker: RunningBroker, oidc_peer: OidcProviderPeer
) -> None:
    """revoke_tokens(user=alice) revokes the issued access token and the grant's refresh token at
    the peer (RFC 7009), counts them truthfully, and alice must consent again."""
    app = new_app(broker, oidc_peer)
    started = run_callback_flow(app, oidc_peer)
    async with app.sdk() as sdk:
        access = await sdk.get_token(app.uid, user="alice")
        refresh = _held_refresh_token(broker, started["request"])
        assert introspect(oidc_peer, refresh)["active"] is True
        revocations = oidc_peer.stats()["revocation"]
        counts = await sdk.revoke_tokens(app.uid, user="alice")
        assert (counts.tokens_found, counts.deleted) == (2, 2)
        assert (counts.provider_revoked, counts.provider_skipped, counts.provider_failed) == (
            2,
            0,
            0,
        )
        assert oidc_peer.stats()["revocation"] == revocations + 2
        assert introspect(oidc_peer, access) == {"active": False}
        assert introspect(oidc_peer, refresh) == {"active": False}
        with pytest.raises(valetkey.UserAuthorizationRequired):
            await sdk.get_token(app.uid, user="alice")
        again = await sdk.revoke_tokens(app.uid, user="alice")
    assert (again.tokens_found, again.deleted, again.provider_revoked) == (0, 0, 0)


def _held_refresh_token(broker: RunningBroker, request: str) -> str:
    """The refresh token the broker holds in the grant an authorization made (read from its
    store with its key ring, so the test can ask the peer about it)."""
    engine = sa.create_engine(f"sqlite:///{broker.data_dir / 'valetkey.db'}")
    try:
        with engine.connect() as connection:
            auth = tables.Authorization.__table__
            grants = tables.Grant.__table__
            origin = connection.execute(sa.select(auth).where(auth.c.id == request)).one()
            row = connection.execute(
                sa.select(grants).where(
                    grants.c.connector_id == origin.connector_id,
                    grants.c.project_id == origin.project_id,
                    grants.c.subject_id == origin.user_id,
                )
            ).one()
    finally:
        engine.dispose()
    data = broker.broker.keyring.decrypt_json(row.payload, aad=grant_aad(row.id))
    token: str = data["refreshToken"]
    return token


# -- 8. import --------------------------------------------------------------------------


async def _tokens_from_the_peer(peer: OidcProviderPeer, login: str) -> Any:
    """A token pair obtained from the peer directly, by the app's own authorization code flow."""
    provider = OAuthProvider()
    connector = connector_for(
        provider,
        {
            "issuer": peer.issuer,
            "clientId": "web-app",
            "clientSecret": WEB_SECRET,
            "grants": ["authorization_code"],
            "scopes": ["openid", "read"],
        },
        name="direct",
    )
    async with httpx2.AsyncClient() as http:
        ctx = TestContext(http, SystemClock())
        start = await provider.start_authorization(
            ctx, connector, redirect_uri=DIRECT_REDIRECT, state="s", scopes=("openid", "read")
        )
        code = parse_qs(urlsplit(peer.authorize(start.url, login=login)).query)["code"][0]
        return await provider.exchange_code(
            ctx,
            connector,
            code=code,
            redirect_uri=DIRECT_REDIRECT,
            code_verifier=start.code_verifier,
            nonce=start.nonce,
        )


async def test_import_makes_a_grant_and_malformed_imports_store_nothing(
    broker: RunningBroker, oidc_peer: OidcProviderPeer
) -> None:
    """An imported pair is served by get_token for that user; a missing accessToken, a bad
    expiresAt, an app subject or an unknown field is invalid_request and stores nothing."""
    app = new_app(broker, oidc_peer)
    pair = await _tokens_from_the_peer(oidc_peer, "dave")
    path = f"/v1/connect/token/{app.uid}/import"
    expires_ms = int(pair.expires_at.timestamp() * 1000)
    good = {
        "subject": {"type": "user", "id": "dave"},
        "accessToken": pair.access_token,
        "expiresAt": expires_ms,
        "refreshToken": pair.refresh_token,
    }
    malformed: list[tuple[dict[str, Any], str]] = [
        ({k: v for k, v in good.items() if k != "accessToken"}, "accessToken"),
        ({**good, "expiresAt": "tomorrow"}, "expiresAt"),
        ({**good, "expiresAt": -5}, "expiresAt"),
        ({**good, "subject": {"type": "app"}}, "subject.type"),
        ({**good, "providerSubject": "dave"}, "providerSubject"),
    ]
    for body, field in malformed:
        refused = app.call(path, body)
        assert refused.status_code == 400, (field, refused.text)
        assert (error_code(refused), refused.json()["error"].get("field")) == (
            "invalid_request",
            field,
        )
        assert error_code(app.user_token("dave")) == "user_authorization_required"
        assert pair.access_token not in refused.text

    imported = app.call(path, good)
    assert imported.status_code == 201, imported.text
    body = imported.json()
    assert body["subject"] == {"type": "user", "id": "dave"}
    assert (body["expiresAt"], body["refreshable"]) == (expires_ms, True)
    assert pair.access_token not in imported.text
    assert pair.refresh_token not in imported.text
    served = app.user_token("dave")
    assert served.status_code == 200, served.text
    assert served.json()["token"] == pair.access_token
    assert introspect(oidc_peer, served.json()["token"])["sub"] == "dave"


async def test_a_grant_with_fewer_scopes_than_the_ceiling_is_served(
    broker: RunningBroker, oidc_peer: OidcProviderPeer
) -> None:
    """get_token naming no scopes serves a grant that holds fewer than the connector's ceiling."""
    app = new_app(broker, oidc_peer)
    pair = await _tokens_from_the_peer(oidc_peer, "erin")
    imported = app.call(
        f"/v1/connect/token/{app.uid}/import",
        {
            "subject": {"type": "user", "id": "erin"},
            "accessToken": pair.access_token,
            "expiresIn": 300,
            "scopes": ["openid", "read"],
        },
    )
    assert imported.status_code == 201, imported.text
    served = app.user_token("erin")
    assert served.status_code == 200, served.text


# -- 9. jwt-bearer and token subjects ---------------------------------------------------


def test_jwt_bearer_and_token_subjects_through_the_exchange(
    broker: RunningBroker, oidc_peer: OidcProviderPeer
) -> None:
    """A jwt-bearer subject gets a token for its sub (RFC 7523), a token subject exchanges alice's
    token for one acting for alice (RFC 8693); the peer confirms both."""
    signer = new_app(
        broker, oidc_peer, data=_key_app_config(oidc_peer, ["jwt_bearer"]), subjects=("jwt-bearer",)
    )
    minted = signer.token({"type": "jwt-bearer", "sub": "carol"})
    assert minted.status_code == 200, minted.text
    info = introspect(oidc_peer, minted.json()["token"])
    assert (info["active"], info["sub"], info["client_id"]) == (True, "carol", "key-app")

    user_app = new_app(broker, oidc_peer)
    run_callback_flow(user_app, oidc_peer)
    alice_token = user_app.user_token().json()["token"]
    exchanger = new_app(
        broker,
        oidc_peer,
        data={
            "issuer": oidc_peer.issuer,
            "clientId": "exchanger",
            "clientSecret": EXCHANGER_SECRET,
            "grants": ["token_exchange"],
            "scopes": ["read", "write"],
        },
        subjects=("token",),
    )
    exchanged = exchanger.call(
        f"/v1/connect/token/{exchanger.uid}",
        {"subject": {"type": "token", "token": alice_token}, "scopes": ["read"]},
    )
    assert exchanged.status_code == 200, exchanged.text
    assert alice_token not in exchanged.text.replace(exchanged.json()["token"], "")
    info = introspect(oidc_peer, exchanged.json()["token"])
    assert (info["active"], info["sub"], info["client_id"], info["scope"]) == (
        True,
        "alice",
        "exchanger",
        "read",
    )


def _key_app_config(peer: OidcProviderPeer, grants: list[str]) -> dict[str, Any]:
    return {
        "issuer": peer.issuer,
        "clientId": "key-app",
        "authMethod": "private_key_jwt",
        "privateKey": KEY_APP.key.as_pem(private=True).decode(),
        "privateKeyId": "key-1",
        "grants": grants,
        "scopes": ["read", "write"],
    }


def test_subjects_a_connector_or_link_does_not_allow_are_refused(
    broker: RunningBroker, oidc_peer: OidcProviderPeer
) -> None:
    """A link without jwt-bearer is subject_not_allowed; linking a subject the connector's grants
    cannot serve is refused; a connector whose grant was removed since is unsupported_operation;
    consent for a non-user subject is invalid_request."""
    narrow = new_app(broker, oidc_peer)
    refused = narrow.token({"type": "jwt-bearer", "sub": "carol"})
    assert refused.status_code == 403, refused.text
    assert error_code(refused) == "subject_not_allowed"
    not_user = narrow.call(
        f"/v1/connect/authorize/{narrow.uid}", {"subject": {"type": "app"}, "returnUrl": RETURN_URL}
    )
    assert (not_user.status_code, error_code(not_user)) == (400, "invalid_request")

    with pytest.raises(AssertionError, match="cannot issue jwt-bearer"):
        new_app(broker, oidc_peer, subjects=("user", "jwt-bearer"))

    signer = new_app(
        broker, oidc_peer, data=_key_app_config(oidc_peer, ["jwt_bearer"]), subjects=("jwt-bearer",)
    )
    name = signer.uid.split("/")[1]
    with broker.admin() as admin:
        patched = admin.patch(
            f"/v1/connectors/oauth/{name}",
            json={"data": _key_app_config(oidc_peer, ["client_credentials"])},
        )
    assert patched.status_code == 200, patched.text
    unsupported = signer.token({"type": "jwt-bearer", "sub": "carol"})
    assert unsupported.status_code == 400, unsupported.text
    assert error_code(unsupported) == "unsupported_operation"


# -- 10. the official vercel-connect package --------------------------------------------


async def test_vercel_connect_start_authorization_and_user_get_token(
    broker: RunningBroker, oidc_peer: OidcProviderPeer
) -> None:
    """The unmodified vercel-connect package starts consent (url, request, verifier); after the
    person consents and the app confirms, its get_token for the user subject returns the token."""
    app = new_app(broker, oidc_peer)
    options = ConnectOptions(vercel_token=app.identity)
    async with session(service_options=[ConnectServiceOptions(base_url=broker.url)]):
        started = await start_authorization(
            app.uid,
            subject=ConnectUserTokenSubject(id="alice"),
            return_url=RETURN_URL,
            expires_in=timedelta(minutes=5),
            options=options,
        )
        assert started.url.startswith(oidc_peer.authorization_url)
        assert started.request
        assert started.verifier
        back = returned(browse(consent_at_peer(oidc_peer, started.url, "alice")))
        assert back["valetkey_request"] == started.request
        assert app.confirm(started.request, started.verifier).status_code == 200
        token = await get_token(
            app.uid, subject=ConnectUserTokenSubject(id="alice"), options=options
        )
    assert introspect(oidc_peer, token)["sub"] == "alice"


async def test_vercel_connect_app_that_never_confirms_works_when_the_link_waives_it(
    broker: RunningBroker, oidc_peer: OidcProviderPeer
) -> None:
    """On a link attached with confirmConsent false, an app using only the package's own calls
    (start_authorization, then get_token) gets the user token without a confirm step."""
    app = new_app(broker, oidc_peer, link={"confirmConsent": False})
    options = ConnectOptions(vercel_token=app.identity)
    async with session(service_options=[ConnectServiceOptions(base_url=broker.url)]):
        started = await start_authorization(
            app.uid,
            subject=ConnectUserTokenSubject(id="alice"),
            return_url=RETURN_URL,
            options=options,
        )
        back = returned(browse(consent_at_peer(oidc_peer, started.url, "alice")))
        assert back["valetkey_status"] == "completed"
        token = await get_token(
            app.uid, subject=ConnectUserTokenSubject(id="alice"), options=options
        )
    assert introspect(oidc_peer, token)["sub"] == "alice"


async def test_vercel_connect_device_code_pending_then_approved(
    broker: RunningBroker, oidc_peer: OidcProviderPeer
) -> None:
    """The package's device_code start returns the peer's user code; its get_token raises its own
    AuthorizationPendingError while a code waits, and returns the token once the person approved."""
    app = new_app(broker, oidc_peer)
    options = ConnectOptions(vercel_token=app.identity, force_refresh=True)
    async with session(service_options=[ConnectServiceOptions(base_url=broker.url)]):
        waiting = await start_authorization(
            app.uid, subject=ConnectUserTokenSubject(id="bob"), device_code=True, options=options
        )
        assert waiting.device_code
        with pytest.raises(AuthorizationPendingError):
            await get_token(app.uid, subject=ConnectUserTokenSubject(id="bob"), options=options)
        started = await start_authorization(
            app.uid, subject=ConnectUserTokenSubject(id="alice"), device_code=True, options=options
        )
        assert started.device_code
        assert started.device_code != waiting.device_code
        oidc_peer.approve_device(started.device_code, login="alice")  # before the first poll
        token = await get_token(
            app.uid, subject=ConnectUserTokenSubject(id="alice"), options=options
        )
    assert introspect(oidc_peer, token)["sub"] == "alice"


def test_maintenance_expires_abandoned_requests_and_revokes_held_tokens(
    broker: RunningBroker, oidc_peer: OidcProviderPeer
) -> None:
    """A consent never confirmed is ended by the broker's maintenance round, and the tokens it
    held are revoked at the provider; a confirm afterwards is refused."""
    app = new_app(broker, oidc_peer)
    started = app.started(returnUrl=RETURN_URL)
    returned(browse(consent_at_peer(oidc_peer, started["url"], "alice")))
    held = _held_for_confirmation(broker, started["request"])
    assert introspect(oidc_peer, held["refreshToken"])["active"] is True
    _expire(broker, started["request"])
    broker.run(broker.broker.maintain_once())  # the grace period has not passed: kept
    assert introspect(oidc_peer, held["refreshToken"])["active"] is True
    _expire(broker, started["request"], seconds=3600)
    broker.run(broker.broker.maintain_once())
    assert introspect(oidc_peer, held["refreshToken"]) == {"active": False}
    assert error_code(app.confirm(started["request"], started["verifier"])) == "invalid_request"
