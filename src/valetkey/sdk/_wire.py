"""The Connect API wire format: paths, error envelopes, and typed response parsing."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx2

from valetkey.error_codes import error_for_code
from valetkey.errors import BrokerUnavailable, InvalidBrokerResponse, InvalidRequest, ValetkeyError
from valetkey.sdk.types import (
    AuthorizationResponse,
    Confirmation,
    ConnectorMetadata,
    ConnectorRef,
    RevokeResult,
    TokenResponse,
)

_MAX_DATETIME = datetime.max.replace(tzinfo=UTC)


def check_uid(uid: object) -> str:
    """Return ``uid`` if it is a non-empty string."""
    if not isinstance(uid, str) or not uid:
        raise InvalidRequest("a connector uid is a string like 'slack/mybot'", field="uid")
    return uid


def token_path(uid: str) -> str:
    return f"/v1/connect/token/{quote(uid, safe='')}"


def authorize_path(uid: str) -> str:
    return f"/v1/connect/authorize/{quote(uid, safe='')}"


def connector_path(uid: str) -> str:
    return f"/v1/connect/connectors/{quote(uid, safe='')}"


def tokens_path(uid: str) -> str:
    return f"/v1/connect/connectors/{quote(uid, safe='')}/tokens"


def unavailable(base_url: str, exc: httpx2.HTTPError) -> BrokerUnavailable:
    """The error for a request that never got an HTTP answer (credentials in the URL dropped)."""
    shown = str(httpx2.URL(base_url).copy_with(username=None, password=None))
    return BrokerUnavailable(
        f"could not reach the broker at {shown} ({type(exc).__name__}); is `valetkey serve` "
        "running, and is VALETKEY_URL (or the .env's) its URL?",
        base_url=shown,
    )


#: A refusal's text that names a Connect route, and the SDK call a Python app makes instead.
_ROUTE_CALLS = (
    (re.compile(r"start consent with POST /v1/connect/authorize/(\S+)"), "start_authorization"),
)


def _sdk_wording(code: str, text: str, details: dict[str, Any]) -> str:
    """The broker's words for every client, with an HTTP route named as the SDK call to make."""
    if code != "user_authorization_required":
        return text
    user = details.get("user")
    if not isinstance(user, str):
        return text
    for pattern, call in _ROUTE_CALLS:
        found = pattern.search(text)
        if found:
            named = f"start consent with {call}({found.group(1)!r}, user={user!r})"
            return text[: found.start()] + named + text[found.end() :]
    return text


def error_from_response(response: httpx2.Response) -> ValetkeyError:
    """Map a non-2xx answer to the error class its wire ``code`` names."""
    status = response.status_code
    try:
        data = response.json()
    except ValueError:
        data = None
    envelope = data.get("error") if isinstance(data, dict) else None
    if isinstance(envelope, dict) and isinstance(envelope.get("code"), str):
        code: str = envelope["code"]
        message = envelope.get("message")
        details = {k: v for k, v in envelope.items() if k not in ("code", "message")}
        text = message if isinstance(message, str) and message else response.reason_phrase
        return error_for_code(code, _sdk_wording(code, text or code, details), status, details)
    if isinstance(data, dict) and isinstance(envelope, str) and envelope:
        # OAuth-shaped body: {"error": "invalid_grant", "error_description": "..."}.
        description = data.get("error_description")
        text = description if isinstance(description, str) and description else envelope
        return error_for_code(envelope, text, status, {})
    if status >= 500:
        return BrokerUnavailable(f"the broker answered HTTP {status} without an error body")
    return error_for_code(
        f"http_{status}", f"the broker answered HTTP {status} without an error body", status, {}
    )


def json_object(response: httpx2.Response, what: str) -> dict[str, Any]:
    """The body of a 2xx answer as a JSON object, or a typed error."""
    if not response.is_success:
        raise error_from_response(response)
    try:
        data = response.json()
    except ValueError as exc:
        raise InvalidBrokerResponse(f"the broker's {what} response is not JSON") from exc
    if not isinstance(data, dict):
        raise InvalidBrokerResponse(f"the broker's {what} response is not a JSON object")
    return data


def _malformed(what: str, name: str) -> InvalidBrokerResponse:
    return InvalidBrokerResponse(f"the broker's {what} response has no valid '{name}'", field=name)


