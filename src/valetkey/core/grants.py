"""Grants: what the broker keeps to mint a subject's tokens later, and refreshing them safely.

A grant is scoped to (connector, project, environment, subject). Its access token is used
while it is valid for longer than the buffer (capped at half the token's lifetime, so a
provider issuing five-minute tokens is not refreshed on every request by a one-minute
buffer); otherwise it is refreshed by one request at a time, whatever the number of requests
and replicas that find it expired: that request *claims* the refresh in a short transaction,
calls the provider holding no transaction (so a slow provider never holds a database lock),
and stores the result with a compare-and-set on the grant's ``version`` and its claim, so a
rotated refresh token replaces the old one atomically. The other requests wait for the
version to change and use the new token: they never refresh again, and never present a
refresh token that was rotated out (which providers such as Slack treat as theft and answer by
revoking the whole grant). A claim expires (after the longest a provider call may take, plus a
margin) so that a replica that died holding one does not block the grant for good.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from valetkey.core.models import Connector, Subject, TokenRequest
from valetkey.core.providers import MintedToken, TokenSet

GrantStatus = Literal["active", "needs_consent"]


@dataclass(frozen=True, slots=True)
class Grant:
    id: str
    team_id: str
    connector_id: str
    project_id: str
    environment: str
    subject: Subject
    status: GrantStatus
    tokens: TokenSet
    version: int
    source: str
    failure: str | None = None
    #: When the broker obtained the current access token (None: unknown).
    obtained_at: datetime | None = None

    def fresh(self, now: datetime, buffer: timedelta) -> bool:
        """Whether the access token stays valid for longer than ``buffer``, capped at half its lifetime."""
        exp = self.tokens.expires_at
        if exp is None:
            return True
        if self.obtained_at is not None and exp > self.obtained_at:
            buffer = min(buffer, (exp - self.obtained_at) / 2)
        return exp - now > buffer

    @property
    def scopes(self) -> tuple[str, ...] | None:
        return self.tokens.scopes


#: Given the grant as claimed, return new tokens, or None to keep it as is.
Refresher = Callable[[Grant], Awaitable[TokenSet | None]]
#: Given the grant as read while waiting, whether this request still has to refresh it (it may
#: raise instead, e.g. for a grant that another refresh marked as failing).
RefreshNeeded = Callable[[Grant], bool]


@dataclass(frozen=True, slots=True)
class GrantScope:
    team_id: str
    connector_id: str
    project_id: str
    environment: str
    subject: Subject


def merge_refreshed(old: TokenSet, new: TokenSet) -> TokenSet:
    """A refresh response without a refresh token keeps the old one (RFC 6749 §6: rotation is optional)."""
    if new.refresh_token is None and old.refresh_token is not None:
        new = replace(new, refresh_token=old.refresh_token)
    if new.provider_subject is None and old.provider_subject is not None:
        new = replace(new, provider_subject=old.provider_subject)
    return new


# -- serving a grant: what the exchange hands out, and when it narrows the scopes --------


def minted_token(tokens: TokenSet) -> MintedToken:
    """What the exchange hands out from a token set: never the refresh token."""
    return MintedToken(
        token=tokens.access_token,
        expires_at=tokens.expires_at,
        scopes=tokens.scopes,
        token_type=tokens.token_type,
        metadata={"providerSubject": tokens.provider_subject} if tokens.provider_subject else {},
        scope_stated=tokens.scope_stated,
    )


def external_subject(token: MintedToken, request: TokenRequest) -> dict[str, Any]:
    """``Issued``'s ``external_subject`` fields: a verified ID token's ``sub`` from the user's
    consent, else the ``sub`` a jwt-bearer assertion named; nothing for other subjects."""
    verified = token.metadata.get("providerSubject")
    if isinstance(verified, str) and verified:
        return {"external_subject": verified, "subject_verified": True}
    if request.subject.type == "jwt-bearer":
        return {"external_subject": request.subject.id}
    return {}


def governed_scopes(connector: Connector, granted: tuple[str, ...]) -> set[str]:
    """The scopes a connector governs: its configured ``scopes``, or (none configured) all granted."""
    configured = connector.config.get("scopes")
    return set(granted) if not isinstance(configured, list) else {str(x) for x in configured}


def within_ceiling(
    connector: Connector, link_scopes: tuple[str, ...] | None, granted: tuple[str, ...]
) -> tuple[str, ...] | None:
    """For a request naming no scopes: None (serve the grant as is) unless the grant holds scopes
    the connector governs that the link's ceiling does not allow; then the granted scopes minus those."""
    if link_scopes is None:
        return None
    governed = governed_scopes(connector, granted)
    excess = (set(granted) - set(link_scopes)) & governed
    return tuple(sorted(set(granted) - excess)) if excess else None


def needs_narrowing(
    connector: Connector, wanted: tuple[str, ...] | None, granted: tuple[str, ...] | None
) -> bool:
    """Whether a user token must be narrowed at the provider for a request wanting ``wanted``.

    Only scopes the connector governs (its configured ``scopes``) count: a grant that also
    holds ``openid`` or ``offline_access`` is not narrowed for a request naming only API
    scopes. Without configured scopes every granted scope counts.
    """
    if wanted is None or granted is None:
        return False
    governed = governed_scopes(connector, granted)
    return bool((set(granted) - set(wanted)) & governed)
