"""valetkey.TokenAuth (httpx2) and valetkey.HttpxTokenAuth (httpx): provider tokens on requests.

The broker is the scripted stand-in (sdk_helpers); the "provider" is a MockTransport that
records what it was sent and answers 401 while a token is on its refused list.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field

import httpx
import httpx2
import pytest
from sdk_helpers import FakeBroker, serve

import valetkey
from valetkey.sdk import default
from valetkey.sdk.client import AsyncClient, Client
from valetkey.sdk.httpx_auth import HttpxTokenAuth


@dataclass
class Provider:
    """A provider API stand-in: records (header value, body) and refuses listed tokens with 401."""

    header: str = "authorization"
    refused: set[str] = field(default_factory=set)
    seen: list[tuple[str | None, bytes]] = field(default_factory=list)

    def __call__(self, request: httpx2.Request | httpx.Request) -> httpx2.Response | httpx.Response:
        value = request.headers.get(self.header)
        self.seen.append((value, request.content))
        status = 401 if value in self.refused else 200
        kind = httpx2 if isinstance(request, httpx2.Request) else httpx
        return kind.Response(status, json={"ok": status == 200})


def _client(broker: FakeBroker) -> Client:
    return Client(identity="id-app", transport=broker.transport())


def test_sync_requests_carry_the_cached_token(broker: FakeBroker) -> None:
    provider = Provider()
    with _client(broker) as vk, httpx2.Client(
        auth=valetkey.TokenAuth("slack/mybot", client=vk, scopes=["chat:write"]),
        transport=httpx2.MockTransport(provider),
    ) as http:
        assert http.get("https://slack.example/api/a").status_code == 200
        assert http.post("https://slack.example/api/b", json={"x": 1}).status_code == 200
    assert [v for v, _ in provider.seen] == ["Bearer tok-1", "Bearer tok-1"]
    assert len(broker.token_calls) == 1  # the second request was a cache hit
    assert broker.token_calls[0].body["scopes"] == ["chat:write"]


def test_a_401_is_retried_once_with_a_fresh_token_and_the_same_body(broker: FakeBroker) -> None:
    provider = Provider(refused={"Bearer tok-1"})
    with _client(broker) as vk, httpx2.Client(
        auth=valetkey.TokenAuth("slack/mybot", client=vk), transport=httpx2.MockTransport(provider)
    ) as http:
        response = http.post("https://slack.example/api", content=b"payload")
    assert response.status_code == 200
    assert provider.seen == [("Bearer tok-1", b"payload"), ("Bearer tok-2", b"payload")]
    assert len(broker.token_calls) == 2


def test_a_second_401_is_returned_not_retried_again(broker: FakeBroker) -> None:
    provider = Provider(refused={"Bearer tok-1", "Bearer tok-2"})
    with _client(broker) as vk, httpx2.Client(
        auth=valetkey.TokenAuth("slack/mybot", client=vk), transport=httpx2.MockTransport(provider)
    ) as http:
        assert http.get("https://slack.example/api").status_code == 401
    assert len(provider.seen) == 2
    assert len(broker.token_calls) == 2


def test_retry_can_be_turned_off(broker: FakeBroker) -> None:
    provider = Provider(refused={"Bearer tok-1"})
    auth = valetkey.TokenAuth("slack/mybot", client=_client(broker), retry_on_401=False)
    with httpx2.Client(auth=auth, transport=httpx2.MockTransport(provider)) as http:
        assert http.get("https://slack.example/api").status_code == 401
    assert len(provider.seen) == 1


@pytest.mark.parametrize(("header", "scheme", "expected"), [
    ("x-api-key", "", "tok-1"),
    ("authorization", "token", "token tok-1"),
    ("Private-Token", "Bearer", "Bearer tok-1"),
])
def test_header_and_scheme(broker: FakeBroker, header: str, scheme: str, expected: str) -> None:
    provider = Provider(header=header)
    auth = valetkey.TokenAuth("api-key/search", client=_client(broker), header=header, scheme=scheme)
    with httpx2.Client(auth=auth, transport=httpx2.MockTransport(provider)) as http:
        http.get("https://search.example/q")
    assert provider.seen[0][0] == expected


async def test_async_requests_and_retry(broker: FakeBroker) -> None:
    provider = Provider(refused={"Bearer tok-1"})
    async with AsyncClient(identity="id-app", transport=broker.async_transport()) as vk:
        auth = valetkey.TokenAuth("github/deploy-bot", client=vk, user="alice")
        async with httpx2.AsyncClient(auth=auth, transport=httpx2.MockTransport(provider)) as http:
            assert (await http.get("https://api.github.example/user")).status_code == 200
            assert (await http.get("https://api.github.example/user")).status_code == 200
    assert [v for v, _ in provider.seen] == ["Bearer tok-1", "Bearer tok-2", "Bearer tok-2"]
    assert broker.token_calls[0].body["subject"] == {"type": "user", "id": "alice"}


def test_the_wrong_kind_of_client_is_a_clear_error(broker: FakeBroker) -> None:
    sync_auth = valetkey.TokenAuth("slack/mybot", client=AsyncClient(identity="i"))
    with httpx2.Client(auth=sync_auth, transport=httpx2.MockTransport(Provider())) as http, \
            pytest.raises(TypeError, match=r"pass a valetkey\.Client"):
        http.get("https://slack.example/api")


async def test_the_wrong_kind_of_client_is_a_clear_error_async(broker: FakeBroker) -> None:
    auth = valetkey.TokenAuth("slack/mybot", client=_client(broker))
    async with httpx2.AsyncClient(auth=auth, transport=httpx2.MockTransport(Provider())) as http:
        with pytest.raises(TypeError, match=r"pass a valetkey\.AsyncClient"):
            await http.get("https://slack.example/api")


def test_without_a_client_it_uses_the_default_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, broker: FakeBroker
) -> None:
    provider = Provider()
    with serve(broker) as url:
        monkeypatch.setenv("VALETKEY_URL", url)
        monkeypatch.setenv("VALETKEY_TOKEN", "env-identity")
        default.reset_default_clients()
        try:
            with httpx2.Client(
                auth=valetkey.TokenAuth("slack/mybot"), transport=httpx2.MockTransport(provider)
            ) as http:
                http.get("https://slack.example/api")
        finally:
            default.reset_default_clients()
    assert provider.seen[0][0] == "Bearer tok-1"
    assert broker.token_calls[0].authorization == "Bearer env-identity"


def test_repr_names_the_connector_only(broker: FakeBroker) -> None:
    auth = valetkey.TokenAuth("slack/mybot", client=_client(broker), user="alice")
    with httpx2.Client(auth=auth, transport=httpx2.MockTransport(Provider())) as http:
        http.get("https://slack.example/api")
    assert repr(auth) == "TokenAuth('slack/mybot')"


def test_the_httpx_adapter_does_the_same_on_httpx(broker: FakeBroker) -> None:
    provider = Provider(refused={"Bearer tok-1"})
    with httpx.Client(
        auth=HttpxTokenAuth("slack/mybot", client=_client(broker)),
        transport=httpx.MockTransport(provider),
    ) as http:
        assert http.post("https://slack.example/api", content=b"b").status_code == 200
    assert provider.seen == [("Bearer tok-1", b"b"), ("Bearer tok-2", b"b")]
    assert valetkey.HttpxTokenAuth is HttpxTokenAuth


async def test_the_httpx_adapter_async(broker: FakeBroker) -> None:
    provider = Provider()
    async with AsyncClient(identity="id-app", transport=broker.async_transport()) as vk:
        auth = HttpxTokenAuth("slack/mybot", client=vk)
        async with httpx.AsyncClient(auth=auth, transport=httpx.MockTransport(provider)) as http:
            await http.get("https://slack.example/api")
    assert provider.seen[0][0] == "Bearer tok-1"


def test_only_the_httpx_adapter_imports_httpx() -> None:
    """httpx is loaded by the adapter alone; the SDK keeps talking to the broker over httpx2."""
    code = (
        "import sys, valetkey\n"
        "valetkey.TokenAuth\n"
        "before = 'httpx' in sys.modules\n"
        "valetkey.HttpxTokenAuth\n"
        "print(before, 'httpx' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]


@pytest.mark.parametrize("make", [Client, AsyncClient])
def test_an_httpx_transport_is_refused_with_the_fix(make: type) -> None:
    """Tests written for the httpx-based SDK get a message that says what to change."""
    with pytest.raises(TypeError, match=r"httpx2\.\w*BaseTransport .*not httpx\.MockTransport"):
        make(identity="i", transport=httpx.MockTransport(Provider()))
