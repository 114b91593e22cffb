"""How long each value the broker accepts and stores may be: one table for the edge and the columns.

Every value that arrives in a request (a path parameter, a query parameter, a body field, each
item of a list and the number of items) is checked against one of these limits before it is
looked up, cached, stored or audited (``check_text``, ``check_list``), and the columns that hold
such values (``valetkey.store.tables``) are declared with the same constants, so a value the edge
accepts always fits its column.

Lengths count characters (Unicode code points), as Python's ``len`` and PostgreSQL's
``varchar(n)`` do; SQLite does not enforce a length, so the edge check is what bounds it there.
Printable means ``str.isprintable``: no NUL, CR, LF, TAB or other control or format
character and no lone surrogate (PostgreSQL refuses NUL and surrogates in text, and CR/LF in a
value invite header and log injection).

This module imports only ``valetkey.errors``: the store and the server both depend on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from valetkey.errors import InvalidRequest

__all__ = [
    "ACTION",
    "ACTOR",
    "AUDIENCE",
    "AUDIT_DETAILS",
    "AUDIT_SUBJECT",
    "DECISION",
    "ERROR",
    "ID",
    "ISSUER",
    "ITEMS",
    "NAME",
    "PATH_PARAMS",
    "QUERY_VALUE",
    "REASON",
    "SCOPE",
    "SCOPES_COUNT",
    "SLUG",
    "SUBJECT_ID",
    "TOKEN",
    "UID",
    "UID_PART",
    "URL",
    "check_list",
    "check_path_params",
    "check_text",
]

#: An opaque id (``con_…``, ``prj_…``, ``tb_…``, ``at_…``: a prefix and 20 hex digits) or a team id.
ID = 40
#: A slug: project, environment, member name.
SLUG = 40
#: One half of a connector uid (service, name), and a provider type.
UID_PART = 64
#: A connector uid ``service/name`` (64 + 1 + 64), or a connector's opaque id.
UID = 130
#: A display name or label.
NAME = 200
#: A subject's id: a user id, a jwt-bearer ``sub``, an installation id.
SUBJECT_ID = 200
#: One OAuth scope token.
SCOPE = 200
#: How many scopes (or resources, environments, subjects, algorithms) one list may hold.
SCOPES_COUNT = 100
#: The same, for any list a request carries.
ITEMS = SCOPES_COUNT
#: A URL the broker keeps (return URL, webhook, login hint).
URL = 2000
#: A trust binding's issuer and audience.
ISSUER = 500
AUDIENCE = 500
#: A credential carried in a request (bearer, access or refresh token, subject token).
TOKEN = 16384
#: Any query parameter's value.
QUERY_VALUE = 2000
#: A short error or outcome stored with a record.
ERROR = 300

# The audit table's columns (an event built by the broker from bounded values fits them; the
# audit writer clips what does not, see valetkey.core.audit).
ACTOR = 300
ACTION = 64
DECISION = 16
REASON = 64
AUDIT_SUBJECT = 300
#: Characters of canonical JSON an event's details may take before the writer clips them.
AUDIT_DETAILS = 16384

#: The limit of each path parameter the API declares, by name; a name not listed gets ``NAME``.
PATH_PARAMS: Mapping[str, int] = {
    "uid": UID,
    "project": SLUG,
    "binding_id": ID,
    "member_id": ID,
    "token_id": ID,
}


def check_text(value: Any, field: str, limit: int, *, allow_empty: bool = False) -> str:
    """Return ``value`` if it is a string of at most ``limit`` printable characters, else raise.

    The refusal is ``invalid_request`` naming ``field``; it never echoes the value.
    """
    if (
        not isinstance(value, str)
        or len(value) > limit
        or not (value or allow_empty)
        or not value.isprintable()
    ):
        raise InvalidRequest(
            f"{field} must be a non-empty string of at most {limit} printable characters",
            field=field,
        )
    return value


def check_list(value: Any, field: str, item_limit: int, *, count: int = ITEMS) -> list[str]:
    """Return ``value`` if it is a list of at most ``count`` strings, each as ``check_text``, else raise."""
    if not isinstance(value, list) or len(value) > count:
        raise InvalidRequest(f"{field} must be a list of at most {count} strings", field=field)
    for item in value:
        check_text(item, field, item_limit)
    return value


def check_path_params(params: Mapping[str, Any]) -> None:
    """Bound every path parameter of a request (``PATH_PARAMS``; ``NAME`` for any other name)."""
    for name, value in params.items():
        check_text(value, name, PATH_PARAMS.get(name, NAME))
