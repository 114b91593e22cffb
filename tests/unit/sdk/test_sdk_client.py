"""The clients' requests and answers on the Connect wire format, and their error mapping."""

from __future__ import annotations

import socket
from datetime import UTC, datetime

import httpx2
import pytest
from sdk_helpers import NOW, FakeBroker, TickingClock, serve

from valetkey.errors import (
    BrokerUnavailable,
    Forbidden,
    IdentityError,
    InvalidBrokerResponse,
    InvalidGrant,
    InvalidRequest,
    NotFound,
    UserAuthorizationRequired,
    ValetkeyError,
)
from valetkey.identity.errors import TokenExpired
from valetkey.sdk.client import AsyncClient, Client
from valetkey.sdk.types import Subject


def test_token_request_shape(client: Client, broker: FakeBroker) -> None:
    """get_token POSTs the encoded uid with the bearer identity and a normalized body."""
    token = client.get_token(
        "slack/mybot",
        scopes=["chat:write", "channels:read", "chat:write"],
        installation_id="T123",
        resources=["https://b.example", "https://a.example"],
        audience="https://api.example",
    )
    assert token == "tok-1"
    (seen,) = broker.seen
    assert seen.method == "POST"
    assert seen.path == "/v1/connect/token/slack%2Fmybot"
    assert seen.authorization == "Bearer id-alpha"
    assert seen.body == {
        "subject": {"type": "app"},
        "scopes": ["channels:read", "chat:write"],
        "installationId": "T123",
        "resources": ["https://a.example", "https://b.example"],
        "audience": "https://api.example",
    }


def test_minimal_body_is_app_subject_only(client: Client, broker: FakeBroker) -> None:
    """Without options the body names only the app subject; scopes ['*'] are left out."""
    client.get_token("slack/mybot", scopes=["*"])
    assert broker.seen[0].body == {"subject": {"type": "app"}}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"user": "alice"},
        {"subject": {"type": "user", "id": "alice"}},
        {"subject": Subject.user("alice")},
    ],
)
def test_user_subject_forms(client: Client, broker: FakeBroker, kwargs: dict[str, object]) -> None:
    """user=, a user mapping and Subject.user all send the same user subject."""
    client.get_token("github/bot", **kwargs)  # type: ignore[arg-type]
    assert broker.seen[0].body == {"subject": {"type": "user", "id": "alice"}}


def test_subject_and_user_together_are_refused(client: Client, broker: FakeBroker) -> None:
    """Naming both subject= and user= is an InvalidRequest, sent nowhere."""
    with pytest.raises(InvalidRequest):
        client.get_token("github/bot", subject="app", user="alice")
    with pytest.raises(InvalidRequest):
        client.get_token("github/bot", subject={"type": "user"})
    with pytest.raises(InvalidRequest):
        client.get_token("", subject="app")
    assert broker.seen == []


def test_token_response_fields(client: Client, clock: TickingClock) -> None:
    """The answer becomes a TokenResponse with an aware expiry and a hidden token."""
    response = client.get_token_response("slack/mybot")
    assert response.token == "tok-1"
    assert response.expires_at == datetime.fromtimestamp(NOW + 3600, UTC)
    assert response.token_id == "tid-1"
    assert response.connector.uid == "slack/mybot"
    assert response.connector.id == "con-slack/mybot"
    assert response.connector.service == "slack"
    assert response.metadata == {"subject": {"type": "app"}}
    assert "tok-1" not in repr(response)


def test_never_expiring_token(broker: FakeBroker, clock: TickingClock) -> None:
    """expiresAt null means no expiry: expires_at None, and the entry is served indefinitely."""
    broker.lifetime = None
    with Client(identity="i", clock=clock, transport=broker.transport()) as client:
        assert client.get_token_response("api-key/search").expires_at is None
        clock.advance(10 * 365 * 86400)
        client.get_token("api-key/search")
    assert len(broker.token_calls) == 1


