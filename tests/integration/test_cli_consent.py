"""`valetkey connect authorize | confirm | import` against a real broker and a real OAuth server."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from tests.integration.consent_support import authorization_code_tokens, setup_user_connector
from tests.peers.oidc import OidcProviderPeer, confidential_client, oidc_peer_fixture
from typer.testing import CliRunner, Result

from valetkey.cli.app import app
from valetkey.cli.commands.consent import _wait_for_grant
from valetkey.errors import AuthorizationExpired, AuthorizationPending
from valetkey.testing import RunningBroker, free_port, running_broker

CLIENT, SECRET = "cli-app", "cli-secret-value"
PORT = free_port()  # the broker's, chosen first: the peer must know its callback
CALLBACK = f"http://127.0.0.1:{PORT}/v1/connect/callback"
OUTSIDE = "http://127.0.0.1:9/back"  # a redirect URI for tokens the test gets itself
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
VALETKEY = str(Path(sys.executable).with_name("valetkey"))

oidc_peer = oidc_peer_fixture(
    {
        "scopes": ["read", "write"],
        "clients": [
            confidential_client(
                CLIENT,
                SECRET,
                grant_types=("authorization_code", "refresh_token", DEVICE_GRANT),
                redirect_uris=[CALLBACK, OUTSIDE],
                scope="openid read write",
            )
        ],
    }
)


@pytest.fixture(scope="module")
def broker(
    tmp_path_factory: pytest.TempPathFactory, oidc_peer: OidcProviderPeer
) -> Iterator[RunningBroker]:
    with running_broker(tmp_path_factory.mktemp("cli-consent") / "data", port=PORT) as running:
        yield running


@pytest.fixture(scope="module")
def identity(broker: RunningBroker, oidc_peer: OidcProviderPeer) -> str:
    data = {
        "issuer": oidc_peer.issuer,
        "clientId": CLIENT,
        "clientSecret": SECRET,
        "grants": ["authorization_code", "device_code"],
        "scopes": ["read", "write"],
    }
    return setup_user_connector(broker, "oauth/acme", data)


def _env(broker: RunningBroker, identity: str | None) -> dict[str, str | None]:
    """The workload's environment (its identity and the broker), no member credential."""
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("VALETKEY_")}
    env.update(VALETKEY_URL=broker.url, VALETKEY_TOKEN=identity)
    return env


def cli(args: list[str], env: dict[str, str | None], stdin: str | None = None) -> Result:
    return CliRunner().invoke(app, args, env=env, input=stdin, catch_exceptions=False)


def _printed(text: str) -> dict[str, str]:
    return {m.group(1): m.group(2) for m in re.finditer(r"^([a-z ]+):\s+(\S+)", text, re.M)}


def _token(broker: RunningBroker, identity: str, user: str) -> httpx2.Response:
    return httpx2.post(
        f"{broker.url}/v1/connect/token/oauth%2Facme",
        json={"subject": {"type": "user", "id": user}},
        headers={"authorization": f"Bearer {identity}"},
    )


def test_authorize_with_a_return_url_then_confirm(
    broker: RunningBroker, identity: str, oidc_peer: OidcProviderPeer
) -> None:
    """authorize prints the URL, request and verifier (with a note to keep it); confirm makes the grant."""
    env = _env(broker, identity)
    started = cli(
        [
            "connect",
            "authorize",
            "oauth/acme",
            "--user",
            "dana",
            "--return-url",
            "http://localhost:3000/back",
        ],
        env,
    )
    assert started.exit_code == 0, started.output
    shown = _printed(started.stdout)
    assert set(shown) == {"url", "request", "verifier", "expires"}
    assert shown["url"].startswith(oidc_peer.authorization_url + "?")
    assert "Keep the verifier" in started.stderr
    assert "valetkey connect confirm oauth/acme" in started.stderr
    landed = httpx2.get(oidc_peer.authorize(shown["url"], login="dana"), follow_redirects=False)
    assert "valetkey_status=confirm" in landed.headers["location"]
    assert _token(broker, identity, "dana").json()["error"]["code"] == "user_authorization_required"
    confirmed = cli(
        [
            "connect",
            "confirm",
            "oauth/acme",
            "--request",
            shown["request"],
            "--verifier",
            "@-",
            "--format",
            "json",
        ],
        env,
        stdin=shown["verifier"] + "\n",
    )
    assert confirmed.exit_code == 0, confirmed.output
    assert json.loads(confirmed.stdout) == {
        "request": shown["request"],
        "status": "completed",
        "user": "dana",
    }
    assert shown["verifier"] not in confirmed.output
    token = _token(broker, identity, "dana")
    assert token.status_code == 200, token.text
    assert oidc_peer.introspect(token.json()["token"], CLIENT, SECRET)["sub"] == "dana"


