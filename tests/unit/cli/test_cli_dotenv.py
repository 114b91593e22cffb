"""Merging the development identity into a .env file."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from valetkey.cli.dotenv import merge_dotenv, render_value, write_private
from valetkey.sdk.identity import parse_dotenv

VALUES = {"VALETKEY_URL": "http://127.0.0.1:8787", "VALETKEY_TOKEN": "eyJ.eyJ.sig"}


def test_merge_replaces_in_place_and_keeps_other_lines() -> None:
    """Assigned keys are replaced where they stand (export form too); all other lines stay."""
    text = "# top\nexport VALETKEY_TOKEN=old\n\nOTHER='x y'  \nVALETKEY_TOKEN=dup\n"
    merged = merge_dotenv(text, VALUES)
    assert merged.splitlines() == [
        "# top",
        "VALETKEY_TOKEN=eyJ.eyJ.sig",
        "",
        "OTHER='x y'  ",
        "",
        "# Valetkey development identity (valetkey env pull); keep this file out of git.",
        "VALETKEY_URL=http://127.0.0.1:8787",
    ]


def test_merge_into_nothing() -> None:
    """An absent .env becomes one holding just the values."""
    assert parse_dotenv(merge_dotenv("", VALUES)) == VALUES


def test_merge_is_idempotent() -> None:
    """Pulling twice leaves the file as after the first pull."""
    once = merge_dotenv("A=1\n", VALUES)
    assert merge_dotenv(once, VALUES) == once


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=40))
def test_rendered_values_read_back_unchanged(value: str) -> None:
    """Whatever render_value writes, the SDK's .env parser reads back as the same value."""
    try:
        line = f"KEY={render_value(value)}"
    except ValueError:
        assert "'" in value
        assert '"' in value
        return
    assert parse_dotenv(line)["KEY"] == value


def test_newlines_are_refused() -> None:
    """A value with a newline cannot be written to a .env line."""
    with pytest.raises(ValueError, match="cannot"):
        render_value("a\nb")


def test_write_private_sets_0600_even_on_an_existing_file(tmp_path: Path) -> None:
    """The file ends up readable by its owner only, also when it existed with a wider mode."""
    path = tmp_path / ".env"
    path.write_text("A=1\n")
    path.chmod(0o644)
    write_private(path, "A=2\n")
    assert path.read_text() == "A=2\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [".env"]
