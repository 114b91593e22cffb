"""What the CLI prints for refusals and data."""

from __future__ import annotations

import json

import pytest

from valetkey.cli.errors import CliError
from valetkey.cli.output import Format, cell, emit, field, report_error, short_time
from valetkey.errors import ConnectorLinked, NotFound


def test_error_line_and_class_remedy(capsys: pytest.CaptureFixture[str]) -> None:
    """A refusal prints error[code]: message, then the class's remedy, on stderr only."""
    report_error(ConnectorLinked("connector a/b is attached to 1 project(s)"))
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        "error[connector_linked]: connector a/b is attached to 1 project(s)\n"
        "  hint: Detach it first, or pass --disconnect-all.\n"
    )


def test_error_without_remedy_and_instance_hint(capsys: pytest.CaptureFixture[str]) -> None:
    """An error without remedy prints one line; a CLI error's own hint is shown."""
    report_error(NotFound("no connector a/b"))
    report_error(CliError("no key file", hint="Point --data-dir at it."))
    assert capsys.readouterr().err == (
        "error[not_found]: no connector a/b\n"
        "error[cli_error]: no key file\n"
        "  hint: Point --data-dir at it.\n"
    )


def test_json_format_prints_the_rows_verbatim(capsys: pytest.CaptureFixture[str]) -> None:
    """--format json prints exactly the data, whatever the columns."""
    rows = [{"slug": "a", "environments": ["development"], "extra": {"x": 1}}]
    emit(rows, [("slug", field("slug"))], Format.json)
    assert json.loads(capsys.readouterr().out) == rows


def test_table_format_renders_cells(capsys: pytest.CaptureFixture[str]) -> None:
    """The table shows headings and values; lists are joined."""
    emit(
        [{"slug": "agent", "environments": ["development", "preview"]}],
        [("slug", field("slug")), ("environments", field("environments"))],
        Format.table,
    )
    out = capsys.readouterr().out
    assert "agent" in out
    assert "development, preview" in out


def test_cells_and_times() -> None:
    """None is empty, booleans read yes/no, epoch milliseconds and ISO times show as UTC seconds."""
    assert cell(None) == ""
    assert cell(True) == "yes"
    assert cell({"b": 1, "a": 2}) == '{"a":2,"b":1}'
    assert short_time(1795611523539) == "2026-11-25 12:58:43"
    assert short_time("2026-11-25T12:58:42.879677+00:00") == "2026-11-25 12:58:42"
    assert short_time("not a time") == "not a time"
