"""Turning command-line text into request values, with typed refusals naming the option."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from valetkey.cli.errors import CliError
from valetkey.errors import InvalidRequest

__all__ = ["parse_claims", "parse_data", "parse_list", "parse_when"]

_CLAIM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]*$")
_RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
#: Refuse --data files larger than this (the broker refuses 1 MiB bodies anyway).
MAX_DATA_BYTES = 1 << 20


def parse_data(
    value: str, *, stdin: TextIO | None = None, option: str = "--data"
) -> dict[str, Any]:
    """``--data``: inline JSON, ``@path`` (a file) or ``@-`` (stdin); it must be a JSON object."""
    source = "inline JSON"
    text = value
    if value.startswith("@"):
        target = value[1:]
        if target == "-":
            source = "stdin"
            text = (stdin or sys.stdin).read(MAX_DATA_BYTES + 1)
        else:
            source = target
            try:
                with open(Path(target).expanduser(), encoding="utf-8") as fh:
                    text = fh.read(MAX_DATA_BYTES + 1)
            except OSError as exc:
                raise CliError(
                    f"{option}: cannot read {target} ({exc.strerror})", field=option
                ) from exc
            except UnicodeDecodeError as exc:
                raise InvalidRequest(f"{option}: {target} is not UTF-8 text", field=option) from exc
        if len(text) > MAX_DATA_BYTES:
            raise InvalidRequest(
                f"{option}: {source} is larger than {MAX_DATA_BYTES} bytes", field=option
            )
    try:
        data = json.loads(text)
    except ValueError as exc:
        # Never echo the text: it may hold a secret.
        line = getattr(exc, "lineno", None)
        where = f" (line {line}, column {getattr(exc, 'colno', '?')})" if line else ""
        raise InvalidRequest(f"{option}: {source} is not valid JSON{where}", field=option) from exc
    if not isinstance(data, dict):
        raise InvalidRequest(f"{option}: {source} must be a JSON object {{...}}", field=option)
    return data


def parse_list(values: Iterable[str] | None) -> list[str] | None:
    """Comma-separated and/or repeated option values, stripped, de-duplicated, order kept."""
    if values is None:
        return None
    items: list[str] = []
    for value in values:
        for part in value.split(","):
            part = part.strip()
            if part and part not in items:
                items.append(part)
    return items


def parse_claims(values: Iterable[str] | None) -> dict[str, str]:
    """``--claim name=value`` (repeatable) to a mapping; a name given twice is refused."""
    claims: dict[str, str] = {}
    for raw in values or ():
        name, sep, value = raw.partition("=")
        name = name.strip()
        if not sep or not _CLAIM_NAME.match(name) or not value:
            raise InvalidRequest(
                f"--claim {raw!r} must look like name=value (for example repository_id=123456)",
                field="claim",
            )
        if name in claims:
            raise InvalidRequest(f"--claim {name} is given twice", field="claim")
        claims[name] = value
    return claims


def parse_when(value: str | None, now: datetime, option: str) -> datetime | None:
    """An ISO 8601 time (UTC if no offset), or a span back from ``now``: 90s, 15m, 1h, 2d, 1w."""
    if value is None:
        return None
    text = value.strip()
    match = _RELATIVE.match(text)
    if match:
        return now - timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError as exc:
        raise InvalidRequest(
            f"{option} must be an ISO time (2026-11-25T10:00:00Z) or a span like 1h or 2d",
            field=option,
        ) from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=now.tzinfo)
    return when
