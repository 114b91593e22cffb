"""The generic ``oauth`` provider: any OAuth 2.0 / OpenID Connect authorization server.

Subjects, each behind a grant the connector enables in ``grants``:

- ``app``: client credentials (RFC 6749 §4.4), narrowed per request to scopes, RFC 8707
  resources and an audience; a provider that grants more than was asked is refused.
- ``user``: authorization code with PKCE S256 always (RFC 6749 §4.1, RFC 7636), OpenID
  Connect ID tokens verified (nonce, signature, iss, aud, exp); the device authorization
  grant (RFC 8628); refresh with rotation (RFC 6749 §6).
- ``jwt-bearer``: an RFC 7523 §2.1 assertion signed with the connector's private key.
- ``token``: RFC 8693 token exchange at the provider.

Revocation through RFC 7009 whenever the server has a revocation endpoint.

One module per grant, each naming its RFC section: :mod:`.client_credentials`,
:mod:`.authorization_code`, :mod:`.refresh`, :mod:`.device`, :mod:`.jwt_bearer`,
:mod:`.token_exchange`, :mod:`.revocation`; what they share is in :mod:`.engine` (endpoints,
client authentication, token sets), :mod:`.client` (the HTTP mechanics and their bounds),
:mod:`.discovery` (RFC 8414 / OpenID metadata), :mod:`.id_token` and :mod:`.settings`.

A server that departs from the RFCs (client authentication it insists on, errors answered with
200, a token nested in its response) is described by a :class:`Dialect`, passed as
``OAuthProvider(dialect=...)`` or overridden hook by hook in a subclass: see :mod:`.dialect`.

Configuration (``secret``: stored encrypted, never shown)::

    issuer                  discover endpoints from this issuer: RFC 8414
                            (/.well-known/oauth-authorization-server, inserted before a
                            path) then OpenID Connect (/.well-known/openid-configuration,
                            appended); the document's issuer must match exactly
    tokenUrl                token endpoint (required without issuer; overrides discovery)
    authorizationUrl        authorization endpoint (overrides discovery)
    deviceAuthorizationUrl  RFC 8628 endpoint (overrides discovery)
    revocationUrl           RFC 7009 endpoint (overrides discovery; without any, skipped)
    jwksUri                 the issuer's keys for ID tokens (overrides discovery; needs issuer)
    clientId                the client's id
    clientSecret            secret; required for client_secret_basic / client_secret_post
    privateKey              secret; PEM, RSA ≥ 2048 (RS256) or EC P-256 (ES256); signs
                            private_key_jwt client assertions and jwt_bearer grants
    privateKeyId            the key's ``kid`` (optional)
    authMethod              "client_secret_basic" (default) | "client_secret_post"
                            | "private_key_jwt"
    grants                  enabled grants, from "client_credentials", "authorization_code",
                            "device_code", "jwt_bearer", "token_exchange";
                            default ["client_credentials"] (subject app only)
    scopes                  the connector's scope ceiling, a list (default: none)
    userScopes              scopes asked for in consent when a request names none
                            (default: scopes)
    scopeSeparator          " " (default) | ","
    authorizationParams     extra authorization-request parameters, {name: value}
                            (never response_type, client_id, redirect_uri, state, scope,
                            nonce, resource, login_hint, code_challenge*, request*)
    tokenParams             extra token-request parameters for client_credentials,
                            jwt_bearer and token_exchange, e.g. {"audience": "..."}
    audienceParam           name of the token parameter carrying a request's ``audience``
                            (client credentials; without it, an audience is refused)
    description             free text

Discovered metadata is cached in the provider instance per issuer (one hour); ID token
keys per ``jwks_uri``. Every URL, configured or discovered, must be https (http only
for localhost, 127.0.0.1 and [::1]).
"""

from __future__ import annotations

from valetkey.providers.oauth.authorization_code import pkce_challenge
from valetkey.providers.oauth.device import DEVICE_CODE_GRANT
from valetkey.providers.oauth.dialect import Dialect
from valetkey.providers.oauth.engine import Endpoints
from valetkey.providers.oauth.jwt_bearer import JWT_BEARER_GRANT
from valetkey.providers.oauth.provider import OAuthProvider
from valetkey.providers.oauth.settings import OAuthSettings
from valetkey.providers.oauth.token_exchange import TOKEN_EXCHANGE_GRANT

__all__ = [
    "DEVICE_CODE_GRANT",
    "JWT_BEARER_GRANT",
    "TOKEN_EXCHANGE_GRANT",
    "Dialect",
    "Endpoints",
    "OAuthProvider",
    "OAuthSettings",
    "pkce_challenge",
]
