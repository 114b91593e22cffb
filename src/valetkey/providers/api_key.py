"""API keys: a static secret handed out as is.

Honest about what it is: an API-key connector is **neither short-lived nor scopable**.
The key does not expire on its own, it cannot be narrowed to a request's scopes,
resources or audience (such requests are refused, never silently widened), and
Valetkey cannot revoke it at the provider: rotate the key there and update the
connector. What Valetkey still adds is that the key lives only in the broker, is
handed out per environment and policy, and every hand-out is recorded.

Configuration (``secret``: stored encrypted, never shown)::

    apiKey       secret
    header       the HTTP header the app should send it in (default "Authorization")
    description  free text
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar

from valetkey.core.models import Connector, SubjectType, TokenRequest
from valetkey.core.providers import (
    Capabilities,
    ConfigField,
    MintedToken,
    ProviderContext,
    RevokeResult,
    ValidatedConfig,
    field_names,
)
from valetkey.errors import InvalidRequest, ProviderError, UnsupportedOperation
from valetkey.providers.config import optional_str, refuse_unknown, require_mapping, secret_str

__all__ = ["ApiKeyProvider"]

FIELDS = (
    ConfigField("apiKey", "the key", sensitive=True, required=True),
    ConfigField("header", 'the HTTP header the app sends it in (default "Authorization")'),
    ConfigField("description", "free text"),
)
_FIELDS = field_names(FIELDS)
# RFC 9110 §5.1: a field name is a token.
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$")
_NARROWING_REFUSED = "api-key connectors hold a static secret: it cannot be narrowed"


class ApiKeyProvider:
    """A static API key for the ``app`` subject: not short-lived, not scopable, not revocable."""

    type: ClassVar[str] = "api-key"
    services: ClassVar[tuple[str, ...]] = ("api-key",)
    config_fields: ClassVar[tuple[ConfigField, ...]] = FIELDS
    subjects: ClassVar[tuple[SubjectType, ...]] = ("app",)

    def capabilities(self, connector: Connector) -> Capabilities:
        return Capabilities(
            subjects=self.subjects, scopable=False, short_lived=False, revocation=False
        )

    def user_flows(self) -> None:
        """None: an API key cannot act for a user."""
        return

    def validate_config(
        self, data: Mapping[str, Any], previous: ValidatedConfig | None = None
    ) -> ValidatedConfig:
        """Check the whole configuration; ``apiKey`` may be left out on update to keep it."""
        data = require_mapping(data)
        refuse_unknown(data, _FIELDS)
        api_key = secret_str(data, "apiKey", previous)
        header = optional_str(data, "header", max_length=64) or "Authorization"
        if not _HEADER_NAME.match(header):
            raise InvalidRequest("header must be an HTTP header name", field="header")
        config: dict[str, Any] = {"header": header}
        description = optional_str(data, "description", max_length=1000)
        if description is not None:
            config["description"] = description
        return ValidatedConfig(config=config, secrets={"apiKey": api_key})

    async def mint(
        self, ctx: ProviderContext[object], connector: Connector, request: TokenRequest
    ) -> MintedToken:
        """Return the stored key unchanged; refuse any request to narrow it."""
        if request.subject.type not in self.subjects:
            raise UnsupportedOperation(
                f"api-key connectors serve the app subject only, not {request.subject.type!r}",
                subject=request.subject.type,
            )
        for name, value in (
            ("scopes", request.scopes),
            ("resources", request.resources),
            ("audience", request.audience),
        ):
            if value is not None:
                raise UnsupportedOperation(_NARROWING_REFUSED, field=name)
        api_key = connector.secrets.get("apiKey")
        if not api_key:
            raise ProviderError(f"connector {connector.uid} has no stored apiKey", field="apiKey")
        return MintedToken(
            token=api_key,
            expires_at=None,
            metadata={"header": connector.config.get("header", "Authorization")},
        )

    async def revoke(
        self, ctx: ProviderContext[object], connector: Connector, token: MintedToken
    ) -> RevokeResult:
        """An API key cannot be revoked from here: always skipped."""
        return RevokeResult(revoked=False, skipped=True)
