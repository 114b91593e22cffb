"""A newcomer's first hour with the broker (issue 8): ports, data directories, offline docs."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest

from valetkey.cli.broker import broker_url
from valetkey.errors import BrokerUnavailable, IdentityNotFound, UserAuthorizationRequired
from valetkey.sdk._wire import error_from_response
from valetkey.sdk.client import Client
from valetkey.testing import free_port, running_broker

VALETKEY = str(Path(sys.executable).with_name("valetkey"))


def test_a_restart_on_another_port_moves_the_url_the_cli_and_the_demo_server_find(
    tmp_path: Path,
) -> None:
    """cli.json follows the broker to a new port (the credential kept), and broker_url() reads it."""
    data = tmp_path / "data"
    with running_broker(data) as first:
        token = first.owner_token
        assert broker_url(data, environ={}) == first.url
    with running_broker(data) as second:
        assert second.url != first.url
        saved = json.loads((data / "cli.json").read_text())
        assert saved == {"url": second.url, "token": token}
        assert broker_url(data, environ={}) == second.url
        assert broker_url(data, environ={"VALETKEY_URL": "http://h:1/"}) == "http://h:1"


def test_the_api_docs_page_needs_no_other_host(tmp_path: Path) -> None:
    """/docs references only the broker itself, and every asset it names is served from the package."""
    with running_broker(tmp_path / "data") as running:
        page = httpx2.get(f"{running.url}/docs")
        assert page.status_code == 200
        assert "text/html" in page.headers["content-type"]
        hosts = set(re.findall(r"(?:https?:)?//([a-z0-9.-]+\.[a-z]{2,})", page.text, re.I))
        assert not hosts, hosts
        assets = re.findall(r"""(?:src|href)=['"](/docs/assets/[^'"]+)['"]""", page.text)
        assert {a.rsplit("/", 1)[1] for a in assets} >= {"swagger-ui-bundle.js", "swagger-ui.css"}
        for asset in assets:
            served = httpx2.get(running.url + asset)
            assert served.status_code == 200, asset
            assert len(served.content) > 100, asset
        assert "'/openapi.json'" in page.text or '"/openapi.json"' in page.text
        assert httpx2.get(f"{running.url}/openapi.json").status_code == 200
        assert httpx2.get(f"{running.url}/docs/oauth2-redirect").status_code == 200


def _serve(data: Path, port: int, *flags: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VALETKEY_")}
    return subprocess.Popen(
        [VALETKEY, "serve", "--data-dir", str(data), "--port", str(port), "--log-level", "warning",
         *flags],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _ready(process: subprocess.Popen[str], port: int) -> str:
    """Wait for the broker's banner; returns it."""
    assert process.stderr is not None
    banner = ""
    for line in process.stderr:
        banner += line
        if "API docs:" in line:
            httpx2.get(f"http://127.0.0.1:{port}/readyz", timeout=5).raise_for_status()
            return banner
    raise AssertionError(f"no banner: {banner}")


def _stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()


