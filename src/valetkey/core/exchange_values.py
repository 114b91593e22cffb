"""The exchange's values: what it hands out (``Issued``) and the totals it keeps (``ExchangeCounts``).

Apart from ``core.exchange`` only to keep each module small; ``core.exchange`` re-exports both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from valetkey.core.models import Connector
from valetkey.core.providers import Capabilities

__all__ = ["ExchangeCounts", "Issued"]


@dataclass(frozen=True, slots=True)
class Issued:
    """A credential handed out by the exchange; ``token`` is never in its repr."""

    token: str = field(repr=False)
    expires_at: datetime
    token_id: str
    connector: Connector
    capabilities: Capabilities
    scopes: tuple[str, ...] | None
    installation_id: str | None
    cached: bool
    #: The provider did not state the granted scopes (``scopes`` is what was asked for).
    scope_unknown: bool = False
    #: Who the credential acts for at the provider, where the broker knows it: the ``sub`` of a
    #: verified ID token from the user's consent, or the ``sub`` a jwt-bearer assertion named.
    external_subject: str | None = None
    #: Whether ``external_subject`` is a verified ID token's ``sub`` (then also sent as a claim).
    subject_verified: bool = False


@dataclass(slots=True)
class ExchangeCounts:
    """Running totals of exchange outcomes since start, read by the operations endpoint.

    Plain integers bumped on the event loop (no lock, no I/O); keyed by error code only,
    never by tenant, project or connector, so what they expose stays bounded and anonymous.
    """

    cache_hits: int = 0  #: exchanges served from the in-memory token cache
    cache_misses: int = 0  #: exchanges served after a store load or a mint
    denied: dict[str, int] = field(default_factory=dict)  #: error code -> refused exchanges
    tokens_minted: int = 0  #: credentials minted at a provider
    revocations: int = 0  #: revocation requests completed

    def deny(self, code: str) -> None:
        self.denied[code] = self.denied.get(code, 0) + 1