def test_confirm_with_a_wrong_verifier_is_refused(
    broker: RunningBroker, identity: str, oidc_peer: OidcProviderPeer
) -> None:
    """A wrong verifier ends the request: error[verification_failed], exit 1, and no grant."""
    env = _env(broker, identity)
    started = cli(
        [
            "connect",
            "authorize",
            "oauth/acme",
            "--user",
            "erin",
            "--return-url",
            "http://localhost:3000/back",
            "--format",
            "json",
        ],
        env,
    )
    data = json.loads(started.stdout)
    assert set(data) == {"url", "request", "expiresAt", "verifier"}
    httpx2.get(oidc_peer.authorize(data["url"], login="mallory"), follow_redirects=False)
    refused = cli(
        [
            "connect",
            "confirm",
            "oauth/acme",
            "--request",
            data["request"],
            "--verifier",
            "not-the-verifier",
        ],
        env,
    )
    assert refused.exit_code == 1
    assert refused.stderr.startswith("error[verification_failed]")
    again = cli(
        [
            "connect",
            "confirm",
            "oauth/acme",
            "--request",
            data["request"],
            "--verifier",
            data["verifier"],
        ],
        env,
    )
    assert again.exit_code == 1  # single use: the request failed for good
    assert _token(broker, identity, "erin").json()["error"]["code"] == "user_authorization_required"


@pytest.mark.parametrize(
    "args",
    [
        ["--user", "x"],
        ["--user", "x", "--device", "--return-url", "http://localhost/back"],
        ["--user", "x", "--return-url", "http://localhost/back", "--wait"],
    ],
)
def test_authorize_usage_errors_exit_2(
    broker: RunningBroker, identity: str, args: list[str]
) -> None:
    """authorize needs exactly one of --device, --return-url, --webhook; --wait only with --device."""
    result = cli(["connect", "authorize", "oauth/acme", *args], _env(broker, identity))
    assert result.exit_code == 2, result.output


