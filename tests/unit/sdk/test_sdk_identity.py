"""Identity discovery (documented order), token files, GitHub Actions, and the .env file."""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from sdk_helpers import NOW, FakeBroker, TickingClock

from valetkey.errors import IdentityError, IdentityNotFound
from valetkey.sdk import identity as identity_module
from valetkey.sdk.client import AsyncClient, Client
from valetkey.sdk.identity import (
    DEFAULT_BASE_URL,
    FileIdentity,
    GitHubActionsIdentity,
    discover_identity,
    find_dotenv,
    parse_dotenv,
    resolve_base_url,
)


def _jwt(claims: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2ln"


@pytest.fixture
def full_env(tmp_path: Path) -> dict[str, str]:
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    return {
        "VALETKEY_TOKEN": "from-valetkey-token",
        "VALETKEY_OIDC_TOKEN": "from-oidc-token",
        "VALETKEY_OIDC_TOKEN_FILE": str(token_file),
        "ACTIONS_ID_TOKEN_REQUEST_URL": "https://gh.example/token?api-version=2.0",
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "gh-request-secret",
    }


@pytest.fixture
def dotenv(tmp_path: Path) -> Path:
    path = tmp_path / ".env"
    path.write_text('VALETKEY_URL="http://broker.from.dotenv:9000"\nVALETKEY_TOKEN=from-dotenv\n')
    return path


def test_discovery_order(full_env: dict[str, str], dotenv: Path) -> None:
    """Sources are tried in the documented order: argument, VALETKEY_TOKEN, VALETKEY_OIDC_TOKEN,
    the token file, GitHub Actions, then the .env."""
    env = dict(full_env)
    assert discover_identity("explicit", environ=env, dotenv=dotenv).current() == "explicit"
    assert discover_identity(lambda: "called", environ=env).current() == "called"
    names = []
    for var in ("VALETKEY_TOKEN", "VALETKEY_OIDC_TOKEN", "VALETKEY_OIDC_TOKEN_FILE",
                "ACTIONS_ID_TOKEN_REQUEST_URL"):
        source = discover_identity(environ=env, dotenv=dotenv)
        names.append(source.name)
        del env[var]
    names.append(discover_identity(environ=env, dotenv=dotenv).name)
    assert names == [
        "VALETKEY_TOKEN",
        "VALETKEY_OIDC_TOKEN",
        "VALETKEY_OIDC_TOKEN_FILE",
        "GitHub Actions OIDC",
        f".env ({dotenv})",
    ]
    assert discover_identity(environ=env, dotenv=dotenv).current() == "from-dotenv"


def test_empty_variables_are_skipped(dotenv: Path) -> None:
    """A variable set to an empty string does not count as an identity."""
    env = {"VALETKEY_TOKEN": " ", "VALETKEY_OIDC_TOKEN": ""}
    assert discover_identity(environ=env, dotenv=dotenv).current() == "from-dotenv"


def test_nothing_found_names_the_options() -> None:
    """With no source, IdentityNotFound is raised with a remedy listing the options."""
    with pytest.raises(IdentityNotFound) as caught:
        discover_identity(environ={}, dotenv=None)
    assert caught.value.code == "identity_not_found"
    remedy = type(caught.value).remedy or ""
    for option in ("identity=", "VALETKEY_TOKEN", "VALETKEY_OIDC_TOKEN_FILE", "GitHub Actions",
                   "valetkey env pull"):
        assert option in remedy


def test_client_without_identity_raises_before_any_request(broker: FakeBroker) -> None:
    """A client with nowhere to find an identity raises IdentityNotFound and sends nothing."""
    with Client(transport=broker.transport()) as client, pytest.raises(IdentityNotFound):
        client.get_token("slack/mybot")
    assert broker.seen == []


def test_callable_identity_is_asked_every_time(broker: FakeBroker, clock: TickingClock) -> None:
    """A callable identity is called per request; an empty answer is IdentityNotFound."""
    answers = iter(["a", "a", ""])
    with Client(identity=lambda: next(answers), clock=clock, transport=broker.transport()) as c:
        c.get_token("slack/mybot")
        c.get_token("slack/mybot")
        with pytest.raises(IdentityNotFound):
            c.get_token("slack/mybot")
    assert len(broker.token_calls) == 1


def test_token_file_is_reread_when_it_changes(tmp_path: Path) -> None:
    """The token file is re-read when its mtime changes, checked at most once per interval."""
    path = tmp_path / "token"
    path.write_text("first\n")
    ticks = [0.0]
    source = FileIdentity(path, "file", recheck_interval=1.0, monotonic=lambda: ticks[0])
    assert source.current() == "first"
    path.write_text("second")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    assert source.current() == "first"  # within the interval: not checked
    ticks[0] = 1.5
    assert source.current() == "second"


def test_token_file_missing_or_empty(tmp_path: Path) -> None:
    """A missing or empty token file raises IdentityNotFound."""
    with pytest.raises(IdentityNotFound):
        FileIdentity(tmp_path / "absent", "file").current()
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(IdentityNotFound):
        FileIdentity(tmp_path / "empty", "file").current()


def test_client_follows_a_rotated_token_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, broker: FakeBroker, clock: TickingClock
) -> None:
    """A client on VALETKEY_OIDC_TOKEN_FILE presents the new token after the file rotates."""
    monkeypatch.setattr(identity_module, "FILE_RECHECK_INTERVAL", 0.0)
    path = tmp_path / "projected"
    path.write_text("k8s-one")
    monkeypatch.setenv("VALETKEY_OIDC_TOKEN_FILE", str(path))
    with Client(clock=clock, transport=broker.transport()) as client:
        assert client.identity_source == "VALETKEY_OIDC_TOKEN_FILE"
        client.get_token("slack/mybot")
        path.write_text("k8s-two")
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
        client.get_token("slack/mybot")
    assert [s.authorization for s in broker.token_calls] == ["Bearer k8s-one", "Bearer k8s-two"]


