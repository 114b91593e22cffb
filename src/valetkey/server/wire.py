"""Parsing the Connect API's request bodies: strict, with an error naming the field.

Hand-written rather than a pydantic model on purpose: the token endpoint is the hot path,
and every refusal must carry its own code and the exact field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from valetkey.core.models import SUBJECT_TYPES, Subject, TokenRequest
from valetkey.errors import InvalidRequest, UnsupportedOperation

_SCOPE = re.compile(r"^[\x21\x23-\x5B\x5D-\x7E]{1,200}$")  # RFC 6749 §3.3 scope-token
_TOKEN_FIELDS = frozenset({"subject", "scopes", "installationId", "resources", "audience", "authorizationDetails"})
_MAX_ITEMS = 100


def parse_json_object(body: bytes) -> dict[str, Any]:
    if not body:
        return {}
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest("the body is not valid JSON") from exc
    if not isinstance(data, dict):
        raise InvalidRequest("the body must be a JSON object")
    return data


def _text(value: Any, field: str, *, max_len: int = 200) -> str:
    if not isinstance(value, str) or not value or len(value) > max_len or not value.isprintable():
        raise InvalidRequest(f"{field} must be a non-empty string of at most {max_len} printable characters", field=field)
    return value


def parse_subject(value: Any, field: str = "subject") -> Subject:
    if not isinstance(value, Mapping):
        raise InvalidRequest(f"{field} must be an object with a type", field=field)
    kind = value.get("type")
    if kind not in SUBJECT_TYPES:
        raise InvalidRequest(f"{field}.type must be one of {', '.join(SUBJECT_TYPES)}", field=f"{field}.type")
    if kind == "app":
        extra = set(value) - {"type"}
        if extra:
            raise InvalidRequest(f"an app subject takes no {', '.join(sorted(extra))}", field=field)
        return Subject("app")
    if kind == "user":
        extra = set(value) - {"type", "id", "issuer"}
        if extra:
            raise InvalidRequest(f"a user subject takes no {', '.join(sorted(extra))}", field=field)
        return Subject("user", _text(value.get("id"), f"{field}.id"))
    if kind == "jwt-bearer":
        return Subject("jwt-bearer", _text(value.get("sub"), f"{field}.sub"))
    _text(value.get("token"), f"{field}.token", max_len=16384)
    return Subject("token")


def _string_list(value: Any, field: str, pattern: re.Pattern[str] | None = None) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or len(value) > _MAX_ITEMS:
        raise InvalidRequest(f"{field} must be a list of at most {_MAX_ITEMS} strings", field=field)
    items: set[str] = set()
    for item in value:
        if not isinstance(item, str) or (pattern is not None and not pattern.match(item)):
            raise InvalidRequest(f"{field} holds an invalid value", field=field)
        if pattern is None:
            _text(item, field, max_len=2000)
        items.add(item)
    return tuple(sorted(items))


def parse_token_request(data: Mapping[str, Any]) -> TokenRequest:
    """Normalize a token request: sorted, de-duplicated lists, so field order never matters."""
    unknown = set(data) - _TOKEN_FIELDS
    if unknown:
        name = sorted(unknown)[0]
        raise InvalidRequest(f"unknown field {name}", field=name)
    if "subject" not in data:
        raise InvalidRequest("subject is required", field="subject")
    subject = parse_subject(data["subject"])
    scopes: tuple[str, ...] | None = None
    if data.get("scopes") is not None:
        scopes = _string_list(data["scopes"], "scopes", _SCOPE)
        if scopes == ("*",):
            scopes = None
    resources = None
    if data.get("resources") is not None:
        resources = _string_list(data["resources"], "resources")
    installation = data.get("installationId")
    if installation is not None:
        installation = _text(installation, "installationId")
    audience = data.get("audience")
    if audience is not None:
        audiences = _string_list(audience, "audience")
        if len(audiences) > 1:
            raise UnsupportedOperation("a request may name one audience", field="audience")
        audience = audiences[0] if audiences else None
    details = data.get("authorizationDetails")
    if details:
        raise UnsupportedOperation(
            "authorizationDetails (RFC 9396) is not supported by this broker's connectors yet",
            field="authorizationDetails",
        )
    return TokenRequest(subject, scopes, installation, resources, audience)
