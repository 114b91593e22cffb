"""How one authorization server departs from the RFCs: hooks a provider overrides without a fork.

The engine speaks RFC 6749 as written. Real servers differ in three places, and each is a
hook of :class:`Dialect` (a field for the common cases, a method to override for the rest):

- **client authentication** (RFC 6749 §2.3.1, RFC 7523 §2.2): :meth:`Dialect.authenticate`
  puts the credentials on the request; ``auth_method`` forces one method for a server that
  accepts only that one (some want the secret in the body, whatever the connector says);
- **where a refusal is found** (§5.2 says: a 400 with a JSON ``error``):
  :meth:`Dialect.parse` reads a body (JSON, and with ``form_bodies`` also
  ``application/x-www-form-urlencoded``, as GitHub answers) and :meth:`Dialect.is_refusal`
  decides whether an answer refuses (with ``errors_on_success``, a 200 whose body names an
  ``error`` does: GitHub, and Slack's ``{"ok": false, "error": …}``);
- **token-response fields** (§5.1): :meth:`Dialect.token_fields` returns the members the
  engine reads; with ``token_member`` they come from a nested object (Slack's user token is
  under ``authed_user``; the outer, bot, token is dropped, never kept in ``extra``).

Whatever a dialect returns still goes through the engine's checks: bounded sizes, the RFC
6749 §5.2 error-code grammar, the redaction of every secret the request carried, and the
outbound guard, which sits in the HTTP client, below every hook.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from valetkey.errors import ProviderError
from valetkey.providers.oauth.client_auth import AuthMethod, ClientAuth

__all__ = ["DEFAULT_DIALECT", "TOKEN_MEMBERS", "Dialect"]

#: The RFC 6749 §5.1 members a nested token response replaces (never copied from the outside).
TOKEN_MEMBERS = frozenset(
    {"access_token", "token_type", "expires_in", "scope", "refresh_token", "id_token"}
)
#: Most members a form-encoded body may have; more is not an OAuth response.
_MAX_FORM_FIELDS = 100
_FORM_TYPE = "application/x-www-form-urlencoded"


@dataclass(frozen=True, slots=True)
class Dialect:
    """One authorization server's departures from RFC 6749; the default departs in nothing."""

    #: Client authentication this server requires, over the connector's ``authMethod``.
    auth_method: AuthMethod | None = None
    #: A 200 answer whose body has an ``error`` member is a refusal, not a success.
    errors_on_success: bool = False
    #: Bodies sent as ``application/x-www-form-urlencoded`` are read too (JSON always is).
    form_bodies: bool = False
    #: The member of the token response that holds the token (e.g. ``authed_user``).
    token_member: str | None = None

    def method_for(self, configured: AuthMethod) -> AuthMethod:
        """The client authentication method to use, given the connector's."""
        return self.auth_method or configured

    def authenticate(self, auth: ClientAuth, form: dict[str, Any], headers: dict[str, str]) -> None:
        """Put the client's credentials on one request's form or headers, in place."""
        auth.apply(form, headers)

    def parse(self, body: bytes, content_type: str | None) -> dict[str, Any] | None:
        """The body as an object of members, or None when it is not one this dialect reads.

        JSON objects always; form-encoded bodies only with ``form_bodies`` and the form media
        type, each member once (a repeated member makes the body unreadable, not the first
        or last one right).
        """
        media = (content_type or "").partition(";")[0].strip().lower()
        if self.form_bodies and media == _FORM_TYPE:
            return _form_object(body)
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return None
        return data if isinstance(data, dict) else None

    def is_refusal(self, status: int, data: Mapping[str, Any] | None) -> bool:
        """Whether an answer refuses the request: any status but 200, or an error on a 200."""
        if status != 200:
            return True
        return self.errors_on_success and data is not None and data.get("error") is not None

    def token_fields(self, data: Mapping[str, Any]) -> Mapping[str, Any]:
        """The members of a successful token response that the engine reads (RFC 6749 §5.1)."""
        if self.token_member is None:
            return data
        nested = data.get(self.token_member)
        if not isinstance(nested, dict):
            raise ProviderError(
                f"the token response has no {self.token_member} object",
                error="invalid_response",
            )
        outer = {k: v for k, v in data.items() if k not in TOKEN_MEMBERS and k != self.token_member}
        return {**outer, **nested}


def _form_object(body: bytes) -> dict[str, Any] | None:
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(
            text, keep_blank_values=True, strict_parsing=True, max_num_fields=_MAX_FORM_FIELDS
        )
    except (UnicodeDecodeError, ValueError):
        return None
    data = dict(pairs)
    return data if len(data) == len(pairs) else None


DEFAULT_DIALECT = Dialect()