def test_env_token_reaches_the_broker(
    monkeypatch: pytest.MonkeyPatch, broker: FakeBroker, clock: TickingClock
) -> None:
    """VALETKEY_TOKEN and VALETKEY_URL configure a client built with no arguments."""
    monkeypatch.setenv("VALETKEY_TOKEN", "env-token")
    monkeypatch.setenv("VALETKEY_URL", "http://broker.example:1234/")
    with Client(clock=clock, transport=broker.transport()) as client:
        assert client.base_url == "http://broker.example:1234"
        client.get_token("slack/mybot")
    assert broker.seen[0].authorization == "Bearer env-token"


def test_dotenv_in_a_parent_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, broker: FakeBroker, clock: TickingClock
) -> None:
    """The .env written by `valetkey env pull` is found from a subfolder and read for both keys."""
    project = tmp_path / "project"
    (project / "src" / "deep").mkdir(parents=True)
    (project / ".env").write_text(
        "# written by valetkey env pull\nexport VALETKEY_URL='http://dotenv.example:8787'\n"
        "VALETKEY_TOKEN=dev-token # development identity\n"
    )
    monkeypatch.chdir(project / "src" / "deep")
    with Client(clock=clock, transport=broker.transport()) as client:
        assert client.base_url == "http://dotenv.example:8787"
        assert client.identity_source == f".env ({project / '.env'})"
        client.get_token("slack/mybot")
    assert broker.seen[0].authorization == "Bearer dev-token"


def test_unrelated_dotenv_is_skipped(tmp_path: Path) -> None:
    """A nearer .env without VALETKEY_ keys does not hide the project's one."""
    (tmp_path / ".env").write_text("VALETKEY_TOKEN=outer\n")
    inner = tmp_path / "inner"
    inner.mkdir()
    (inner / ".env").write_text("DATABASE_URL=postgres://\n")
    assert find_dotenv(inner) == tmp_path / ".env"


def test_base_url_order(dotenv: Path) -> None:
    """Base URL: argument, then VALETKEY_URL, then the .env, then the local default."""
    env = {"VALETKEY_URL": "https://from.env"}
    assert resolve_base_url("https://arg/", environ=env, dotenv=dotenv) == "https://arg"
    assert resolve_base_url(None, environ=env, dotenv=dotenv) == "https://from.env"
    assert resolve_base_url(None, environ={}, dotenv=dotenv) == "http://broker.from.dotenv:9000"
    assert resolve_base_url(None, environ={}, dotenv=None) == DEFAULT_BASE_URL


