"""Parsing the Connect API's request bodies: strict, with an error naming the field.

Hand-written rather than a pydantic model on purpose: the token endpoint is the hot path,
and every refusal must carry its own code and the exact field.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from valetkey.core import limits
from valetkey.core.models import SUBJECT_TYPES, Subject, TokenRequest, check_issuer
from valetkey.errors import InvalidRequest, UnsupportedOperation

_SCOPE = re.compile(rf"^[\x21\x23-\x5B\x5D-\x7E]{{1,{limits.SCOPE}}}$")  # RFC 6749 §3.3 scope-token
_TOKEN_FIELDS = frozenset(
    {
        "subject",
        "scopes",
        "installationId",
        "resources",
        "audience",
        "authorizationDetails",
        "validityBufferMs",
    }
)
#: ``validityBufferMs`` is the TypeScript SDK's own cache margin, sent along in the body: bounded
#: (a day at most) and otherwise ignored, since the broker's cache has its own refresh horizon.
MAX_VALIDITY_BUFFER_MS = 86_400_000
_MAX_ITEMS = limits.SCOPES_COUNT
#: Deepest JSON nesting a request body may have (a token request needs 3).
MAX_JSON_DEPTH = 32


def parse_json_object(body: bytes) -> dict[str, Any]:
    if not body:
        return {}
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest("the body is not valid JSON") from exc
    except RecursionError as exc:  # ~1000 nested arrays/objects exhaust the decoder's stack
        raise InvalidRequest(f"the body is nested deeper than {MAX_JSON_DEPTH} levels") from exc
    if not isinstance(data, dict):
        raise InvalidRequest("the body must be a JSON object")
    check_depth(data)
    return data


def check_depth(data: Any, limit: int = MAX_JSON_DEPTH) -> None:
    """Refuse JSON nested deeper than ``limit`` (iteratively), before recursive code walks it."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            raise InvalidRequest(f"the body is nested deeper than {limit} levels")
        stack.extend((child, depth + 1) for child in children)


def _text(value: Any, field: str, *, max_len: int = limits.SUBJECT_ID) -> str:
    return limits.check_text(value, field, max_len)


def parse_subject(value: Any, field: str = "subject") -> Subject:
    if not isinstance(value, Mapping):
        raise InvalidRequest(f"{field} must be an object with a type", field=field)
    kind = value.get("type")
    if kind not in SUBJECT_TYPES:
        raise InvalidRequest(
            f"{field}.type must be one of {', '.join(SUBJECT_TYPES)}", field=f"{field}.type"
        )
    if kind == "app":
        extra = set(value) - {"type"}
        if extra:
            raise InvalidRequest(f"an app subject takes no {', '.join(sorted(extra))}", field=field)
        return Subject("app")
    if kind == "user":
        extra = set(value) - {"type", "id", "issuer"}
        if extra:
            raise InvalidRequest(f"a user subject takes no {', '.join(sorted(extra))}", field=field)
        user_id = _text(value.get("id"), f"{field}.id")
        # Vercel Connect's clients send the issuer as ``subject.issuer`` (absent when None).
        issuer = value.get("issuer")
        if issuer is not None:
            issuer = check_issuer(issuer, f"{field}.issuer")
        return Subject("user", user_id, issuer)
    if kind == "jwt-bearer":
        extra = set(value) - {"type", "sub", "iss", "aud", "additionalClaims"}
        if extra:
            raise InvalidRequest(
                f"a jwt-bearer subject takes no {', '.join(sorted(extra))}", field=field
            )
        return Subject("jwt-bearer", _text(value.get("sub"), f"{field}.sub"))
    extra = set(value) - {"type", "token", "tokenType"}
    if extra:
        raise InvalidRequest(f"a token subject takes no {', '.join(sorted(extra))}", field=field)
    token = _text(value.get("token"), f"{field}.token", max_len=limits.TOKEN)
    return Subject("token", hashlib.sha256(token.encode()).hexdigest()[:32])


_ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 - a URN


def _subject_extras(value: Mapping[str, Any], subject: Subject) -> dict[str, Any]:
    """The parts of a jwt-bearer or token subject that are not its identity."""
    if subject.type == "token":
        token_type = value.get("tokenType", _ACCESS_TOKEN_TYPE)
        if (
            not isinstance(token_type, str)
            or not token_type.startswith("urn:")
            or len(token_type) > limits.NAME
            or not token_type.isprintable()
        ):
            raise InvalidRequest(
                "subject.tokenType must be an RFC 8693 token type URN", field="subject.tokenType"
            )
        return {"subject_token": value["token"], "subject_token_type": token_type}
    if subject.type == "jwt-bearer":
        claims: list[tuple[str, str]] = []
        for name in ("iss", "aud"):
            if value.get(name) is not None:
                claims.append((name, _text(value[name], f"subject.{name}", max_len=limits.URL)))
        additional = value.get("additionalClaims")
        if additional is not None:
            if not isinstance(additional, Mapping) or len(additional) > 32:
                raise InvalidRequest(
                    "subject.additionalClaims must be an object of at most 32 claims",
                    field="subject.additionalClaims",
                )
            reserved = {"iss", "sub", "aud", "exp", "iat", "nbf", "jti"} & set(additional)
            if reserved:
                raise InvalidRequest(
                    f"subject.additionalClaims may not set {', '.join(sorted(reserved))}",
                    field="subject.additionalClaims",
                )
            encoded = json.dumps(additional, sort_keys=True, separators=(",", ":"))
            if len(encoded) > limits.TOKEN:
                raise InvalidRequest(
                    f"subject.additionalClaims must encode to at most {limits.TOKEN} characters",
                    field="subject.additionalClaims",
                )
            claims.append(("additionalClaims", encoded))
        return {"assertion": tuple(claims)}
    return {}


def _string_list(value: Any, field: str, pattern: re.Pattern[str] | None = None) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or len(value) > _MAX_ITEMS:
        raise InvalidRequest(f"{field} must be a list of at most {_MAX_ITEMS} strings", field=field)
    items: set[str] = set()
    for item in value:
        if not isinstance(item, str) or (pattern is not None and not pattern.fullmatch(item)):
            raise InvalidRequest(f"{field} holds an invalid value", field=field)
        if pattern is None:
            _text(item, field, max_len=limits.URL)
        items.add(item)
    return tuple(sorted(items))


def check_validity_buffer(value: Any) -> None:
    """``validityBufferMs``: absent, or a whole number of milliseconds from 0 to a day."""
    if value is None:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not 0 <= value <= MAX_VALIDITY_BUFFER_MS
    ):
        raise InvalidRequest(
            f"validityBufferMs must be a whole number of milliseconds from 0 to {MAX_VALIDITY_BUFFER_MS}",
            field="validityBufferMs",
        )


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
    check_validity_buffer(data.get("validityBufferMs"))
    details = data.get("authorizationDetails")
    if details is not None and (
        not isinstance(details, list)
        or len(details) > _MAX_ITEMS
        or not all(isinstance(d, Mapping) and isinstance(d.get("type"), str) for d in details)
    ):
        raise InvalidRequest(
            f"authorizationDetails must be a list of at most {_MAX_ITEMS} objects with a type",
            field="authorizationDetails",
        )
    if details:
        raise UnsupportedOperation(
            "authorizationDetails (RFC 9396) is not supported by this broker's connectors yet",
            field="authorizationDetails",
        )
    return TokenRequest(
        subject,
        scopes,
        installation,
        resources,
        audience,
        **_subject_extras(data["subject"], subject),
    )
