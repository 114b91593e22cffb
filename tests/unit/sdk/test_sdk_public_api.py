"""The package's public surface: its __all__, its light import, and the module-level functions."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

import pytest
from sdk_helpers import FakeBroker, serve

import valetkey
import valetkey.sync
from valetkey import errors
from valetkey.sdk import default
from valetkey.sdk.client import AsyncClient, Client

FUNCTIONS = ["confirm_authorization", "get_connector", "get_token", "get_token_response",
             "revoke_tokens", "start_authorization"]
TYPES = ["AuthorizationResponse", "Confirmation", "ConnectorMetadata", "ConnectorRef",
         "RevokeResult", "Subject", "TokenResponse"]


def test_all_is_exactly_the_public_surface() -> None:
    """valetkey.__all__ lists the functions, clients, types and every error class, and resolves."""
    error_classes = sorted(
        name for name in errors.__all__
        if isinstance(getattr(errors, name), type)
        and issubclass(getattr(errors, name), errors.ValetkeyError)
    )
    expected = sorted([*FUNCTIONS, *TYPES, "AsyncClient", "Client", "TokenAuth", "HttpxTokenAuth",
                       *error_classes])
    assert sorted(valetkey.__all__) == expected
    for name in valetkey.__all__:
        assert getattr(valetkey, name) is not None
    assert set(valetkey.__all__) <= set(dir(valetkey))
    with pytest.raises(AttributeError):
        _ = valetkey.not_a_name


def test_sync_module_mirrors_the_async_functions() -> None:
    """valetkey.sync has the same function names and parameters, synchronous."""
    assert sorted(valetkey.sync.__all__) == sorted([*FUNCTIONS, "Client"])
    for name in FUNCTIONS:
        async_fn = getattr(valetkey, name)
        sync_fn = getattr(valetkey.sync, name)
        assert inspect.iscoroutinefunction(async_fn)
        assert not inspect.iscoroutinefunction(sync_fn)
        assert inspect.signature(async_fn).parameters.keys() == \
            inspect.signature(sync_fn).parameters.keys()
        assert inspect.signature(getattr(Client, name)).parameters.keys() == \
            inspect.signature(getattr(AsyncClient, name)).parameters.keys()


def test_import_stays_light() -> None:
    """Importing valetkey and valetkey.sync pulls in no web framework, ORM, driver or crypto."""
    # Not "rich"/"click": httpx2 itself imports them for its own CLI when they are installed.
    heavy = ["fastapi", "starlette", "sqlalchemy", "asyncpg", "aiosqlite", "uvicorn", "pydantic",
             "joserfc", "cryptography", "alembic", "typer", "jinja2", "authlib"]
    code = (
        "import json, sys, valetkey, valetkey.sync\n"
        "valetkey.get_token; valetkey.Client; valetkey.TokenResponse\n"
        f"heavy = {heavy!r}\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & set(heavy))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_bare_import_does_not_load_the_client() -> None:
    """`import valetkey` alone loads only the errors: no HTTP stack, not the client."""
    code = (
        "import sys, valetkey\n"
        "print('httpx2' in sys.modules, 'httpx' in sys.modules, 'valetkey.sdk' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "False"]


def test_the_client_runs_on_one_http_stack_httpx2() -> None:
    """Using the SDK (async and sync, with its auth adapter) loads httpx2 and never httpx."""
    code = (
        "import sys, valetkey, valetkey.sync\n"
        "valetkey.get_token; valetkey.Client; valetkey.AsyncClient; valetkey.TokenAuth\n"
        "valetkey.Client(base_url='http://127.0.0.1:9', identity='t').close()\n"
        "print('httpx2' in sys.modules, 'httpx' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False"]


def test_sync_functions_use_the_environment(
    monkeypatch: pytest.MonkeyPatch, broker: FakeBroker
) -> None:
    """valetkey.sync functions find the broker and identity from the environment."""
    with serve(broker) as url:
        monkeypatch.setenv("VALETKEY_URL", url)
        monkeypatch.setenv("VALETKEY_TOKEN", "env-identity")
        assert valetkey.sync.get_token("slack/mybot") == "tok-1"
        assert valetkey.sync.get_token_response("slack/mybot").token == "tok-1"
        assert valetkey.sync.get_connector("slack/mybot").uid == "slack/mybot"
        auth = valetkey.sync.start_authorization("oauth/acme", user="alice", device_code=True)
        assert auth.device_code == "dev-secret"
        assert valetkey.sync.revoke_tokens("slack/mybot", all_tokens=True).deleted == 2
        assert default.default_client() is default.default_client()
    assert {s.authorization for s in broker.seen} == {"Bearer env-identity"}
    assert len(broker.token_calls) == 1


async def test_async_functions_use_the_environment(
    monkeypatch: pytest.MonkeyPatch, broker: FakeBroker
) -> None:
    """valetkey's async functions use one default client per event loop."""
    with serve(broker) as url:
        monkeypatch.setenv("VALETKEY_URL", url)
        monkeypatch.setenv("VALETKEY_TOKEN", "env-identity")
        client = default.default_async_client()
        try:
            assert await valetkey.get_token("slack/mybot", user="alice") == "tok-1"
            response = await valetkey.get_token_response("slack/mybot", user="alice")
            assert response.token == "tok-1"
            assert (await valetkey.get_connector("slack/mybot")).service == "slack"
            auth = await valetkey.start_authorization("oauth/acme", user="alice")
            assert auth.url.startswith("https://")
            result = await valetkey.revoke_tokens("slack/mybot", user="alice")
            assert result.tokens_found == 2
            assert default.default_async_client() is client
        finally:
            await client.aclose()
    assert len(broker.token_calls) == 1