def _device_command(broker: RunningBroker, identity: str, user: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VALETKEY_")}
    env.update(VALETKEY_URL=broker.url, VALETKEY_TOKEN=identity)
    return subprocess.Popen(
        [VALETKEY, "connect", "authorize", "oauth/acme", "--user", user, "--device", "--wait"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _user_code(process: subprocess.Popen[str]) -> tuple[str, str]:
    assert process.stdout is not None
    seen = ""
    for line in process.stdout:
        seen += line
        if line.startswith("user code:"):
            return line.split(":", 1)[1].strip(), seen
    raise AssertionError(f"no user code printed: {seen}")


def _deny_device(peer: OidcProviderPeer, user_code: str) -> None:
    """Press [ Abort ] on the peer's device page."""
    with httpx2.Client() as browser:
        page = browser.get(f"{peer.issuer}/device")
        xsrf = re.search(r'name="xsrf" value="([^"]+)"', page.text)
        assert xsrf is not None
        browser.post(
            f"{peer.issuer}/device",
            data={"xsrf": xsrf.group(1), "user_code": user_code, "abort": "yes"},
        )


def _finish(process: subprocess.Popen[str]) -> tuple[str, str]:
    try:
        return process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_device_wait_until_the_user_approves(
    broker: RunningBroker, identity: str, oidc_peer: OidcProviderPeer
) -> None:
    """--device --wait shows the URL and code, polls until the user approves, and never prints the token."""
    process = _device_command(broker, identity, "frank")
    code, head = _user_code(process)
    assert f"url:       {oidc_peer.issuer}/device?user_code=" in head
    oidc_peer.approve_device(code, login="frank")
    out, err = _finish(process)
    assert process.returncode == 0, out + err
    assert "connected: frank authorized oauth/acme" in out
    token = _token(broker, identity, "frank").json()["token"]
    assert token not in head + out + err
    assert oidc_peer.introspect(token, CLIENT, SECRET)["sub"] == "frank"


def test_device_wait_stops_when_the_user_refuses(
    broker: RunningBroker, identity: str, oidc_peer: OidcProviderPeer
) -> None:
    """--device --wait ends with error[access_denied] and exit 1 when the user aborts at the provider."""
    process = _device_command(broker, identity, "gina")
    code, _ = _user_code(process)
    _deny_device(oidc_peer, code)
    out, err = _finish(process)
    assert process.returncode == 1, out + err
    assert "error[access_denied]" in err


def test_device_wait_watches_its_own_request_not_an_earlier_grant(
    broker: RunningBroker, identity: str, oidc_peer: OidcProviderPeer
) -> None:
    """A user who already holds a grant: --device --wait stays pending until this request is approved."""
    tokens = _pair(oidc_peer, "kira")
    imported = cli(
        ["connect", "import", "oauth/acme", "--user", "kira", "--access-token", "@-"],
        _env(broker, identity),
        stdin=tokens["access_token"],
    )
    assert imported.exit_code == 0, imported.output
    process = _device_command(broker, identity, "kira")
    code, _ = _user_code(process)
    with pytest.raises(subprocess.TimeoutExpired):
        process.wait(timeout=3)  # nobody approved: still waiting, not "connected"
    oidc_peer.approve_device(code, login="kira")
    out, err = _finish(process)
    assert process.returncode == 0, out + err
    assert "connected: kira authorized oauth/acme" in out
    assert err.count("waiting for the user to approve") == 1  # one status line, not one per poll


def test_device_wait_interrupted_says_how_to_resume_and_wait_resumes(
    broker: RunningBroker, identity: str, oidc_peer: OidcProviderPeer
) -> None:
    """Ctrl-C: the request is still pending, and the printed command waits for it again."""
    process = _device_command(broker, identity, "lena")
    code, head = _user_code(process)
    request = _printed(head + process.stdout.readline())["request"]  # type: ignore[union-attr]
    time.sleep(1)
    process.send_signal(signal.SIGINT)
    out, err = _finish(process)
    assert process.returncode == 130, out + err
    resume = f"valetkey connect wait oauth/acme --user lena --request {request}"
    assert f"request {request} is still pending" in err
    assert resume in err
    env = {k: v for k, v in os.environ.items() if not k.startswith("VALETKEY_")}
    env.update(VALETKEY_URL=broker.url, VALETKEY_TOKEN=identity)
    again = subprocess.Popen(
        [VALETKEY, *resume.split()[1:]], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    oidc_peer.approve_device(code, login="lena")
    out, err = _finish(again)
    assert again.returncode == 0, out + err
    assert "connected: lena authorized oauth/acme" in out


def test_wait_respects_the_interval_and_the_deadline() -> None:
    """The wait sleeps the interval the broker names, and gives up with expired_token past the deadline."""
    sleeps: list[float] = []
    calls = iter(
        [AuthorizationPending("wait", interval=7), AuthorizationPending("wait", interval=12), None]
    )

    def fetch() -> str:
        outcome = next(calls)
        if outcome is not None:
            raise outcome
        return "token"

    _wait_for_grant(fetch, deadline=float("inf"), sleep=sleeps.append)
    assert sleeps == [7.0, 12.0]

    def pending() -> str:
        raise AuthorizationPending("wait", interval=5)

    with pytest.raises(AuthorizationExpired):
        _wait_for_grant(pending, deadline=0.0, sleep=sleeps.append)


def _pair(peer: OidcProviderPeer, login: str) -> dict[str, Any]:
    return authorization_code_tokens(
        peer, client_id=CLIENT, client_secret=SECRET, redirect_uri=OUTSIDE, login=login
    )


def test_import_reads_secrets_from_a_file_and_stdin_and_never_echoes_them(
    broker: RunningBroker, identity: str, oidc_peer: OidcProviderPeer, tmp_path: Path
) -> None:
    """import takes the access token from @file and the refresh token from @-; neither is printed."""
    tokens = _pair(oidc_peer, "hana")
    (tmp_path / "access.txt").write_text(tokens["access_token"] + "\n")
    result = cli(
        [
            "connect", "import", "oauth/acme", "--user", "hana",
            "--access-token", f"@{tmp_path / 'access.txt'}", "--refresh-token", "@-",
            "--expires-in", "300", "--scopes", "read,write", "--format", "json",
        ],
        _env(broker, identity),
        stdin=tokens["refresh_token"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["refreshable"] is True
    assert answer["scopes"] == ["read", "write"]
    assert answer["subject"] == {"type": "user", "id": "hana"}
    for secret in (tokens["access_token"], tokens["refresh_token"]):
        assert secret not in result.output
    assert _token(broker, identity, "hana").json()["token"] == tokens["access_token"]


def test_import_with_the_member_credential_into_a_project(
    broker: RunningBroker, identity: str, oidc_peer: OidcProviderPeer
) -> None:
    """With --project, import uses the member credential; without a refresh token, it says so."""
    tokens = _pair(oidc_peer, "ivan")
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("VALETKEY_")}
    env.update(VALETKEY_URL=broker.url, VALETKEY_API_TOKEN=broker.owner_token)
    result = cli(
        [
            "connect",
            "import",
            "oauth/acme",
            "--user",
            "ivan",
            "--access-token",
            "@-",
            "--project",
            "agent",
            "-e",
            "development",
        ],
        env,
        stdin=tokens["access_token"],
    )
    assert result.exit_code == 0, result.output
    assert "No refresh token" in result.stderr
    assert tokens["access_token"] not in result.output
    assert _token(broker, identity, "ivan").json()["token"] == tokens["access_token"]


def test_import_refuses_two_stdin_secrets(broker: RunningBroker, identity: str) -> None:
    """Only one secret option may read stdin."""
    result = cli(
        [
            "connect",
            "import",
            "oauth/acme",
            "--user",
            "x",
            "--access-token",
            "@-",
            "--refresh-token",
            "@-",
        ],
        _env(broker, identity),
        stdin="a\nb\n",
    )
    assert result.exit_code == 2, result.output


def test_connect_wait_with_a_timeout_says_the_request_is_still_pending(
    broker: RunningBroker, identity: str
) -> None:
    """`connect wait --timeout` gives up with the resume command; the request is not ended."""
    env = _env(broker, identity)
    started = cli(["connect", "authorize", "oauth/acme", "--user", "mona", "--device"], env)
    assert started.exit_code == 0, started.output
    request = _printed(started.stdout)["request"]
    waited = cli(
        ["connect", "wait", "oauth/acme", "--user", "mona", "--request", request, "--timeout", "1"],
        env,
    )
    assert waited.exit_code == 1, waited.output
    assert f"stopped waiting after 1s: request {request} is still pending" in waited.stderr
    assert f"valetkey connect wait oauth/acme --user mona --request {request}" in waited.stderr


def test_authorize_confirm_and_import_take_the_connector_id(
    broker: RunningBroker, identity: str, oidc_peer: OidcProviderPeer
) -> None:
    """`con_…` works in the consent commands as the uid does (issue 8.12)."""
    with broker.admin() as admin:
        connector_id = admin.get("/v1/connectors/oauth/acme").json()["id"]
    assert connector_id.startswith("con_")
    env = _env(broker, identity)
    started = cli(
        ["connect", "authorize", connector_id, "--user", "ivo", "--return-url", "http://localhost:3000/back"],
        env,
    )  # fmt: skip
    assert started.exit_code == 0, started.output
    shown = _printed(started.stdout)
    landed = httpx2.get(oidc_peer.authorize(shown["url"], login="ivo"), follow_redirects=False)
    assert "valetkey_status=confirm" in landed.headers["location"]
    confirmed = cli(
        ["connect", "confirm", connector_id, "--request", shown["request"], "--verifier", "@-",
         "--format", "json"],
        env,
        stdin=shown["verifier"] + "\n",
    )  # fmt: skip
    assert confirmed.exit_code == 0, confirmed.output
    assert json.loads(confirmed.stdout)["status"] == "completed"
    assert _token(broker, identity, "ivo").status_code == 200
    tokens = _pair(oidc_peer, "jo")
    imported = cli(
        ["connect", "import", connector_id, "--user", "jo", "--access-token", "@-",
         "--expires-in", "300", "--format", "json"],
        env,
        stdin=tokens["access_token"],
    )  # fmt: skip
    assert imported.exit_code == 0, imported.output
    assert _token(broker, identity, "jo").json()["token"] == tokens["access_token"]
