"""Help, refusals and tables as a person (or a script) meets them, without a broker."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from valetkey.cli.app import app
from valetkey.cli.output import Format, emit, error_json, field
from valetkey.errors import InvalidRequest, NotFound
from valetkey.providers.api_key import ApiKeyProvider
from valetkey.providers.oauth import OAuthProvider
from valetkey.providers.oauth.settings import OAuthSettings

_UNSET = dict.fromkeys(
    ("VALETKEY_URL", "VALETKEY_API_TOKEN", "VALETKEY_TOKEN", "VALETKEY_OIDC_TOKEN")
)


def invoke(args: list[str], tmp_path: Path, **env: str) -> object:
    return CliRunner().invoke(
        app,
        args,
        env={**_UNSET, "VALETKEY_DATA_DIR": str(tmp_path), "COLUMNS": "100", **env},
        catch_exceptions=False,
    )


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["connect", "remove", "--help"],
        ["connect", "attach", "--help"],
        ["members", "revoke", "--help"],
    ],
)
def test_flags_show_no_bool_metavar(args: list[str], tmp_path: Path) -> None:
    """A flag takes no value, so --help shows no <bool> type next to it (nor next to --help)."""
    result = invoke(args, tmp_path)
    assert result.exit_code == 0  # type: ignore[attr-defined]
    text = result.stdout  # type: ignore[attr-defined]
    assert "--help" in text
    assert "<bool>" not in text


@pytest.mark.parametrize("command", ["create", "update"])
def test_create_and_update_help_list_every_declared_field(command: str, tmp_path: Path) -> None:
    """`connect create --help` and `update --help` list each type's --data fields, as the
    providers declare them (config_fields), secrets marked."""
    text = invoke(["connect", command, "--help"], tmp_path).stdout  # type: ignore[attr-defined]
    for provider in (ApiKeyProvider(), OAuthProvider()):
        assert f"{provider.type}:" in text
        for spec in provider.config_fields:
            assert re.search(rf"\b{spec.name}\b", text), spec.name
    assert "apiKey (* secret)" in text
    assert "clientSecret (secret)" in text


def test_declared_fields_are_exactly_what_validation_accepts() -> None:
    """The declaration is the schema: every declared field is accepted, any other refused."""
    declared = {f.name for f in OAuthProvider.config_fields}
    with pytest.raises(InvalidRequest) as caught:
        OAuthSettings.parse({"clientId": "c", "tokenUrl": "https://a.example/t", "x": 1})
    assert set(caught.value.details["knownFields"]) == declared
    assert {f.name for f in ApiKeyProvider.config_fields} == {"apiKey", "header", "description"}


@pytest.mark.parametrize(
    ("given", "near"),
    [
        ("tokenURL", "tokenUrl"),
        ("clientID", "clientId"),
        ("client_secret", "clientSecret"),
        ("scope", "scopes"),
    ],
)
def test_unknown_field_suggests_the_near_one(given: str, near: str) -> None:
    """An unknown configuration field names the known field it most likely means."""
    data = {"clientId": "c", "tokenUrl": "https://a.example/t", "clientSecret": "s"}
    data.pop(near, None)
    with pytest.raises(InvalidRequest) as caught:
        OAuthSettings.parse({**data, given: "v"})
    assert caught.value.message.startswith(
        f"unknown configuration field {given!r} (did you mean {near!r}?); known fields: "
    )
    assert caught.value.details["suggestion"] == near
    assert caught.value.details["hint"] == f"Rename {given!r} to {near!r}."


def test_far_unknown_field_suggests_nothing() -> None:
    """A field close to none is refused without a guess."""
    with pytest.raises(InvalidRequest) as caught:
        ApiKeyProvider().validate_config({"apiKey": "k", "zzzzzz": 1})
    assert "did you mean" not in caught.value.message
    assert "suggestion" not in caught.value.details


def test_json_errors_have_a_stable_shape(tmp_path: Path) -> None:
    """With --format json a refusal is one JSON object on stderr (code, message, hint), exit 1;
    stdout stays empty."""
    result = invoke(["projects", "list", "--format", "json"], tmp_path)
    assert result.exit_code == 1  # type: ignore[attr-defined]
    assert result.stdout == ""  # type: ignore[attr-defined]
    body = json.loads(result.stderr)  # type: ignore[attr-defined]
    assert set(body) == {"error"}
    assert body["error"]["code"] == "credentials_not_found"
    assert body["error"]["message"] == "no member credential found for the Valetkey management API"
    assert "VALETKEY_API_TOKEN" in body["error"]["hint"]


def test_json_usage_errors_exit_2(tmp_path: Path) -> None:
    """A usage error under --format json is JSON too (code usage_error), exit 2."""
    result = invoke(["connect", "attach", "api-key/x", "--format=json"], tmp_path)
    assert result.exit_code == 2  # type: ignore[attr-defined]
    body = json.loads(result.stderr)  # type: ignore[attr-defined]
    assert body["error"]["code"] == "usage_error"
    assert "--environment" in body["error"]["message"]
    assert body["error"]["hint"].endswith("connect attach --help`.")


def test_error_json_carries_the_brokers_hint_and_details() -> None:
    """A refusal decoded from the broker keeps its hint and details in the JSON shape."""
    err = NotFound("no connector a/b", connector="a/b", hint="`valetkey connect list` lists them.")
    assert error_json(err) == {
        "error": {
            "code": "not_found",
            "message": "no connector a/b",
            "hint": "`valetkey connect list` lists them.",
            "connector": "a/b",
        }
    }
    assert error_json(NotFound("gone"))["error"]["hint"] is None


@pytest.mark.parametrize(
    "args",
    [
        ["connect", "remove", "api-key/x"],
        ["connect", "rm", "api-key/x", "--disconnect-all"],
        ["connect", "detach", "api-key/x", "--project", "p"],
        ["connect", "revoke-tokens", "api-key/x", "--all-tokens"],
    ],
)
def test_destructive_commands_refuse_without_a_terminal_or_yes(
    args: list[str], tmp_path: Path
) -> None:
    """remove, detach and revoke-tokens --all-tokens, with no terminal to ask on and no --yes,
    refuse before any request (here: before even looking for a credential)."""
    result = invoke(args, tmp_path, VALETKEY_URL="http://127.0.0.1:9", VALETKEY_API_TOKEN="x")
    assert result.exit_code == 1  # type: ignore[attr-defined]
    assert result.stderr == (  # type: ignore[attr-defined]
        "error[confirmation_required]: this command needs confirmation, and stdin is not a "
        "terminal to ask on\n  hint: Pass --yes to confirm it.\n"
    )


def test_a_terminal_is_asked_and_no_stops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a terminal, remove asks; "n" aborts with nothing sent."""
    monkeypatch.setattr("valetkey.cli.prompts.interactive", lambda: True)
    result = CliRunner().invoke(
        app,
        ["connect", "remove", "api-key/x"],
        env={**_UNSET, "VALETKEY_URL": "http://127.0.0.1:9", "VALETKEY_API_TOKEN": "x"},
        input="n\n",
    )
    assert result.exit_code == 1
    assert "Remove connector api-key/x? Its tokens stop being served. [y/N]" in result.stderr
    assert "could not reach" not in result.stderr


