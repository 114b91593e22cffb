"""Errors the CLI raises itself (before or around a broker call), each with a stable code."""

from __future__ import annotations

from typing import Any

from valetkey.errors import ValetkeyError

__all__ = [
    "CliError",
    "ConfirmationRequired",
    "CredentialsNotFound",
    "DatabaseUnreachable",
    "ProjectNotLinked",
    "UsageError",
]


class CliError(ValetkeyError):
    """A refusal by the CLI; ``hint`` (per instance) says what to do about it."""

    code = "cli_error"
    status = 400

    def __init__(self, message: str, *, hint: str | None = None, **details: Any) -> None:
        super().__init__(message, **details)
        self.hint = hint


class CredentialsNotFound(CliError):
    """No member credential for the management API was found."""

    code = "credentials_not_found"


class ProjectNotLinked(CliError):
    """This directory is not linked to a project."""

    code = "project_not_linked"


class DatabaseUnreachable(CliError):
    """The database named by --database-url / VALETKEY_DATABASE_URL does not answer."""

    code = "database_unreachable"


class UsageError(CliError):
    """The command line itself is wrong (a missing option, a bad value): exit code 2."""

    code = "usage_error"


class ConfirmationRequired(CliError):
    """A destructive command was not confirmed: no terminal to ask, and no ``--yes``."""

    code = "confirmation_required"
