"""Merging ``KEY=value`` lines into a ``.env`` file without disturbing the others, mode 0600."""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path

__all__ = ["merge_dotenv", "render_value", "write_private"]

_ASSIGNMENT = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=")
_PLAIN = re.compile(r"^[A-Za-z0-9_./:@%+,=-]*$")


def render_value(value: str) -> str:
    """A value as ``.env`` parsers read it back unchanged: bare if plain, else quoted."""
    if _PLAIN.match(value):
        return value
    if "\n" not in value and "\r" not in value:
        for quote in ("'", '"'):
            if quote not in value:
                return f"{quote}{value}{quote}"
    raise ValueError("the value cannot be written to a .env file unchanged")


def merge_dotenv(text: str, values: Mapping[str, str]) -> str:
    """``text`` with each key of ``values`` set: replaced in place where assigned, else appended.

    Every other line (comments, blank lines, other keys) is kept as it was. A key
    assigned several times keeps only its first line, now with the new value.
    """
    lines = text.splitlines()
    done: set[str] = set()
    out: list[str] = []
    for line in lines:
        match = _ASSIGNMENT.match(line)
        key = match.group(1) if match else None
        if key is not None and key in values:
            if key in done:
                continue
            out.append(f"{key}={render_value(values[key])}")
            done.add(key)
        else:
            out.append(line)
    missing = [k for k in values if k not in done]
    if missing:
        if out and out[-1].strip():
            out.append("")
        out.append(
            "# Valetkey development identity (valetkey env pull); keep this file out of git."
        )
        out.extend(f"{k}={render_value(values[k])}" for k in missing)
    return "\n".join(out) + "\n"


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, the file readable by its owner only (0600)."""
    path = path.resolve() if path.is_symlink() else path
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.chmod(path, 0o600)
