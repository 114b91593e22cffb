"""Opaque, prefixed, random identifiers (``con_3f9c…``): the prefix says what a thing is."""

from __future__ import annotations

import secrets


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"
