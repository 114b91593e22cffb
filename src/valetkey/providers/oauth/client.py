"""OAuth 2.0 client mechanics shared by every OAuth-based provider.

- client authentication: ``client_secret_basic`` and ``client_secret_post`` (RFC 6749 §2.3.1),
  ``private_key_jwt`` (RFC 7523 §2.2, the assertion built by the caller's signer);
- the token endpoint call and its response (RFC 6749 §5.1) or error (§5.2);
- any other form POST answered by a JSON object (RFC 8628 §3.1 device authorization);
- token revocation (RFC 7009 §2.1).

Grant types build their form parameters and call :func:`request_token`; nothing here
knows which grant is used. Responses are read up to :data:`MAX_RESPONSE_BYTES`,
redirects are not followed, and no error message carries a secret.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import httpx2

from valetkey.core.clock import Clock
from valetkey.errors import ProviderError
from valetkey.netguard import OutboundRefused
from valetkey.providers.oauth.client_auth import (
    AUTH_METHODS,
    CLIENT_ASSERTION_TYPE,
    AuthMethod,
    ClientAuth,
)
from valetkey.providers.oauth.dialect import DEFAULT_DIALECT, Dialect
from valetkey.providers.redaction import Redactor

__all__ = [
    "AUTH_METHODS",
    "CLIENT_ASSERTION_TYPE",
    "DEFAULT_TIMEOUT",
    "MAX_EXPIRES_IN",
    "MAX_RESPONSE_BYTES",
    "SECRET_PARAMETERS",
    "AuthMethod",
    "ClientAuth",
    "RevocationOutcome",
    "TokenResponse",
    "post_form",
    "redactor_for",
    "request_token",
    "revoke_token",
]

#: Largest token or revocation response read from a provider, in bytes.
MAX_RESPONSE_BYTES = 64 * 1024
#: Longest access-token lifetime believed, in seconds (a year): a longer ``expires_in`` is cut
#: to it, so a provider's 1e20 never overflows a date.
MAX_EXPIRES_IN = 365 * 24 * 3600
#: Seconds allowed for one call to a provider endpoint (connect, read, write, pool each).
DEFAULT_TIMEOUT = 10.0
#: Form parameters that carry a secret (RFC 6749, 7009, 7521/7523, 7636, 8628, 8693): whatever
#: grant sends them, their values are redacted from everything the provider answers.
SECRET_PARAMETERS = frozenset(
    {
        "client_secret",
        "client_assertion",
        "assertion",
        "refresh_token",
        "code",
        "code_verifier",
        "device_code",
        "subject_token",
        "actor_token",
        "token",
        "password",
    }
)
#: Longest OAuth ``error`` code accepted from a provider.
_MAX_ERROR_CODE = 100
#: RFC 6749 §5.2: ``error`` is 1*( %x20-21 / %x23-5B / %x5D-7E ).
_ERROR_CODE = re.compile(r"^[\x20\x21\x23-\x5b\x5d-\x7e]+$")


@dataclass(frozen=True, slots=True)
class TokenResponse:
    """A successful token response (RFC 6749 §5.1)."""

    access_token: str = field(repr=False)
    token_type: str
    expires_in: int | None
    #: The granted scopes as the provider listed them; None when the response has no ``scope``.
    scopes: tuple[str, ...] | None
    refresh_token: str | None = field(default=None, repr=False)
    #: Every other member of the response, except secrets (``id_token`` is kept, it is signed).
    extra: Mapping[str, Any] = field(default_factory=dict)

    def expires_at(self, clock: Clock) -> datetime | None:
        """When the access token expires by the injected clock; None if the provider did not say."""
        if self.expires_in is None:
            return None
        return clock.now() + timedelta(seconds=self.expires_in)


@dataclass(frozen=True, slots=True)
class RevocationOutcome:
    """What an RFC 7009 call came to. ``error`` holds no secret."""

    revoked: bool
    error: str | None = None


async def request_token(
    http: httpx2.AsyncClient,
    token_url: str,
    auth: ClientAuth,
    params: Mapping[str, str | Sequence[str]],
    *,
    scope_separator: str = " ",
    time_limit: float = DEFAULT_TIMEOUT,
    dialect: Dialect = DEFAULT_DIALECT,
) -> TokenResponse:
    """POST a grant to the token endpoint and parse the answer.

    ``params`` holds the grant's parameters (``grant_type`` and the rest); a sequence
    value is sent as a repeated parameter (RFC 8707 ``resource``). Raises
    :class:`ProviderError` with ``error`` in its details: the provider's §5.2 code,
    or ``timeout``, ``unreachable``, ``invalid_response``, ``response_too_large``. Where
    the refusal is found and which members hold the token is the ``dialect``'s say.
    """
    data = await _post_authenticated(
        http, token_url, auth, params, time_limit, "token endpoint", dialect
    )
    if data is None:
        raise ProviderError(
            "the provider's token endpoint answered 200 without a JSON object",
            error="invalid_response",
        )
    return _parse_token_response(dialect.token_fields(data), scope_separator)


async def post_form(
    http: httpx2.AsyncClient,
    url: str,
    auth: ClientAuth,
    params: Mapping[str, str | Sequence[str]],
    *,
    what: str,
    time_limit: float = DEFAULT_TIMEOUT,
    dialect: Dialect = DEFAULT_DIALECT,
) -> dict[str, Any]:
    """POST an authenticated form to an OAuth endpoint answering a JSON object on 200.

    Errors as for :func:`request_token`; ``what`` names the endpoint in messages.
    """
    data = await _post_authenticated(http, url, auth, params, time_limit, what, dialect)
    if data is None:
        raise ProviderError(
            f"the provider's {what} answered 200 without a JSON object", error="invalid_response"
        )
    return data


async def _post_authenticated(
    http: httpx2.AsyncClient,
    url: str,
    auth: ClientAuth,
    params: Mapping[str, str | Sequence[str]],
    time_limit: float,
    what: str,
    dialect: Dialect,
) -> dict[str, Any] | None:
    """The answer's members on success (None: not an object); a refusal raises."""
    form: dict[str, Any] = {k: (v if isinstance(v, str) else list(v)) for k, v in params.items()}
    headers = {"Accept": "application/json"}
    dialect.authenticate(auth, form, headers)
    redactor = redactor_for(form, headers, auth)
    status, content_type, body = await _post(http, url, form, headers, time_limit, what, redactor)
    data = dialect.parse(body, content_type)
    if dialect.is_refusal(status, data):
        raise _error_from(status, data, what, redactor)
    return data