def test_a_second_broker_on_the_same_port_or_data_directory_refuses_clearly(tmp_path: Path) -> None:
    """Port in use, or the data directory held by a running broker: a plain message, exit 1; the
    lock goes with the broker; the banner suggests creating a project only while there is none."""
    data, port = tmp_path / "data", free_port()
    first = _serve(data, port)
    try:
        banner = _ready(first, port)
        assert "valetkey projects create my-agent" in banner
        same_port = subprocess.run(
            [VALETKEY, "serve", "--data-dir", str(tmp_path / "other"), "--port", str(port)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert same_port.returncode == 1, same_port.stderr
        assert f"error[cli_error]: port {port} on 127.0.0.1 is already in use" in same_port.stderr
        assert f"valetkey serve --port {port + 1}" in same_port.stderr
        assert "Traceback" not in same_port.stderr
        assert "Errno" not in same_port.stderr
        same_data = subprocess.run(
            [VALETKEY, "serve", "--data-dir", str(data), "--port", str(free_port())],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert same_data.returncode == 1, same_data.stderr
        assert f"another broker (pid {first.pid}) is running on the data directory" in same_data.stderr
        assert "--data-dir DIR" in same_data.stderr
        created = subprocess.run(
            [VALETKEY, "--data-dir", str(data), "projects", "create", "my-agent"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert created.returncode == 0, created.stderr
    finally:
        _stop(first)
    again = _serve(data, port)  # the lock went with the first broker
    try:
        banner = _ready(again, port)
        assert "projects create" not in banner
    finally:
        _stop(again)


def test_make_setup_shows_each_step_and_pip_progress(tmp_path: Path) -> None:
    """`make serve`'s first install announces each step and lets pip show its progress."""
    root = Path(__file__).resolve().parents[2]
    planned = subprocess.run(
        ["make", "-n", "setup", f"VENV={tmp_path / 'venv'}"],
        cwd=root, capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    steps = [line for line in planned.splitlines() if "==> [" in line]
    assert len(steps) == 3, planned
    installs = [line for line in planned.splitlines() if "pip install" in line]
    assert installs, planned
    assert all("--quiet" not in line for line in installs)
    assert all("--progress-bar on" in line for line in installs)


def test_identity_not_found_says_what_it_searched_and_how_to_get_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no identity anywhere, the SDK names every source, the directory it searched for a
    .env, and `valetkey env pull`."""
    for name in list(os.environ):
        if name.startswith(("VALETKEY_", "ACTIONS_ID_TOKEN_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    with Client(base_url="http://127.0.0.1:9") as client, pytest.raises(IdentityNotFound) as caught:
        client.get_token("api-key/search")
    text = caught.value.message
    for searched in ("VALETKEY_TOKEN", "VALETKEY_OIDC_TOKEN_FILE", "GitHub Actions", str(tmp_path)):
        assert searched in text, text
    assert "valetkey env pull" in text


def test_an_unreachable_broker_asks_whether_valetkey_serve_runs(tmp_path: Path) -> None:
    """The SDK and `valetkey connect token` both add the hint when nothing answers."""
    url = f"http://127.0.0.1:{free_port()}"
    with Client(base_url=url, identity="vk_at_x") as client, pytest.raises(BrokerUnavailable) as caught:
        client.get_token("api-key/search")
    assert "is `valetkey serve` running" in caught.value.message
    env = {k: v for k, v in os.environ.items() if not k.startswith("VALETKEY_")}
    env.update(VALETKEY_URL=url, VALETKEY_TOKEN="vk_at_x")
    cli = subprocess.run(
        [VALETKEY, "connect", "token", "api-key/search"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert cli.returncode == 1, cli.stderr
    assert "is `valetkey serve` running" in cli.stderr


def test_sdk_errors_name_the_sdk_call_not_the_route() -> None:
    """A user_authorization_required refusal reads start_authorization(...), not POST /v1/...;
    the broker's other words and every detail are kept."""
    broker_words = (
        "user alice has not authorized oauth/acme; start consent with "
        "POST /v1/connect/authorize/oauth/acme"
    )
    body = {"error": {"code": "user_authorization_required", "message": broker_words,
                      "user": "alice", "connector": "oauth/acme"}}  # fmt: skip
    err = error_from_response(httpx2.Response(403, json=body))
    assert isinstance(err, UserAuthorizationRequired)
    assert err.message == (
        "user alice has not authorized oauth/acme; start consent with "
        "start_authorization('oauth/acme', user='alice')"
    )
    assert err.details["connector"] == "oauth/acme"


def test_replicas_on_one_sqlite_file_each_say_so(tmp_path: Path) -> None:
    """--shared-data-dir brokers share the data directory; a plain broker never joins them, and a
    shared one never joins a plain one."""
    data = tmp_path / "data"

    def refused(*flags: str) -> str:
        done = subprocess.run(
            [VALETKEY, "serve", "--data-dir", str(data), "--port", str(free_port()), *flags],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 1, done.stderr
        assert "is running on the data directory" in done.stderr
        return done.stderr

    plain_port = free_port()
    plain = _serve(data, plain_port)
    try:
        _ready(plain, plain_port)
        assert "--shared-data-dir" in refused()
        refused("--shared-data-dir")
    finally:
        _stop(plain)
    ports = [free_port(), free_port()]
    shared = [_serve(data, port, "--shared-data-dir") for port in ports]
    try:
        for process, port in zip(shared, ports, strict=True):
            _ready(process, port)
        refused()
    finally:
        for process in shared:
            _stop(process)