def test_start_authorization(client: Client, broker: FakeBroker) -> None:
    """start_authorization POSTs the user subject and options and parses the answer."""
    answer = client.start_authorization(
        "oauth/acme",
        user="alice",
        scopes=["read"],
        return_url="https://app.example/done",
        webhook="https://app.example/hook",
        device_code=True,
    )
    (seen,) = broker.seen
    assert seen.path == "/v1/connect/authorize/oauth%2Facme"
    assert seen.body == {
        "subject": {"type": "user", "id": "alice"},
        "scopes": ["read"],
        "returnUrl": "https://app.example/done",
        "webhook": "https://app.example/hook",
        "deviceCode": True,
    }
    assert answer.url == "https://broker.example/consent/abc"
    assert answer.device_code == "dev-secret"
    assert answer.connector is not None
    assert answer.connector.uid == "oauth/acme"
    assert "ver-secret" not in repr(answer)
    assert "dev-secret" not in repr(answer)


def test_get_connector(client: Client, broker: FakeBroker) -> None:
    """get_connector GETs the metadata and keeps unknown fields in extra."""
    meta = client.get_connector("slack/mybot")
    assert broker.seen[0].method == "GET"
    assert broker.seen[0].path == "/v1/connect/connectors/slack%2Fmybot"
    assert meta.uid == "slack/mybot"
    assert meta.data == {"header": "x-api-key"}
    assert meta.capabilities == {"subjects": ["app"]}
    assert meta.created_at == datetime.fromtimestamp(1_700_000_000, UTC)
    assert meta.extra == {"newField": 1}


def test_revoke_request_shapes(client: Client, broker: FakeBroker) -> None:
    """revoke_tokens sends the subject it is given, or no subject with all_tokens."""
    result = client.revoke_tokens("slack/mybot", user="alice")
    client.revoke_tokens("slack/mybot", subject="app")
    client.revoke_tokens("slack/mybot", all_tokens=True)
    assert [s.method for s in broker.seen] == ["DELETE"] * 3
    assert broker.seen[0].path == "/v1/connect/connectors/slack%2Fmybot/tokens"
    assert [s.body for s in broker.seen] == [
        {"subject": {"type": "user", "id": "alice"}},
        {"subject": {"type": "app"}},
        {},
    ]
    assert (result.tokens_found, result.deleted, result.provider_revoked) == (2, 2, 1)
    assert (result.provider_skipped, result.provider_failed) == (1, 0)


def test_revoke_needs_an_explicit_target(client: Client, broker: FakeBroker) -> None:
    """Revoking with no subject and no all_tokens, or with both, is refused locally."""
    with pytest.raises(InvalidRequest):
        client.revoke_tokens("slack/mybot")
    with pytest.raises(InvalidRequest):
        client.revoke_tokens("slack/mybot", user="alice", all_tokens=True)
    assert broker.seen == []


def test_error_envelope_maps_to_class(client: Client, broker: FakeBroker) -> None:
    """An error envelope becomes the class its code names, with its details."""
    broker.script.append(
        (403, {"error": {"code": "user_authorization_required", "message": "consent first",
                         "connector": "github/bot", "scopes": ["repo"]}})
    )
    with pytest.raises(UserAuthorizationRequired) as caught:
        client.get_token("github/bot", user="alice")
    assert caught.value.message == "consent first"
    assert caught.value.details == {"connector": "github/bot", "scopes": ["repo"]}


def test_identity_codes_map_to_their_own_classes(client: Client, broker: FakeBroker) -> None:
    """An identity refusal becomes its own class (token_expired: TokenExpired), not just the base."""
    broker.script.append((401, {"error": {"code": "token_expired", "message": "expired"}}))
    with pytest.raises(TokenExpired) as caught:
        client.get_token("slack/mybot")
    assert type(caught.value) is TokenExpired


