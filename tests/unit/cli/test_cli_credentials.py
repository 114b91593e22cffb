"""Where the CLI finds its member credential."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from valetkey.cli.broker import DEFAULT_URL, find_credentials, uid_path
from valetkey.cli.errors import CredentialsNotFound
from valetkey.errors import InvalidRequest

TOKEN = "vk_pt_" + "a" * 43


def write_cli_json(folder: Path, url: str = "http://broker:9000", token: str = TOKEN) -> None:
    (folder / "cli.json").write_text(json.dumps({"url": url, "token": token}))


def test_environment_wins(tmp_path: Path) -> None:
    """VALETKEY_URL + VALETKEY_API_TOKEN are used even when cli.json exists."""
    write_cli_json(tmp_path, token="vk_pt_other")
    found = find_credentials(
        tmp_path, {"VALETKEY_URL": "https://vk.example/", "VALETKEY_API_TOKEN": TOKEN}
    )
    assert (found.url, found.token, found.source) == (
        "https://vk.example",
        TOKEN,
        "VALETKEY_API_TOKEN",
    )


def test_token_without_url_takes_the_file_url_or_the_default(tmp_path: Path) -> None:
    """VALETKEY_API_TOKEN alone goes to cli.json's URL, else the local default."""
    assert find_credentials(tmp_path, {"VALETKEY_API_TOKEN": TOKEN}).url == DEFAULT_URL
    write_cli_json(tmp_path)
    assert find_credentials(tmp_path, {"VALETKEY_API_TOKEN": TOKEN}).url == "http://broker:9000"


def test_cli_json_is_the_fallback(tmp_path: Path) -> None:
    """Without the variables, cli.json gives both URL and token; a lone VALETKEY_URL is ignored."""
    write_cli_json(tmp_path)
    found = find_credentials(tmp_path, {"VALETKEY_URL": "http://elsewhere"})
    assert (found.url, found.token, found.source) == (
        "http://broker:9000",
        TOKEN,
        str(tmp_path / "cli.json"),
    )


def test_nothing_found_names_both_options(tmp_path: Path) -> None:
    """The refusal names the variables and the cli.json path."""
    with pytest.raises(CredentialsNotFound) as caught:
        find_credentials(tmp_path, {})
    hint = caught.value.hint or ""
    assert "VALETKEY_API_TOKEN" in hint
    assert "VALETKEY_URL" in hint
    assert str(tmp_path / "cli.json") in hint


def test_unreadable_cli_json_is_a_clean_error(tmp_path: Path) -> None:
    """A corrupt cli.json is refused with a clear error, not a traceback."""
    (tmp_path / "cli.json").write_text("{not json")
    with pytest.raises(CredentialsNotFound, match="not readable JSON"):
        find_credentials(tmp_path, {})


def test_token_is_not_in_repr(tmp_path: Path) -> None:
    """The credential never shows in a repr (logs, tracebacks)."""
    write_cli_json(tmp_path)
    assert TOKEN not in repr(find_credentials(tmp_path, {}))


def test_uid_path_checks_the_uid() -> None:
    """A uid keeps its slash in the path; anything but service/name is refused before a request."""
    assert uid_path("api-key/search") == "api-key/search"
    for bad in ("../../v1/members", "a/b/c", "noslash", "a/B"):
        with pytest.raises(InvalidRequest):
            uid_path(bad)