def _words(text: str) -> list[str]:
    return text.split()


def test_aliases_ls_and_rm_are_the_same_commands(tmp_path: Path) -> None:
    """`connect ls` is `connect list`, `connect rm` is `connect remove` (hidden from the list)."""
    for alias, name in (("ls", "list"), ("rm", "remove")):
        alias_help = invoke(["connect", alias, "--help"], tmp_path).stdout  # type: ignore[attr-defined]
        real_help = invoke(["connect", name, "--help"], tmp_path).stdout  # type: ignore[attr-defined]
        assert _words(alias_help.replace(f"connect {alias}", f"connect {name}")) == _words(
            real_help
        )
    listing = invoke(["connect", "--help"], tmp_path).stdout  # type: ignore[attr-defined]
    assert not re.search(r"│ (ls|rm) ", listing)


def test_tables_do_not_break_values_at_80_columns(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """At 80 columns a table too wide to fit is shown as one block per row: every uid, id and
    time stays whole on one line; a table that fits stays a table."""
    monkeypatch.setenv("COLUMNS", "80")
    columns = [(name, field(name)) for name in ("uid", "type", "attached", "id", "at", "subject")]
    row = {
        "uid": "oauth/acme-production-calendar",
        "type": "oauth",
        "attached": "my-agent-backend (development, preview, production)",
        "id": "con_0123456789abcdef0123",
        "at": "2026-12-02 10:00:00",
        "subject": "user:alice@example.com",
    }
    emit([row, {**row, "uid": "api-key/search"}], columns, Format.table)
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert all(len(line) <= 80 for line in lines), out
    for value in row.values():
        assert any(value in line for line in lines), value
    assert "  id        con_0123456789abcdef0123" in lines
    emit([{"uid": "api-key/s", "id": "con_1"}], columns[:1] + columns[3:4], Format.table)
    small = capsys.readouterr().out
    assert "┃ uid       ┃ id    ┃" in small


def test_prompt_asks_only_for_the_secrets_a_payload_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a terminal, oauth asks for clientSecret unless private_key_jwt, never for the PEM
    privateKey (a file), never for a field given; without a terminal it asks nothing."""
    from valetkey.cli.prompts import prompt_secrets

    asked: list[str] = []

    def answer(text: str, **options: object) -> str:
        assert options["hide_input"] is True
        asked.append(text)
        return "typed"

    monkeypatch.setattr("valetkey.cli.prompts.typer.prompt", answer)
    monkeypatch.setattr("valetkey.cli.prompts.interactive", lambda: True)
    fields = OAuthProvider.config_fields
    data: dict[str, object] = {"clientId": "c"}
    assert prompt_secrets(fields, data, dict(data)) == ["clientSecret"]
    assert data["clientSecret"] == "typed"
    assert asked == ["clientSecret (for client_secret_basic / client_secret_post, hidden)"]
    jwt: dict[str, object] = {"clientId": "c", "authMethod": "private_key_jwt"}
    assert prompt_secrets(fields, jwt, dict(jwt)) == []
    given: dict[str, object] = {"clientId": "c", "clientSecret": "s"}
    assert prompt_secrets(fields, given, dict(given)) == []
    monkeypatch.setattr("valetkey.cli.prompts.interactive", lambda: False)
    assert prompt_secrets(ApiKeyProvider.config_fields, {}, {}) == []