@pytest.mark.parametrize(
    ("status", "body", "cls", "code"),
    [
        (403, {"error": {"code": "brand_new_refusal", "message": "no"}}, Forbidden,
         "brand_new_refusal"),
        (400, {"error": "invalid_grant", "error_description": "gone"}, InvalidGrant,
         "invalid_grant"),
        (404, b"<html>not here</html>", NotFound, "http_404"),
        (502, b"<html>bad gateway</html>", BrokerUnavailable, "broker_unavailable"),
        (401, {"error": {"code": "token_expired", "message": "expired"}}, IdentityError,
         "token_expired"),
    ],
)
def test_error_fallbacks(
    client: Client,
    broker: FakeBroker,
    status: int,
    body: object,
    cls: type[ValetkeyError],
    code: str,
) -> None:
    """Unknown codes, OAuth bodies and bare HTTP errors still raise typed errors."""
    broker.script.append((status, body))
    with pytest.raises(cls) as caught:
        client.get_token("slack/mybot")
    assert caught.value.code == code


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        [1, 2],
        {"expiresAt": 1, "connector": {"id": "c", "uid": "u", "type": "t"}},
        {"token": "t", "expiresAt": "soon", "connector": {"id": "c", "uid": "u", "type": "t"}},
        {"token": "t", "expiresAt": 1},
    ],
)
def test_malformed_success_is_typed(client: Client, broker: FakeBroker, body: object) -> None:
    """A 200 that is not JSON, or lacks the documented fields, raises InvalidBrokerResponse."""
    broker.script.append((200, body))
    with pytest.raises(InvalidBrokerResponse):
        client.get_token("slack/mybot")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_unreachable_broker_sync() -> None:
    """A refused connection raises BrokerUnavailable, chained to the transport error."""
    url = f"http://127.0.0.1:{_closed_port()}"
    with Client(base_url=url, identity="i") as client, pytest.raises(BrokerUnavailable) as caught:
        client.get_token("slack/mybot")
    assert isinstance(caught.value.__cause__, httpx2.ConnectError)


async def test_unreachable_broker_async() -> None:
    """The async client raises BrokerUnavailable on a refused connection too."""
    async with AsyncClient(base_url=f"http://127.0.0.1:{_closed_port()}", identity="i") as client:
        with pytest.raises(BrokerUnavailable) as caught:
            await client.get_connector("slack/mybot")
    assert isinstance(caught.value.__cause__, httpx2.ConnectError)


def test_over_a_real_socket(broker: FakeBroker) -> None:
    """The sync client works over real HTTP: token, cache hit, revoke, metadata."""
    with serve(broker) as url, Client(base_url=url + "/", identity="id-real") as client:
        assert client.base_url == url
        assert client.get_token("slack/mybot") == "tok-1"
        assert client.get_token("slack/mybot") == "tok-1"
        assert client.revoke_tokens("slack/mybot", subject="app").deleted == 2
        assert client.get_token("slack/mybot") == "tok-3"
        assert client.get_connector("slack/mybot").uid == "slack/mybot"
    assert broker.seen[0].path == "/v1/connect/token/slack%2Fmybot"
    assert broker.seen[0].authorization == "Bearer id-real"


async def test_async_client_over_a_real_socket(broker: FakeBroker) -> None:
    """The async client works over real HTTP, including start_authorization."""
    with serve(broker) as url:
        async with AsyncClient(base_url=url, identity="id-real") as client:
            assert await client.get_token("slack/mybot", user="bob") == "tok-1"
            assert await client.get_token("slack/mybot", user="bob") == "tok-1"
            auth = await client.start_authorization("oauth/acme", user="bob")
            assert auth.url.startswith("https://")
            assert (await client.revoke_tokens("slack/mybot", user="bob")).tokens_found == 2
    assert len(broker.token_calls) == 1


def test_validation_of_config() -> None:
    """A negative validity buffer, a zero cache size or a non-HTTP URL are refused."""
    with pytest.raises(InvalidRequest):
        Client(identity="i", validity_buffer=-1)
    with pytest.raises(InvalidRequest):
        Client(identity="i", cache_size=0)
    with pytest.raises(InvalidRequest):
        Client(identity="i", base_url="ftp://broker")