def redactor_for(form: Mapping[str, Any], headers: Mapping[str, str], auth: ClientAuth) -> Redactor:
    """The redactor for one call: every secret its form and headers carry, and the client secret."""
    values: list[str] = [auth.client_secret]
    for name, value in form.items():
        if name in SECRET_PARAMETERS:
            values.extend([value] if isinstance(value, str) else [str(v) for v in value])
    authorization = headers.get("Authorization")
    if authorization:
        values.append(authorization)
        values.append(authorization.partition(" ")[2])
    return Redactor(values)


async def revoke_token(
    http: httpx2.AsyncClient,
    revocation_url: str,
    auth: ClientAuth,
    token: str,
    token_type_hint: Literal["access_token", "refresh_token"] | None = "access_token",  # noqa: S107 - a hint name
    *,
    time_limit: float = DEFAULT_TIMEOUT,
    dialect: Dialect = DEFAULT_DIALECT,
) -> RevocationOutcome:
    """Revoke ``token`` at an RFC 7009 endpoint; never raises for the provider's answer.

    §2.2: a 200 means the token is no longer valid (including when it already was not).
    """
    form: dict[str, Any] = {"token": token}
    if token_type_hint is not None:
        form["token_type_hint"] = token_type_hint
    headers = {"Accept": "application/json"}
    dialect.authenticate(auth, form, headers)
    redactor = redactor_for(form, headers, auth)
    try:
        status, content_type, body = await _post(
            http, revocation_url, form, headers, time_limit, "revocation endpoint", redactor
        )
    except ProviderError as exc:
        return RevocationOutcome(revoked=False, error=exc.message)
    data = dialect.parse(body, content_type)
    if not dialect.is_refusal(status, data):
        return RevocationOutcome(revoked=True)
    return RevocationOutcome(
        revoked=False, error=_error_from(status, data, "revocation endpoint", redactor).message
    )


