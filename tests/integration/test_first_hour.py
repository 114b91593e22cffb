"""A newcomer's first hour with the broker (issue 8): ports, data directories, offline docs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx

from valetkey.cli.broker import broker_url
from valetkey.testing import running_broker


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
        page = httpx.get(f"{running.url}/docs")
        assert page.status_code == 200
        assert "text/html" in page.headers["content-type"]
        hosts = set(re.findall(r"(?:https?:)?//([a-z0-9.-]+\.[a-z]{2,})", page.text, re.I))
        assert not hosts, hosts
        assets = re.findall(r"""(?:src|href)=['"](/docs/assets/[^'"]+)['"]""", page.text)
        assert {a.rsplit("/", 1)[1] for a in assets} >= {"swagger-ui-bundle.js", "swagger-ui.css"}
        for asset in assets:
            served = httpx.get(running.url + asset)
            assert served.status_code == 200, asset
            assert len(served.content) > 100, asset
        assert "'/openapi.json'" in page.text or '"/openapi.json"' in page.text
        assert httpx.get(f"{running.url}/openapi.json").status_code == 200
        assert httpx.get(f"{running.url}/docs/oauth2-redirect").status_code == 200
