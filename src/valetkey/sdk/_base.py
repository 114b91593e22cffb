"""What the SDK clients share: configuration, identity lookup, cache keys and the request bodies
and headers both build the same way (the wire parsing is ``sdk._wire``)."""

from __future__ import annotations

import functools
import hashlib
import os
import threading
import time
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

from valetkey.errors import IdentityNotFound, InvalidRequest
from valetkey.sdk import _wire
from valetkey.sdk.cache import (
    CacheKey,
    TokenCache,
    normalize_scopes,
    normalize_strings,
)
from valetkey.sdk.identity import (
    IdentityInput,
    IdentitySource,
    discover_identity,
    dotenv_for_url,
    find_dotenv,
    resolve_base_url,
)
from valetkey.sdk.types import (
    Subject,
    SubjectLike,
    subject_from,
)

DEFAULT_TIMEOUT = 10.0
DEFAULT_VALIDITY_BUFFER = 30.0
_MAX_DIGESTS = 64
_UNSET: Any = object()


class TimeSource(Protocol):
    """Anything with ``timestamp()``, like ``valetkey.core.clock.Clock``."""

    def timestamp(self) -> float: ...


@functools.cache
def _user_agent() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"valetkey-python/{version('valetkey')}"
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "valetkey-python"


def _seconds(value: float | timedelta, what: str) -> float:
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 0:
        raise InvalidRequest(f"{what} must not be negative", field=what)
    return seconds


class _Base:
    """Configuration, identity, cache keys and request bodies shared by both clients."""

    def __init__(
        self,
        *,
        base_url: str | None,
        identity: IdentityInput | None,
        validity_buffer: float | timedelta,
        cache_size: int,
        clock: TimeSource | None,
    ) -> None:
        self._dotenv: Path | object | None = _UNSET
        self._resolved_url: str | None = None
        if base_url is not None or os.environ.get("VALETKEY_URL", "").strip():
            self._resolved_url = resolve_base_url(base_url)
        # Else decided with the identity: a .env's URL only with that .env's identity.
        self._source: IdentitySource | None = (
            None if identity is None else discover_identity(identity)
        )
        self._buffer = _seconds(validity_buffer, "validity_buffer")
        self._cache = TokenCache(cache_size)
        self._now = clock.timestamp if clock is not None else time.time
        self._digests: dict[str, str] = {}
        self._init_lock = threading.Lock()
        self._headers = {"Accept": "application/json", "User-Agent": _user_agent()}

    @property
    def base_url(self) -> str:
        """The broker's URL, without a trailing slash."""
        return self._base_url

    @property
    def _base_url(self) -> str:
        url = self._resolved_url
        if url is None:
            try:
                source: IdentitySource | None = self._ensure_source()
            except IdentityNotFound:
                source = None
            url = resolve_base_url(None, dotenv=dotenv_for_url(source, self._dotenv_path()))
            self._resolved_url = url
        return url

    @property
    def identity_source(self) -> str:
        """Where the identity comes from (``"VALETKEY_TOKEN"``, ``"GitHub Actions OIDC"``, ...)."""
        return self._ensure_source().name

    def clear_cache(self) -> None:
        """Forget every cached token."""
        self._cache.clear()

    def _dotenv_path(self) -> Path | None:
        if self._dotenv is _UNSET:
            self._dotenv = find_dotenv()
        return self._dotenv  # type: ignore[return-value]

    def _ensure_source(self) -> IdentitySource:
        source = self._source
        if source is None:
            with self._init_lock:
                if self._source is None:
                    self._source = discover_identity(dotenv=self._dotenv_path())
                source = self._source
        return source

    def _digest(self, identity: str) -> str:
        digest = hashlib.sha256(identity.encode()).hexdigest()
        if len(self._digests) >= _MAX_DIGESTS:
            self._digests.clear()
        self._digests[identity] = digest
        return digest

    def _key(
        self,
        identity: str,
        uid: str,
        subject: SubjectLike | None,
        user: str | None,
        scopes: str | Iterable[str] | None,
        installation_id: str | None,
        resources: str | Iterable[str] | None,
        audience: str | None,
    ) -> tuple[CacheKey, dict[str, Any] | None]:
        if not isinstance(uid, str) or not uid:
            _wire.check_uid(uid)
        if subject is None and user is None:
            subject_key, wire = "app", None
        else:
            subject_key, wire = subject_from(subject, user)
        digest = self._digests.get(identity) or self._digest(identity)
        key: CacheKey = (
            self._base_url,
            digest,
            uid,
            subject_key,
            None if scopes is None else normalize_scopes(scopes),
            installation_id,
            None if resources is None else normalize_strings(resources, "resources"),
            audience,
        )
        return key, wire

    @staticmethod
    def _token_body(key: CacheKey, wire: dict[str, Any] | None) -> dict[str, Any]:
        _, _, _, _, scopes, installation_id, resources, audience = key
        body: dict[str, Any] = {"subject": {"type": "app"} if wire is None else wire}
        if scopes is not None:
            body["scopes"] = list(scopes)
        if installation_id is not None:
            if not isinstance(installation_id, str):
                raise InvalidRequest("installation_id must be a string", field="installation_id")
            body["installationId"] = installation_id
        if resources is not None:
            body["resources"] = list(resources)
        if audience is not None:
            if not isinstance(audience, str):
                raise InvalidRequest("audience must be a string", field="audience")
            body["audience"] = audience
        return body

    @staticmethod
    def _authorize_body(
        user: str,
        scopes: str | Iterable[str] | None,
        installation_id: str | None,
        return_url: str | None,
        webhook: str | None,
        device_code: bool,
        issuer: str | None = None,
    ) -> dict[str, Any]:
        if issuer is None:
            _, wire = subject_from(None, user)
        else:
            _, wire = subject_from(Subject.user(user, issuer=issuer), None)
        body: dict[str, Any] = {"subject": wire}
        normalized = None if scopes is None else normalize_scopes(scopes)
        if normalized is not None:
            body["scopes"] = list(normalized)
        for name, value in (
            ("installationId", installation_id),
            ("returnUrl", return_url),
            ("webhook", webhook),
        ):
            if value is not None:
                if not isinstance(value, str) or not value:
                    raise InvalidRequest(f"{name} must be a non-empty string", field=name)
                body[name] = value
        if device_code:
            body["deviceCode"] = True
        return body

    @staticmethod
    def _revoke_body(
        subject: SubjectLike | None, user: str | None, all_tokens: bool
    ) -> tuple[str | None, dict[str, Any]]:
        if all_tokens:
            if subject is not None or user is not None:
                raise InvalidRequest(
                    "all_tokens=True revokes every subject's tokens; do not name a subject",
                    field="subject",
                )
            return None, {}
        if subject is None and user is None:
            raise InvalidRequest(
                "name the tokens to revoke: subject='app', user=..., or all_tokens=True",
                field="subject",
            )
        subject_key, wire = subject_from(subject, user)
        return subject_key, {"subject": wire}

    def _auth_headers(self, identity: str) -> dict[str, str]:
        return {**self._headers, "Authorization": f"Bearer {identity}"}
