"""A ``.env`` found by discovery supplies the broker URL only together with its own identity.

A hostile ``.env`` in a parent directory names a second local server that records every
Authorization header; whatever else the identity comes from (argument, callable,
VALETKEY_TOKEN, VALETKEY_OIDC_TOKEN, a token file, GitHub Actions), that server receives nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sdk_helpers import FakeBroker, serve
from test_sdk_identity import _GitHub, _github

from valetkey.errors import ValetkeyError
from valetkey.sdk.client import AsyncClient, Client
from valetkey.sdk.identity import DEFAULT_BASE_URL

Setup = Callable[[pytest.MonkeyPatch, Path], dict[str, object]]


@pytest.fixture
def hostile() -> Iterator[tuple[FakeBroker, str]]:
    """The server a hostile .env points at; it records any Authorization header it receives."""
    recorder = FakeBroker()
    with serve(recorder) as url:
        yield recorder, url


@pytest.fixture
def github() -> Iterator[str]:
    with _github(_GitHub(exp=2_000_000_000)) as url:
        yield url


def _explicit(mp: pytest.MonkeyPatch, tmp: Path) -> dict[str, object]:
    return {"identity": "explicit-identity"}


def _callable(mp: pytest.MonkeyPatch, tmp: Path) -> dict[str, object]:
    return {"identity": lambda: "callable-identity"}


def _valetkey_token(mp: pytest.MonkeyPatch, tmp: Path) -> dict[str, object]:
    mp.setenv("VALETKEY_TOKEN", "env-identity")
    return {}


def _oidc_token(mp: pytest.MonkeyPatch, tmp: Path) -> dict[str, object]:
    mp.setenv("VALETKEY_OIDC_TOKEN", "oidc-identity")
    return {}


def _token_file(mp: pytest.MonkeyPatch, tmp: Path) -> dict[str, object]:
    path = tmp / "projected-token"
    path.write_text("file-identity\n")
    mp.setenv("VALETKEY_OIDC_TOKEN_FILE", str(path))
    return {}


SOURCES: dict[str, Setup] = {
    "argument": _explicit,
    "callable": _callable,
    "VALETKEY_TOKEN": _valetkey_token,
    "VALETKEY_OIDC_TOKEN": _oidc_token,
    "VALETKEY_OIDC_TOKEN_FILE": _token_file,
}


def _hostile_dotenv(tmp: Path, url: str, with_token: bool) -> None:
    lines = [f"VALETKEY_URL={url}"]
    if with_token:
        lines.append("VALETKEY_TOKEN=dotenv-identity")
    (tmp / ".env").write_text("\n".join(lines) + "\n")  # the parent of the working directory


def _try(client: Client) -> None:
    # Nothing may listen at the default URL: only where the identity went matters.
    with contextlib.suppress(ValetkeyError):
        client.get_token("slack/mybot")


@pytest.mark.parametrize("with_token", [False, True])
@pytest.mark.parametrize("source", sorted(SOURCES))
def test_an_identity_from_elsewhere_never_goes_to_the_dotenv_url(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    hostile: tuple[FakeBroker, str],
    source: str,
    with_token: bool,
) -> None:
    """Without VALETKEY_URL the client uses the default URL, not the parent .env's."""
    recorder, url = hostile
    _hostile_dotenv(tmp_path, url, with_token)
    kwargs = SOURCES[source](monkeypatch, tmp_path)
    with Client(timeout=2, **kwargs) as client:  # type: ignore[arg-type]
        assert client.base_url == DEFAULT_BASE_URL
        _try(client)
    assert recorder.seen == []


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_valetkey_url_is_used_with_an_identity_from_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    hostile: tuple[FakeBroker, str],
    source: str,
) -> None:
    """With VALETKEY_URL set the identity goes there, and the .env's server hears nothing."""
    recorder, url = hostile
    _hostile_dotenv(tmp_path, url, with_token=True)
    kwargs = SOURCES[source](monkeypatch, tmp_path)
    legit = FakeBroker()
    with serve(legit) as legit_url:
        monkeypatch.setenv("VALETKEY_URL", legit_url)
        with Client(**kwargs) as client:  # type: ignore[arg-type]
            assert client.get_token("slack/mybot")
    assert recorder.seen == []
    assert [s.authorization for s in legit.token_calls] != []
    assert all("dotenv-identity" not in (s.authorization or "") for s in legit.token_calls)


def test_github_actions_identity_never_goes_to_the_dotenv_url(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    hostile: tuple[FakeBroker, str],
    github: str,
) -> None:
    """A GitHub Actions OIDC token is not sent to the URL a parent .env names."""
    recorder, url = hostile
    _hostile_dotenv(tmp_path, url, with_token=True)
    monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_URL", github)
    monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "gh-request-secret")
    with Client(timeout=2) as client:
        assert client.identity_source == "GitHub Actions OIDC"
        assert client.base_url == DEFAULT_BASE_URL
        _try(client)
    assert recorder.seen == []


async def test_the_async_client_follows_the_same_rule(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, hostile: tuple[FakeBroker, str]
) -> None:
    """The async client, with an identity from the environment, ignores the .env's URL too."""
    recorder, url = hostile
    _hostile_dotenv(tmp_path, url, with_token=True)
    monkeypatch.setenv("VALETKEY_TOKEN", "env-identity")
    async with AsyncClient(timeout=2) as client:
        assert client.base_url == DEFAULT_BASE_URL
    assert recorder.seen == []


def test_the_dotenv_identity_comes_with_its_url(
    tmp_path: Path, hostile: tuple[FakeBroker, str]
) -> None:
    """The .env's own identity is sent to the .env's URL: the two travel together."""
    broker, url = hostile
    _hostile_dotenv(tmp_path, url, with_token=True)
    with Client() as client:
        assert client.base_url == url
        assert client.get_token("slack/mybot")
    assert [s.authorization for s in broker.token_calls] == ["Bearer dotenv-identity"]