def _str(data: Mapping[str, Any], name: str, what: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise _malformed(what, name)
    return value


def _opt_str(data: Mapping[str, Any], name: str, what: str) -> str | None:
    value = data.get(name)
    if value is not None and not isinstance(value, str):
        raise _malformed(what, name)
    return value


def _opt_object(data: Mapping[str, Any], name: str, what: str) -> dict[str, Any] | None:
    value = data.get(name)
    if value is not None and not isinstance(value, dict):
        raise _malformed(what, name)
    return value


def _epoch_ms(data: Mapping[str, Any], name: str, what: str) -> float | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise _malformed(what, name)
    return float(value) / 1000.0


def to_datetime(seconds: float | None) -> datetime | None:
    """Epoch seconds to an aware UTC datetime; beyond what datetime holds, ``datetime.max``."""
    if seconds is None:
        return None
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return _MAX_DATETIME


def connector_ref(value: object, what: str) -> ConnectorRef:
    if not isinstance(value, dict):
        raise _malformed(what, "connector")
    return ConnectorRef(
        id=_str(value, "id", what),
        uid=_str(value, "uid", what),
        type=_str(value, "type", what),
        name=_opt_str(value, "name", what),
        service=_opt_str(value, "service", what),
    )


def token_response(data: Mapping[str, Any]) -> tuple[TokenResponse, float]:
    """Parse a token answer; also return its expiry in epoch seconds (``inf``: never)."""
    what = "token"
    expires = _epoch_ms(data, "expiresAt", what)
    response = TokenResponse(
        token=_str(data, "token", what),
        expires_at=to_datetime(expires),
        token_id=_opt_str(data, "tokenId", what),
        connector=connector_ref(data.get("connector"), what),
        installation_id=_opt_str(data, "installationId", what),
        metadata=_opt_object(data, "metadata", what),
    )
    return response, math.inf if expires is None else expires


def authorization_response(data: Mapping[str, Any]) -> AuthorizationResponse:
    what = "authorization"
    connector = data.get("connector")
    interval = data.get("interval")
    return AuthorizationResponse(
        url=_str(data, "url", what),
        request=_str(data, "request", what),
        verifier=_str(data, "verifier", what),
        device_code=_opt_str(data, "deviceCode", what),
        expires_at=to_datetime(_epoch_ms(data, "expiresAt", what)),
        connector=None if connector is None else connector_ref(connector, what),
        interval=interval if isinstance(interval, int) and not isinstance(interval, bool) else None,
    )


def confirmation(data: dict[str, Any]) -> Confirmation:
    what = "confirmation"
    return Confirmation(
        request=_str(data, "request", what),
        status=_str(data, "status", what),
        user=_str(data, "user", what),
        issuer=_opt_str(data, "issuer", what),
    )


def confirm_path(uid: str) -> str:
    return authorize_path(uid) + "/confirm"


def status_path(uid: str) -> str:
    return authorize_path(uid) + "/status"


_REVOKE_FIELDS = {
    "tokensFound": "tokens_found",
    "deleted": "deleted",
    "providerRevoked": "provider_revoked",
    "providerSkipped": "provider_skipped",
    "providerFailed": "provider_failed",
}


def revoke_result(data: Mapping[str, Any]) -> RevokeResult:
    counts: dict[str, int] = {}
    for wire, attr in _REVOKE_FIELDS.items():
        value = data.get(wire)
        if isinstance(value, bool) or not isinstance(value, int):
            raise _malformed("revocation", wire)
        counts[attr] = value
    extra = {k: v for k, v in data.items() if k not in _REVOKE_FIELDS}
    return RevokeResult(extra=extra, **counts)


_METADATA_FIELDS = ("id", "uid", "type", "name", "service", "createdAt", "updatedAt", "data",
                    "capabilities")


def connector_metadata(data: Mapping[str, Any]) -> ConnectorMetadata:
    what = "connector"
    return ConnectorMetadata(
        id=_str(data, "id", what),
        uid=_str(data, "uid", what),
        type=_str(data, "type", what),
        name=_opt_str(data, "name", what),
        service=_opt_str(data, "service", what),
        created_at=to_datetime(_epoch_ms(data, "createdAt", what)),
        updated_at=to_datetime(_epoch_ms(data, "updatedAt", what)),
        data=_opt_object(data, "data", what) or {},
        capabilities=_opt_object(data, "capabilities", what) or {},
        extra={k: v for k, v in data.items() if k not in _METADATA_FIELDS},
    )
