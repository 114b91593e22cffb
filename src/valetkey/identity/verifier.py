"""The one entry point the server calls to turn a bearer credential into an :class:`Identity`.

Three kinds of bearer, told apart before any cryptography:

* ``vk_at_...`` — a broker access token, looked up by its SHA-256 hash in the store;
* a JWT whose ``iss`` is the broker's own issuer — a development identity;
* any other JWT — an external workload identity: its (``iss``, ``aud``) names the one team
  whose trust bindings are considered, keys come from the issuer's JWKS, then the most
  specific matching binding of that team decides the project and environment.

Verified results are cached in a bounded LRU keyed by the bearer's SHA-256: until
the token's ``exp`` (access tokens: at most 60 s, and :meth:`IdentityVerifier.forget`
evicts), so a repeated bearer costs one hash and one dict lookup — no signature
check, no I/O. No ``jti`` replay cache: these are bearer identities, presented
many times by design.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from valetkey.core.clock import Clock
from valetkey.core.models import Identity
from valetkey.core.ports import IdentityStore
from valetkey.identity.access_tokens import ACCESS_TOKEN_PREFIX, hash_token, is_access_token
from valetkey.identity.bindings import BINDING_ALGORITHMS, select_binding
from valetkey.identity.errors import (
    AmbiguousBinding,
    AudienceMismatch,
    EnvironmentMismatch,
    MalformedToken,
    MissingClaim,
    NoMatchingBinding,
    TokenRevoked,
    UntrustedIssuer,
)
from valetkey.identity.issuer import (
    BROKER_AUDIENCE,
    DEVELOPMENT_ENVIRONMENT,
    DEVELOPMENT_KIND,
    BrokerIssuer,
)
from valetkey.identity.jwks import JwksCache
from valetkey.identity.jwt import (
    MAX_TOKEN_LENGTH,
    IssuerPolicy,
    parse_unverified,
    single_audience,
    verify_jwt,
)

__all__ = [
    "ACCESS_TOKEN_CACHE_SECONDS",
    "DEFAULT_MAX_TOKEN_LIFETIME_SECONDS",
    "IdentityStore",
    "IdentityVerifier",
    "check_environment",
]

#: How long a verified access token is trusted without asking the store again.
ACCESS_TOKEN_CACHE_SECONDS = 60
#: Longest external workload token accepted (exp - iat).
DEFAULT_MAX_TOKEN_LIFETIME_SECONDS = 24 * 3600


def check_environment(identity: Identity, environment: str) -> None:
    """Refuse with ``environment_mismatch`` when ``identity`` is used for another environment."""
    if identity.environment != environment:
        raise EnvironmentMismatch(
            f"a {identity.environment} identity cannot be used for the {environment} environment",
            environment=identity.environment,
            requested=environment,
        )


def _expiry(claims: Mapping[str, Any]) -> float:
    return float(claims["exp"])


def _text_claim(claims: Mapping[str, Any], name: str) -> str:
    value = claims.get(name)
    if value is None:
        raise MissingClaim(f"the token has no {name!r} claim", claim=name)
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise MalformedToken(f"the token's {name!r} claim is not a string", claim=name)
    return str(value)


class IdentityVerifier:
    """Verifies bearer credentials and caches what it verified."""

    def __init__(
        self,
        *,
        issuer: BrokerIssuer,
        jwks: JwksCache,
        store: IdentityStore,
        clock: Clock,
        audience: str = BROKER_AUDIENCE,
        cache_size: int = 10_000,
        max_token_lifetime_seconds: int = DEFAULT_MAX_TOKEN_LIFETIME_SECONDS,
    ) -> None:
        self._issuer = issuer
        self._jwks = jwks
        self._store = store
        self._clock = clock
        self._audience = audience
        self._cache_size = cache_size
        self._max_lifetime = max_token_lifetime_seconds
        self._cache: OrderedDict[str, tuple[Identity, float]] = OrderedDict()

    async def verify(self, bearer: str) -> Identity:
        """The verified identity behind ``bearer``, or a typed ``IdentityError``."""
        if not isinstance(bearer, str) or not bearer or len(bearer) > MAX_TOKEN_LENGTH:
            raise MalformedToken("the identity is empty or too long")
        key = hash_token(bearer)
        now = self._clock.timestamp()
        hit = self._cache.get(key)
        if hit is not None:
            if now < hit[1]:
                self._cache.move_to_end(key)
                return hit[0]
            del self._cache[key]
        if bearer.startswith(ACCESS_TOKEN_PREFIX):
            identity, until = await self._access_token(bearer, key, now)
        else:
            identity, until = await self._jwt(bearer)
        self._remember(key, identity, until)
        return identity

    def forget(self, *, token_hash: str | None = None, all: bool = False) -> None:
        """Evict one cached result (keyed by SHA-256 of the bearer: the token hash), or all."""
        if all:
            self._cache.clear()
        elif token_hash is not None:
            self._cache.pop(token_hash, None)

    def _remember(self, key: str, identity: Identity, until: float) -> None:
        if until <= self._clock.timestamp() or self._cache_size <= 0:
            return
        self._cache[key] = (identity, until)
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    async def _access_token(
        self, bearer: str, token_hash: str, now: float
    ) -> tuple[Identity, float]:
        if not is_access_token(bearer):
            raise MalformedToken("the access token is malformed")
        identity = await self._store.access_token_identity(token_hash)
        if identity is None:
            raise TokenRevoked("the access token is unknown, revoked or expired")
        until = now + ACCESS_TOKEN_CACHE_SECONDS
        if identity.expires_at is not None:
            if identity.expires_at.timestamp() <= now:
                raise TokenRevoked("the access token is unknown, revoked or expired")
            until = min(until, identity.expires_at.timestamp())
        return identity, until

    async def _jwt(self, bearer: str) -> tuple[Identity, float]:
        parsed = parse_unverified(bearer)
        iss = parsed.claims.get("iss")
        if iss is None:
            raise MissingClaim("the token has no 'iss' claim", claim="iss")
        if not isinstance(iss, str):
            raise MalformedToken("the token's 'iss' claim is not a string", claim="iss")
        if iss == self._issuer.issuer:
            return self._development(self._issuer.verify_own(bearer, audience=self._audience))
        return await self._external(bearer, iss, parsed.header, parsed.claims)

    def _development(self, claims: dict[str, Any]) -> tuple[Identity, float]:
        if claims.get("vk_kind") != DEVELOPMENT_KIND:
            raise MalformedToken(
                "the broker's token is not a development identity", claim="vk_kind"
            )
        env = claims.get("vk_env")
        if env != DEVELOPMENT_ENVIRONMENT:
            raise EnvironmentMismatch(
                "a development identity can only be used in the development environment",
                claim="vk_env",
            )
        exp = _expiry(claims)
        identity = Identity(
            team_id=_text_claim(claims, "vk_team"),
            project_id=_text_claim(claims, "vk_project"),
            project_slug=_text_claim(claims, "vk_project_slug"),
            environment=DEVELOPMENT_ENVIRONMENT,
            kind="development",
            subject=_text_claim(claims, "sub"),
            expires_at=datetime.fromtimestamp(exp, UTC),
            claims=claims,
        )
        return identity, exp

    async def _external(
        self, bearer: str, iss: str, header: Mapping[str, Any], unverified: Mapping[str, Any]
    ) -> tuple[Identity, float]:
        bindings = await self._store.bindings_for_issuer(iss)
        bindings = [b for b in bindings if b.issuer == iss]
        if not bindings:
            raise UntrustedIssuer(f"no trust binding exists for issuer {iss}", issuer=iss)
        aud = single_audience(unverified)
        for_audience = [b for b in bindings if b.audience == aud]
        if not for_audience:
            # Checked before the signature: anyone can ask. Name the expected audiences only
            # when one team uses this issuer; otherwise they would tell one team's audiences
            # (with the valetkey:<team-slug> convention, its name) to another team's callers.
            if len({b.team_id for b in bindings}) > 1:
                raise AudienceMismatch(
                    f"the token's audience is not one expected for issuer {iss}", claim="aud"
                )
            expected = sorted({b.audience for b in bindings})
            raise AudienceMismatch(
                f"the token's audience is not one expected for issuer {iss}: {', '.join(expected)}",
                claim="aud",
                expected=expected,
            )
        # The audience decides the team; bindings are selected within that team only. The store
        # returns only the owning team's bindings for a pair; should two teams ever come back
        # for one (iss, aud), nothing is selected rather than letting one capture the other.
        if len({b.team_id for b in for_audience}) > 1:
            raise AmbiguousBinding(
                f"the audience {aud!r} of issuer {iss} is claimed by more than one team",
                claim="aud",
            )
        algorithms = tuple(
            sorted({a for b in for_audience for a in b.algorithms if a in BINDING_ALGORITHMS})
        )
        if not algorithms:
            raise UntrustedIssuer(f"no usable algorithm is configured for issuer {iss}", issuer=iss)
        policy = IssuerPolicy(
            issuer=iss,
            audience=aud,
            algorithms=algorithms,
            max_lifetime_seconds=self._max_lifetime,
            required_claims=("sub",),
        )
        kid = header.get("kid")
        if isinstance(kid, str):
            key = await self._jwks.find_key(iss, kid)
            claims = verify_jwt(bearer, lambda _kid: key, policy, self._clock)
        else:
            claims = verify_jwt(bearer, await self._jwks.key_set(iss), policy, self._clock)
        alg = header["alg"]
        binding = select_binding(claims, [b for b in for_audience if alg in b.algorithms])
        if binding is None:
            raise NoMatchingBinding(
                f"the token's claims match no trust binding for issuer {iss}", issuer=iss
            )
        exp = _expiry(claims)
        identity = Identity(
            team_id=binding.team_id,
            project_id=binding.project_id,
            project_slug=binding.project_slug,
            environment=binding.environment,
            kind="oidc",
            subject=_text_claim(claims, "sub"),
            expires_at=datetime.fromtimestamp(exp, UTC),
            claims=claims,
        )
        return identity, exp
