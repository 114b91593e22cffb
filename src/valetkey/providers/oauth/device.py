"""The device authorization grant, RFC 8628.

§3.1-3.2 start it at the device authorization endpoint (a user code and a verification
URI for the user); §3.4-3.5 poll the token endpoint, mapping ``authorization_pending``,
``slow_down``, ``access_denied`` and ``expired_token`` to Valetkey's errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from valetkey.core.models import Connector
from valetkey.core.providers import DeviceStart, TokenSet
from valetkey.errors import AccessDenied, AuthorizationExpired, AuthorizationPending, ProviderError
from valetkey.providers.context import HttpContext
from valetkey.providers.oauth.client import post_form
from valetkey.providers.oauth.engine import OAuthEngine, join_scopes, require_grant
from valetkey.providers.oauth.settings import OAuthSettings

__all__ = ["DEVICE_CODE_GRANT", "SLOW_DOWN_SECONDS", "DeviceGrant"]

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
#: RFC 8628 §3.5: each ``slow_down`` adds 5 seconds to the polling interval.
SLOW_DOWN_SECONDS = 5
_DEFAULT_DEVICE_INTERVAL = 5
#: A device code's lifetime is believed up to a day; a longer ``expires_in`` is cut to it.
_MAX_DEVICE_LIFETIME = 24 * 3600
#: A polling interval above an hour is not a real one (and would overflow a date if huge).
_MAX_DEVICE_INTERVAL = 3600


class DeviceGrant(OAuthEngine):
    """RFC 8628 §3.4: ``grant_type=urn:ietf:params:oauth:grant-type:device_code``."""

    GRANT_TYPE = DEVICE_CODE_GRANT

    async def start_device(
        self, ctx: HttpContext, connector: Connector, *, scopes: tuple[str, ...] | None
    ) -> DeviceStart | None:
        """RFC 8628 §3.1-3.2; None when the grant is not enabled or there is no device endpoint."""
        settings = OAuthSettings.from_connector(connector)
        if "device_code" not in settings.grants:
            return None
        endpoints = await self._endpoints(ctx, settings)
        if endpoints.device_authorization is None:
            return None
        requested = settings.consent_scopes if scopes is None else scopes
        params: dict[str, str] = {}
        if requested:
            params["scope"] = join_scopes(requested, settings.scope_separator)
        data = await post_form(
            ctx.http,
            endpoints.device_authorization,
            self._client_auth(settings, endpoints, ctx),
            params,
            what="device authorization endpoint",
            dialect=self.dialect,
        )
        return _device_start(data, ctx)

    async def poll_device(
        self, ctx: HttpContext, connector: Connector, *, device_code: str
    ) -> TokenSet:
        """RFC 8628 §3.4-3.5: tokens, or AuthorizationPending, AccessDenied, AuthorizationExpired.

        ``slow_down`` raises ``AuthorizationPending`` with ``slowDown=True`` and
        ``intervalIncrease=5``: the caller adds 5 s to its interval from then on.
        """
        settings = OAuthSettings.from_connector(connector)
        require_grant(settings, "device_code", "user")
        endpoints = await self._endpoints(ctx, settings)
        params = {"grant_type": DEVICE_CODE_GRANT, "device_code": device_code}
        try:
            response = await self._request_token(ctx, settings, endpoints, params)
        except ProviderError as exc:
            raise _device_error(exc) from exc
        return await self._token_set(
            ctx, settings, endpoints, response, requested=None, nonce=None, id_token_required=False
        )


def _device_error(exc: ProviderError) -> Exception:
    """RFC 8628 §3.5 error codes to Valetkey's errors; anything else stays a ProviderError."""
    code = exc.details.get("error")
    if code == "authorization_pending":
        return AuthorizationPending("the user has not finished the device authorization yet")
    if code == "slow_down":
        return AuthorizationPending(
            "polling too fast: wait 5 seconds longer between polls from now on",
            slowDown=True,
            intervalIncrease=SLOW_DOWN_SECONDS,
        )
    if code == "access_denied":
        return AccessDenied("the user refused the device authorization")
    if code == "expired_token":
        return AuthorizationExpired("the device code expired before the user finished")
    return exc


def _device_start(data: Mapping[str, Any], ctx: HttpContext) -> DeviceStart:
    def optional(name: str, *aliases: str) -> str | None:
        for key in (name, *aliases):
            value = data.get(key)
            if isinstance(value, str) and value:
                return value
        return None

    def required(name: str, *aliases: str) -> str:
        value = optional(name, *aliases)
        if value is None:
            raise ProviderError(
                f"the device authorization response has no {name} (RFC 8628 §3.2)",
                error="invalid_response",
            )
        return value

    device_code = required("device_code")
    user_code = required("user_code")
    # "verification_url": a pre-standard spelling some providers still send.
    verification_uri = required("verification_uri", "verification_url")
    expires_in = data.get("expires_in")
    if isinstance(expires_in, bool) or not isinstance(expires_in, int) or expires_in <= 0:
        raise ProviderError(
            "the device authorization response has no valid expires_in", error="invalid_response"
        )
    interval = data.get("interval", _DEFAULT_DEVICE_INTERVAL)
    if (
        isinstance(interval, bool)
        or not isinstance(interval, int)
        or not 0 <= interval <= _MAX_DEVICE_INTERVAL
    ):
        raise ProviderError(
            "the device authorization response has an invalid interval", error="invalid_response"
        )
    return DeviceStart(
        device_code=device_code,
        user_code=user_code,
        verification_uri=verification_uri,
        verification_uri_complete=optional("verification_uri_complete"),
        expires_at=ctx.clock.now() + timedelta(seconds=min(expires_in, _MAX_DEVICE_LIFETIME)),
        interval=interval or _DEFAULT_DEVICE_INTERVAL,
    )