def test_parse_dotenv() -> None:
    """The .env parser reads KEY=VALUE lines with quotes, export, comments and blanks."""
    text = (
        "# comment\n\nA=1\nexport B = two \nC=\"quoted # not a comment\"\nD='single'\n"
        "E=value # trailing comment\nnot a line\nF=a=b\n"
    )
    assert parse_dotenv(text) == {
        "A": "1", "B": "two", "C": "quoted # not a comment", "D": "single", "E": "value",
        "F": "a=b",
    }


class _GitHub:
    """A stand-in for GitHub's OIDC token endpoint: checks the bearer, echoes the audience."""

    def __init__(self, exp: float) -> None:
        self.exp = exp
        self.requests: list[dict[str, list[str]]] = []
        self.status = 200


@contextmanager
def _github(stand_in: _GitHub) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = parse_qs(urlsplit(self.path).query)
            stand_in.requests.append(query)
            ok = self.headers.get("authorization") == "Bearer gh-request-secret"
            if not ok or stand_in.status != 200:
                self.send_response(401 if not ok else stand_in.status)
                self.end_headers()
                return
            claims = {"aud": query["audience"][0], "exp": stand_in.exp, "sub": "repo:o/r"}
            body = json.dumps({"value": _jwt(claims)}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/token?api-version=2.0"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    padded = payload + "=" * (-len(payload) % 4)
    result: dict[str, Any] = json.loads(base64.urlsafe_b64decode(padded))
    return result


def test_github_actions_token_is_cached_until_near_expiry() -> None:
    """The GitHub OIDC token is requested with the audience, reused, and refetched near exp."""
    clock = TickingClock()
    stand_in = _GitHub(exp=NOW + 300)
    with _github(stand_in) as url, httpx2.Client() as http:
        source = GitHubActionsIdentity(url, "gh-request-secret", "valetkey", clock=clock.timestamp)
        assert source.current() is None
        first = source.fetch(http)
        assert _claims(first)["aud"] == "valetkey"
        assert source.current() == first
        clock.advance(239)
        assert source.fetch(http) == first
        clock.advance(1)  # 60 s before exp
        assert source.current() is None
        stand_in.exp = NOW + 900
        assert source.fetch(http) != first
    assert stand_in.requests == [{"api-version": ["2.0"], "audience": ["valetkey"]}] * 2
    assert "gh-request-secret" not in repr(source)


async def test_github_actions_through_the_async_client(
    monkeypatch: pytest.MonkeyPatch, broker: FakeBroker, clock: TickingClock
) -> None:
    """In GitHub Actions the client presents the OIDC token for VALETKEY_AUDIENCE."""
    stand_in = _GitHub(exp=NOW + 600)
    with _github(stand_in) as url:
        monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_URL", url)
        monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "gh-request-secret")
        monkeypatch.setenv("VALETKEY_AUDIENCE", "https://broker.example")
        # The broker stand-in answers on the mock transport; GitHub is reached over a socket.
        real = httpx2.AsyncHTTPTransport()

        async def route(request: httpx2.Request) -> httpx2.Response:
            if request.url.host == "127.0.0.1":
                return await real.handle_async_request(request)
            return await broker.async_handler(request)

        async with AsyncClient(
            base_url="http://broker.example", clock=clock, transport=httpx2.MockTransport(route)
        ) as client:
            await client.get_token("slack/mybot")
            await client.get_token("slack/other")
        await real.aclose()
    assert len(stand_in.requests) == 1
    presented = [s.authorization or "" for s in broker.token_calls]
    assert len(presented) == 2
    assert all(_claims(p.removeprefix("Bearer "))["aud"] == "https://broker.example"
               for p in presented)


def test_github_actions_refusal_is_an_identity_error() -> None:
    """GitHub refusing the token request raises IdentityError mentioning id-token permission."""
    stand_in = _GitHub(exp=NOW + 600)
    stand_in.status = 403
    with _github(stand_in) as url, httpx2.Client() as http:
        source = GitHubActionsIdentity(url, "gh-request-secret")
        with pytest.raises(IdentityError, match="id-token"):
            source.fetch(http)
