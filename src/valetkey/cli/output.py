"""What the CLI prints: Rich tables or JSON on stdout, ``error[code]: message`` on stderr."""

from __future__ import annotations

import enum
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from valetkey.errors import ValetkeyError

__all__ = [
    "Column",
    "Format",
    "FormatOption",
    "emit",
    "emit_fields",
    "error_json",
    "note",
    "report_error",
    "say",
    "short_time",
    "when",
]


class Format(enum.StrEnum):
    """How a command prints its data."""

    table = "table"
    json = "json"


FormatOption = Annotated[
    Format, typer.Option("--format", help="table (for people) or json (for scripts).")
]

#: A table column: its heading and how to get the cell's value from a row.
Column = tuple[str, Callable[[Mapping[str, Any]], Any]]


def stdout() -> Console:
    """A console on the current stdout (looked up per call, so tests can capture it)."""
    return Console(file=sys.stdout, highlight=False, soft_wrap=False)


def stderr() -> Console:
    return Console(file=sys.stderr, highlight=False, soft_wrap=True)


def cell(value: Any) -> str:
    """A value as table text: lists joined, None as an empty cell, objects as compact JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(cell(v) for v in value)
    if isinstance(value, Mapping):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    return str(value)


def field(name: str) -> Callable[[Mapping[str, Any]], Any]:
    return lambda row: row.get(name)


def when(name: str) -> Callable[[Mapping[str, Any]], Any]:
    """A time cell: ISO text or epoch milliseconds, shown as ``YYYY-MM-DD HH:MM:SS`` UTC."""

    def get(row: Mapping[str, Any]) -> Any:
        return short_time(row.get(name))

    return get


def short_time(value: Any) -> Any:
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            moment = datetime.fromtimestamp(value / 1000, UTC)
        elif isinstance(value, str):
            moment = datetime.fromisoformat(value).astimezone(UTC)
        else:
            return value
    except (ValueError, OverflowError, OSError):
        return value
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()


def emit(
    data: Sequence[Mapping[str, Any]],
    columns: Sequence[Column],
    fmt: Format,
    *,
    title: str | None = None,
    empty: str = "nothing yet",
) -> None:
    """Print rows as a table, or the raw rows as JSON."""
    if fmt is Format.json:
        emit_json(list(data))
        return
    if not data:
        stderr().print(f"({empty})", markup=False)
        return
    cells = [[cell(get(row)) for _, get in columns] for row in data]
    table = Table(title=title, title_justify="left")
    for heading, _ in columns:
        table.add_column(heading, overflow="fold")
    for line in cells:
        table.add_row(*line)
    console = stdout()
    natural = Measurement.get(console, console.options.update_width(1 << 16), table).maximum
    if natural <= console.width:
        console.print(table)
        return
    # Too wide for the terminal: one block per row rather than cells cut into fragments
    # (a uid or an id in two pieces cannot be copied).
    _records([heading for heading, _ in columns], cells, title)


def _records(headings: Sequence[str], cells: Sequence[Sequence[str]], title: str | None) -> None:
    """Rows as blocks: the first cell alone, then ``heading  value`` lines, never cut."""
    if title:
        say(title)
    width = max(len(h) for h in headings[1:]) if len(headings) > 1 else 0
    for i, line in enumerate(cells):
        if i:
            say("")
        say(line[0])
        for heading, value in zip(headings[1:], line[1:], strict=True):
            if value:
                say(f"  {heading:<{width}}  {value}")


def emit_fields(
    data: Mapping[str, Any],
    fmt: Format,
    *,
    title: str | None = None,
    fields: Sequence[str] | None = None,
) -> None:
    """Print one record as a two-column table (field, value), or as JSON."""
    if fmt is Format.json:
        emit_json(dict(data))
        return
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for name in fields or list(data):
        if name in data:
            table.add_row(name, cell(data[name]))
    stdout().print(table)


def say(message: str) -> None:
    """A plain line on stdout, never wrapped (paths stay copyable)."""
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def note(message: str) -> None:
    """A line for people, on stderr (stdout stays clean for pipes)."""
    stderr().print(message, markup=False)


def hint_of(err: ValetkeyError) -> str | None:
    """What to do about ``err``: the CLI's own hint, the broker's (``hint`` on the wire), or the
    class's remedy."""
    own = getattr(err, "hint", None)
    sent = err.details.get("hint")
    for candidate in (own, sent, err.remedy):
        if isinstance(candidate, str) and candidate:
            return candidate
    return None


def error_json(err: ValetkeyError) -> dict[str, Any]:
    """The stable JSON shape of a refusal: ``{"error": {"code", "message", "hint", ...}}``.

    ``code``, ``message`` and ``hint`` (null when there is none) are always there; the
    details the broker sent (``field``, ``environments``, …) follow. No secret is in any.
    """
    body: dict[str, Any] = {"code": err.code, "message": err.message, "hint": hint_of(err)}
    for key, value in err.details.items():
        body.setdefault(key, value)
    return {"error": body}


def report_error(err: ValetkeyError, fmt: Format = Format.table) -> None:
    """``error[code]: message``, then the remedy if the error has one, on stderr; with
    ``--format json``, :func:`error_json` on stderr instead."""
    if fmt is Format.json:
        sys.stderr.write(json.dumps(error_json(err), default=str) + "\n")
        sys.stderr.flush()
        return
    sys.stderr.write(f"error[{err.code}]: {err.message}\n")
    remedy = hint_of(err)
    if remedy:
        sys.stderr.write(f"  hint: {remedy}\n")
    sys.stderr.flush()
