"""What consent works with besides the service: the user codes of the device flow (RFC 8628),
the checks on the URLs an app hands in, the records ``ConsentService`` returns, and the
"consent needed" error the exchange and the consent service raise.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from valetkey.core.authorizations import PendingAuthorization
from valetkey.core.models import Connector, Identity
from valetkey.core.providers import AuthorizationCodeFlow, UserFlows
from valetkey.errors import (
    InstallationRequired,
    InvalidRequest,
    UnsupportedOperation,
    UserAuthorizationRequired,
)

_USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"  # RFC 8628 §6.1: no vowels, no look-alikes


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def new_user_code() -> str:
    return "".join(secrets.choice(_USER_CODE_ALPHABET) for _ in range(8))


def normalize_user_code(text: str) -> str:
    return "".join(ch for ch in text.upper() if ch.isalnum())


def display_user_code(code: str) -> str:
    return f"{code[:4]}-{code[4:]}"


@dataclass(frozen=True, slots=True)
class Started:
    authorization: PendingAuthorization
    url: str
    verifier: str = field(repr=False)
    user_code: str | None = None


@dataclass(frozen=True, slots=True)
class CallbackResult:
    """Where to send the browser, or a page to show it (``title``/``message``)."""

    redirect: str | None
    title: str
    message: str
    ok: bool
    authorization: PendingAuthorization | None = None


def check_return_url(url: str) -> str:
    """``https://``, or ``http://`` on localhost, 127.0.0.1, [::1] or ``*.localhost`` only."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    local = host in ("localhost", "127.0.0.1", "::1") or host.endswith(".localhost")
    if not host or len(url) > 2000 or parts.username or parts.password:
        raise InvalidRequest(
            "returnUrl must be an absolute URL without credentials", field="returnUrl"
        )
    if parts.scheme == "https" or (parts.scheme == "http" and local):
        return url
    raise InvalidRequest(
        "returnUrl must be https, or http on localhost, *.localhost or 127.0.0.1", field="returnUrl"
    )


def check_webhook_url(url: str) -> str:
    parts = urlsplit(url)
    if (
        parts.scheme != "https"
        or not parts.hostname
        or parts.username
        or parts.password
        or len(url) > 2000
    ):
        raise InvalidRequest("webhook must be an https URL without credentials", field="webhook")
    return url


def with_query(url: str, params: Mapping[str, str]) -> str:
    parts = urlsplit(url)
    query = parts.query + ("&" if parts.query else "") + urlencode(params)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def _consent_needed(
    connector: Connector, user_id: str, issuer: str | None = None
) -> UserAuthorizationRequired:
    err = UserAuthorizationRequired(
        f"user {user_id} has not authorized {connector.uid}; start consent with "
        f"POST /v1/connect/authorize/{connector.uid}",
        connector=connector.uid,
        user=user_id,
        authorizeUrl=f"/v1/connect/authorize/{connector.uid}",
    )
    if issuer is not None:
        err.details["issuer"] = issuer
    return err


def consent_needed(
    connector: Connector, user_id: str, *, issuer: str | None = None, **details: Any
) -> UserAuthorizationRequired:
    err = _consent_needed(connector, user_id, issuer)
    err.details.update(details)
    if details.get("reason") in _GRANT_UNUSABLE:
        err.wire_code = "no_token"  # the official clients' NoValidTokenError: consent again
    return err


#: Reasons a user must consent again because the grant they had became unusable (the official
#: clients' ``no_token``), as opposed to never having consented (``user_authorization_required``).
_GRANT_UNUSABLE = frozenset({"grant_failed", "expired_without_refresh_token"})


def awaiting_confirmation(
    connector: Connector, identity: Identity, user_id: str, issuer: str | None, request_id: str
) -> UserAuthorizationRequired:
    """The user consented in the browser; only the app's confirm call is missing. The message
    names the link setting, since an app on Vercel Connect's SDKs never calls confirm."""
    err = UserAuthorizationRequired(
        f"user {user_id} consented to {connector.uid} (request {request_id}), but the app has "
        f"not confirmed it. Confirm with POST /v1/connect/authorize/{connector.uid}/confirm; an "
        "app on the Vercel Connect SDKs cannot: the operator can turn confirmation off for this "
        f"link with `valetkey connect attach {connector.uid} --project {identity.project_slug} "
        f'-e {identity.environment} --no-confirm-consent` ("confirmConsent": false; see '
        "docs/vercel-sdks.md), or the app can ask for a device code (deviceCode: true)",
        connector=connector.uid,
        user=user_id,
        authorizeUrl=f"/v1/connect/authorize/{connector.uid}",
        reason="awaiting_confirmation",
        request=request_id,
        setting="confirmConsent",
    )
    if issuer is not None:
        err.details["issuer"] = issuer
    return err


def no_installations(connector: Connector) -> InstallationRequired:
    """The refusal of an ``installationId``: no connector type here has installations to choose."""
    return InstallationRequired(
        f"{connector.uid} has no installations to choose from ({connector.type} connectors have "
        "none); drop installationId from the request",
        connector=connector.uid,
        field="installationId",
        reason="installations_not_supported",
    )


def authorization_code_flow(flows: UserFlows, connector: Connector) -> AuthorizationCodeFlow:
    """The authorization code grant, or ``UnsupportedOperation`` when the provider has none."""
    if flows.authorization_code is None:
        raise UnsupportedOperation(
            f"{connector.type} connectors have no authorization code grant for consent"
        )
    return flows.authorization_code