async def _post(
    http: httpx2.AsyncClient,
    url: str,
    form: Mapping[str, Any],
    headers: Mapping[str, str],
    time_limit: float,
    what: str,
    redactor: Redactor,
) -> tuple[int, str | None, bytes]:
    try:
        request = http.build_request(
            "POST", url, data=form, headers=headers, timeout=httpx2.Timeout(time_limit)
        )
    except (httpx2.InvalidURL, ValueError) as exc:  # IDNA errors are ValueErrors
        raise ProviderError(f"the provider's {what} URL is invalid", error="url_refused") from exc
    try:
        response = await http.send(request, stream=True, follow_redirects=False)
        try:
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
                raise _too_large(what)
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_RESPONSE_BYTES:
                    raise _too_large(what)
                chunks.append(chunk)
            content_type = response.headers.get("content-type")
            return response.status_code, content_type, b"".join(chunks)
        finally:
            await response.aclose()
    except httpx2.TimeoutException as exc:
        raise ProviderError(f"the provider's {what} timed out", error="timeout") from exc
    except OutboundRefused as exc:
        reason = redactor.text(str(exc)) or "refused"
        raise ProviderError(f"the provider's {what} URL is {reason}", error="url_refused") from exc
    except httpx2.HTTPError as exc:
        raise ProviderError(
            f"the provider's {what} could not be reached ({type(exc).__name__})",
            error="unreachable",
        ) from exc


def _too_large(what: str) -> ProviderError:
    return ProviderError(
        f"the provider's {what} answered more than {MAX_RESPONSE_BYTES} bytes",
        error="response_too_large",
    )


def _error_from(
    status: int, data: Mapping[str, Any] | None, what: str, redactor: Redactor
) -> ProviderError:
    """Build the error for a non-200 answer (RFC 6749 §5.2; RFC 7009 §2.2.1).

    Only the provider's ``error`` and ``error_description`` are kept, each through the call's
    redactor; a body that is not an OAuth error (HTML, a 500 page) is never quoted.
    """
    raw_code = data.get("error") if data else None
    code = redactor.text(raw_code, _MAX_ERROR_CODE) if isinstance(raw_code, str) else None
    if (
        code is None
        or code != raw_code
        or len(code) > _MAX_ERROR_CODE
        or not _ERROR_CODE.match(code)
    ):
        return ProviderError(
            f"the provider's {what} answered HTTP {status} without an OAuth error",
            error="invalid_response",
            providerStatus=status,
        )
    details: dict[str, Any] = {"error": code, "providerStatus": status}
    description = redactor.text(data.get("error_description") if data else None)
    message = f"the provider's {what} refused the request: {code}"
    if description:
        details["errorDescription"] = description
        message += f" ({description})"
    return ProviderError(message, **details)


def _parse_token_response(data: Mapping[str, Any], scope_separator: str) -> TokenResponse:
    access_token = data.get("access_token")
    token_type = data.get("token_type")
    if not isinstance(access_token, str) or not access_token:
        raise ProviderError("the token response has no access_token", error="invalid_response")
    if not isinstance(token_type, str) or not token_type:
        raise ProviderError("the token response has no token_type", error="invalid_response")
    # §5.1: token_type is case-insensitive.
    if token_type.lower() == "bearer":
        token_type = "Bearer"  # noqa: S105 - a token type name, not a secret
    refresh_token = data.get("refresh_token")
    if refresh_token is not None and (not isinstance(refresh_token, str) or not refresh_token):
        raise ProviderError(
            "the token response has a malformed refresh_token", error="invalid_response"
        )
    extra = {
        k: v
        for k, v in data.items()
        if k not in ("access_token", "token_type", "expires_in", "scope", "refresh_token")
    }
    return TokenResponse(
        access_token=access_token,
        token_type=token_type,
        expires_in=_expires_in(data.get("expires_in")),
        scopes=_scopes(data.get("scope"), scope_separator),
        refresh_token=refresh_token,
        extra=extra,
    )


def _expires_in(value: object) -> int | None:
    """RFC 6749 §5.1 ``expires_in``: seconds, as a positive number.

    Lenient where it is safe: a string of ASCII digits (many providers send one) and a finite
    non-integral number (rounded down) are accepted, and a lifetime above
    :data:`MAX_EXPIRES_IN` is cut to it (the broker then refreshes early, never late). Zero,
    negatives, booleans, NaN, infinities and other strings are an ``invalid_response``.
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not (0 < len(text) <= 20 and text.isascii() and text.isdigit()):
            raise _malformed_expires_in()
        value = int(text)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _malformed_expires_in()
    if isinstance(value, float) and not math.isfinite(value):
        raise _malformed_expires_in()
    if value < 1:
        raise _malformed_expires_in()
    return int(min(value, MAX_EXPIRES_IN))


def _malformed_expires_in() -> ProviderError:
    return ProviderError(
        "the token response has a malformed expires_in (RFC 6749 §5.1: a positive number "
        "of seconds)",
        error="invalid_response",
    )


def _scopes(value: object, separator: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ProviderError("the token response has a malformed scope", error="invalid_response")
    return tuple(s for s in (part.strip() for part in value.split(separator)) if s)
