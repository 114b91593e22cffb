"""Asking the person at the terminal: confirmations for destructive commands, hidden input for
secrets. Without a terminal nothing is asked: a destructive command needs ``--yes``, and a missing
secret is left to the broker to refuse."""

from __future__ import annotations

import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import typer

from valetkey.cli.errors import ConfirmationRequired
from valetkey.core.providers import ConfigField

__all__ = ["confirm", "interactive", "prompt_secrets"]


def interactive() -> bool:
    """Whether a person can answer: stdin is a terminal."""
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):  # closed or replaced stdin
        return False


def confirm(yes: bool, question: str) -> None:
    """Go on when ``--yes`` was given or the person says yes; refuse without a terminal to ask."""
    if yes:
        return
    if not interactive():
        raise ConfirmationRequired(
            "this command needs confirmation, and stdin is not a terminal to ask on",
            hint="Pass --yes to confirm it.",
        )
    typer.confirm(question, abort=True, err=True)


def prompt_secrets(
    fields: tuple[ConfigField, ...], data: MutableMapping[str, Any], given: Mapping[str, Any]
) -> list[str]:
    """Ask, with hidden input, for each secret field ``data`` needs and does not have.

    Only on a terminal; multi-line secrets (PEM keys) are not asked for (give them in --data
    @file). Returns the names asked for. Never echoes a value.
    """
    if not interactive():
        return []
    asked: list[str] = []
    for spec in fields:
        if not spec.sensitive or spec.multiline or spec.name in given or not spec.needed(data):
            continue
        value = typer.prompt(f"{spec.name} ({spec.help}, hidden)", hide_input=True, err=True)
        data[spec.name] = value
        asked.append(spec.name)
    return asked
