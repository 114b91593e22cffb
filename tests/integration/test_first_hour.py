"""A newcomer's first hour with the broker (issue 8): ports, data directories, offline docs."""

from __future__ import annotations

import json
from pathlib import Path

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
