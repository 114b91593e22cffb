"""``connect.TokenShortcut`` takes exactly the requests the router would route to the token endpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from valetkey.errors import IdentityError
from valetkey.server import connect
from valetkey.server.app import create_app
from valetkey.server.settings import Settings

PATHS = [
    "/v1/connect/token/api-key/bench",
    "/v1/connect/token/slack/mybot",
    "/v1/connect/token/a",
    "/v1/connect/token/",
    "/v1/connect/token/slack/mybot/import",
    "/v1/connect/token/slack/import",
    "/v1/connect/token/slack/mybot/import/",
    "/v1/connect/token/slack/mybot/imports",
    "/v1/connect/token/x/import/y",
    "/v1/connect/token",
    "/v1/connect/tokens/slack/mybot",
    "/v1/connect/connectors/slack/mybot",
    "/v1/connect/authorize/slack/mybot",
    "/v1/connect/token/slack%2Fmybot",
    "/v1/connect/token/a b",
    "/v1/connect/token/../../healthz",
    "/healthz",
]


def _scope(method: str, path: str, root_path: str = "") -> dict[str, Any]:
    return {
        "type": "http", "method": method, "path": root_path + path, "root_path": root_path,
        "headers": [], "query_string": b"",
    }


async def _router_runs_token(app: Any, scope: dict[str, Any]) -> bool:
    """Route ``scope`` with the app's own router: True when it ran the token endpoint.

    Without an Authorization header, :func:`connect.token` refuses before touching the broker
    (``IdentityError``), so no broker needs to run; any other route answers or raises otherwise.
    """

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(_message: dict[str, Any]) -> None:
        return None

    scope = {**scope, "app": app}
    try:
        await app.router(scope, receive, send)
    except IdentityError:
        return scope.get("endpoint") is connect.token
    except Exception:
        return False
    return False


@pytest.mark.parametrize("root_path", ["", "/broker"])
@pytest.mark.parametrize("method", ["POST", "GET", "DELETE", "HEAD", "PUT"])
@pytest.mark.parametrize("path", PATHS)
async def test_the_shortcut_agrees_with_the_router(
    tmp_path: Path, path: str, method: str, root_path: str
) -> None:
    """For every method and path (and behind a root path), the shortcut takes a request iff the router runs token."""
    app = create_app(Settings(data_dir=tmp_path / "data"))
    scope = _scope(method, path, root_path)
    takes = connect.TokenShortcut.takes(scope)
    assert (takes is not None) == await _router_runs_token(app, scope)
    if takes is not None:
        assert takes == path.removeprefix("/v1/connect/token/")


def test_a_lifespan_or_websocket_scope_goes_to_the_app() -> None:
    """Only HTTP requests are taken."""
    assert connect.TokenShortcut.takes({"type": "lifespan"}) is None
    assert connect.TokenShortcut.takes({"type": "websocket", "path": "/v1/connect/token/a/b"}) is None
