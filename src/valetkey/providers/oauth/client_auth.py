"""Client authentication at a token endpoint: RFC 6749 §2.3.1 and RFC 7523 §2.2.

``client_secret_basic`` sends the id and secret in an HTTP Basic header, each
form-urlencoded first (§2.3.1, Appendix B); ``client_secret_post`` sends them in the body;
``private_key_jwt`` sends a fresh signed client assertion (its signer is the caller's).
A server's own way is a :class:`~valetkey.providers.oauth.dialect.Dialect` hook.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote_plus

from valetkey.errors import ProviderError

__all__ = ["AUTH_METHODS", "CLIENT_ASSERTION_TYPE", "AuthMethod", "ClientAuth"]

AuthMethod = Literal["client_secret_basic", "client_secret_post", "private_key_jwt"]
AUTH_METHODS: tuple[AuthMethod, ...] = (
    "client_secret_basic",
    "client_secret_post",
    "private_key_jwt",
)
#: RFC 7523 §2.2 ``client_assertion_type``.
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass(frozen=True, slots=True)
class ClientAuth:
    """A confidential client's credentials and how it presents them.

    ``client_secret_basic`` / ``client_secret_post``: RFC 6749 §2.3.1 with ``client_secret``.
    ``private_key_jwt``: RFC 7523 §2.2; ``assertion`` returns a fresh signed client
    assertion (single-use ``jti``) each time it is called.
    """

    client_id: str
    client_secret: str = field(default="", repr=False)
    method: AuthMethod = "client_secret_basic"
    assertion: Callable[[], str] | None = field(default=None, repr=False, compare=False)

    def apply(self, form: dict[str, Any], headers: dict[str, str]) -> None:
        """Add the client authentication to a request's form or headers, in place."""
        if self.method == "private_key_jwt":
            if self.assertion is None:
                raise ProviderError(
                    "private_key_jwt client authentication has no signing key",
                    error="invalid_configuration",
                )
            form["client_id"] = self.client_id
            form["client_assertion_type"] = CLIENT_ASSERTION_TYPE
            form["client_assertion"] = self.assertion()
            return
        if self.method == "client_secret_post":
            form["client_id"] = self.client_id
            form["client_secret"] = self.client_secret
            return
        # §2.3.1: the id and secret are form-urlencoded (Appendix B) before base64.
        pair = f"{quote_plus(self.client_id, safe='')}:{quote_plus(self.client_secret, safe='')}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
