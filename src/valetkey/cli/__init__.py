"""The ``valetkey`` command (Typer + Rich). It talks to the broker over HTTP, except
``serve`` (which runs it) and ``keys rotate`` (which works on the key file and the store)."""

from __future__ import annotations

__all__ = ["main"]


def main() -> None:
    """The console entry point declared in pyproject.toml."""
    from valetkey.cli.app import app

    app()
