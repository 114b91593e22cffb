"""Broker settings: command-line flags first, then ``VALETKEY_*`` environment variables, then defaults.

| setting | flag | environment | default |
| --- | --- | --- | --- |
| data directory | ``--data-dir`` | ``VALETKEY_DATA_DIR`` | ``~/.local/share/valetkey`` |
| database | ``--database-url`` | ``VALETKEY_DATABASE_URL`` | SQLite file ``<data dir>/valetkey.db`` |
| listen address | ``--host``, ``--port`` | ``VALETKEY_HOST``, ``VALETKEY_PORT`` | ``127.0.0.1``, ``8787`` |
| public URL (issuer) | ``--public-url`` | ``VALETKEY_PUBLIC_URL`` | ``http://<host>:<port>`` |
| key-encryption key | | ``VALETKEY_KEK`` | key file ``<data dir>/keys/kek.json`` |
| private networks | ``--allow-private-networks`` | ``VALETKEY_ALLOW_PRIVATE_NETWORKS=1`` | off (refused) |
| extra CA certificates | | ``VALETKEY_CA_FILE`` | none: the public CAs (certifi) only |
| provider calls per connector | | ``VALETKEY_PROVIDER_CONCURRENCY`` | ``8`` |
| wait for a provider slot | | ``VALETKEY_PROVIDER_WAIT`` | ``1`` second |
| provider call deadline | | ``VALETKEY_PROVIDER_TIMEOUT`` | ``8`` seconds |
| outbound connections | | ``VALETKEY_OUTBOUND_CONNECTIONS`` | ``100`` |
| background jobs at once (per replica) | | ``VALETKEY_JOB_CONCURRENCY`` | ``4`` |
| one job's deadline / its lease | | ``VALETKEY_JOB_TIMEOUT`` / ``VALETKEY_JOB_LEASE`` | ``30`` / ``90`` seconds |
| job retry backoff: base, cap | | ``VALETKEY_JOB_RETRY_BASE``, ``VALETKEY_JOB_RETRY_MAX`` | ``2``, ``3600`` seconds |
| attempts before a job is dead | | ``VALETKEY_JOB_ATTEMPTS`` | ``10`` |
| job queue poll interval | | ``VALETKEY_JOB_POLL`` | ``1`` second |
| provider revocations at once (per revocation) | | ``VALETKEY_REVOKE_CONCURRENCY`` | ``4`` |
| provider revocations per second (per connector, per replica) | | ``VALETKEY_REVOKE_RATE`` | ``20`` |

With private networks off, issuers, JWKS and webhooks on private or loopback addresses are refused.
``VALETKEY_CA_FILE`` is a PEM bundle trusted in addition to the public CAs for every outbound
HTTPS call (providers, issuers' JWKS, app webhooks): an internal CA, say.

Provider calls (``core.gate``): each connector has ``VALETKEY_PROVIDER_CONCURRENCY`` calls
in flight at most; one more waits up to ``VALETKEY_PROVIDER_WAIT`` seconds for a slot, then is
refused ``provider_busy`` (503, ``Retry-After``); a call lasting longer than
``VALETKEY_PROVIDER_TIMEOUT`` seconds is cancelled and refused ``provider_timeout`` (504).
The concurrency must stay below ``VALETKEY_OUTBOUND_CONNECTIONS``, the shared outbound
connection pool, so that one hanging provider never holds every connection.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from valetkey.core.audit import HARD_LIMIT, SOFT_LIMIT
from valetkey.core.gate import DEFAULT_CONCURRENCY, DEFAULT_TIMEOUT_SECONDS, DEFAULT_WAIT_SECONDS
from valetkey.core.ratelimit import DEFAULT_REVOKE_RATE
from valetkey.core.revocation import DEFAULT_REVOKE_CONCURRENCY
from valetkey.errors import InvalidRequest

DEFAULT_PORT = 8787
DEFAULT_HOST = "127.0.0.1"
DEFAULT_OUTBOUND_CONNECTIONS = 100


def default_data_dir() -> Path:
    env = os.environ.get("VALETKEY_DATA_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "valetkey"


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _number(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise InvalidRequest(f"{name} must be a number", field=name) from None


@dataclass(frozen=True)
class Settings:
    data_dir: Path = field(default_factory=default_data_dir)
    database_url: str | None = None
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    public_url: str | None = None
    kek: str | None = field(default=None, repr=False)
    allow_private_networks: bool = False
    #: Several brokers on this data directory's SQLite file on purpose (each must say so).
    shared_data_dir: bool = False
    #: Largest request body accepted, in bytes.
    max_body_bytes: int = 1 << 20
    #: A PEM bundle of CA certificates trusted besides the public ones, for outbound HTTPS.
    ca_file: Path | None = None
    #: Provider calls in flight at once per connector.
    provider_concurrency: int = DEFAULT_CONCURRENCY
    #: Seconds a provider call waits for one of its connector's slots before ``provider_busy``.
    provider_wait_seconds: float = DEFAULT_WAIT_SECONDS
    #: Seconds one provider call may take before ``provider_timeout``.
    provider_timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    #: Connections the shared outbound HTTP pool opens at most.
    outbound_connections: int = DEFAULT_OUTBOUND_CONNECTIONS
    #: Audit events waiting to be written above which audited requests wait for the writer
    #: (at most ``AuditLog.max_wait``), and at which they are refused (503 ``audit_unavailable``).
    audit_backlog_soft_limit: int = SOFT_LIMIT
    audit_backlog_hard_limit: int = HARD_LIMIT
    #: Background jobs (webhooks, maintenance; ``valetkey.core.jobs``): run at once per replica,
    #: seconds one may take, seconds its claim lasts (must be longer), the retry backoff's
    #: base and cap, attempts before a job is dead-lettered, and seconds between polls.
    job_concurrency: int = 4
    job_timeout_seconds: float = 30.0
    job_lease_seconds: float = 90.0
    job_retry_base_seconds: float = 2.0
    job_retry_max_seconds: float = 3600.0
    job_max_attempts: int = 10
    job_poll_seconds: float = 1.0
    #: Bulk revocation (``core.revocation``): provider calls in flight at once for one
    #: revocation (never more than ``provider_concurrency``), and calls per second to one
    #: connector's provider from this replica.
    revoke_concurrency: int = DEFAULT_REVOKE_CONCURRENCY
    revoke_rate: float = DEFAULT_REVOKE_RATE

    def __post_init__(self) -> None:
        if not 1 <= self.provider_concurrency < self.outbound_connections:
            raise InvalidRequest(
                "VALETKEY_PROVIDER_CONCURRENCY must be at least 1 and below "
                f"VALETKEY_OUTBOUND_CONNECTIONS ({self.outbound_connections})",
                field="provider_concurrency",
            )
        if not 0 < self.provider_timeout_seconds <= 300 or not 0 <= self.provider_wait_seconds <= 60:
            raise InvalidRequest(
                "VALETKEY_PROVIDER_TIMEOUT must be in (0, 300] and VALETKEY_PROVIDER_WAIT in [0, 60]",
                field="provider_timeout_seconds",
            )

        if not (1 <= self.revoke_concurrency <= 256 and 0 < self.revoke_rate <= 10_000):
            raise InvalidRequest(
                "VALETKEY_REVOKE_CONCURRENCY must be in [1, 256] and VALETKEY_REVOKE_RATE in (0, 10000]",
                field="revoke_rate",
            )
        if not (
            self.job_concurrency >= 1
            and 0 < self.job_timeout_seconds < self.job_lease_seconds
            and 0 < self.job_retry_base_seconds <= self.job_retry_max_seconds
            and self.job_max_attempts >= 1
            and self.job_poll_seconds > 0
        ):
            raise InvalidRequest(
                "job settings: VALETKEY_JOB_CONCURRENCY and VALETKEY_JOB_ATTEMPTS at least 1, "
                "0 < VALETKEY_JOB_TIMEOUT < VALETKEY_JOB_LEASE, "
                "0 < VALETKEY_JOB_RETRY_BASE <= VALETKEY_JOB_RETRY_MAX, VALETKEY_JOB_POLL > 0",
                field="job_lease_seconds",
            )

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        env = os.environ
        values: dict[str, object] = {
            "data_dir": default_data_dir(),
            "database_url": env.get("VALETKEY_DATABASE_URL") or None,
            "host": env.get("VALETKEY_HOST") or DEFAULT_HOST,
            "port": int(env.get("VALETKEY_PORT") or DEFAULT_PORT),
            "public_url": env.get("VALETKEY_PUBLIC_URL") or None,
            "kek": env.get("VALETKEY_KEK") or None,
            "allow_private_networks": _truthy(env.get("VALETKEY_ALLOW_PRIVATE_NETWORKS")),
            "shared_data_dir": _truthy(env.get("VALETKEY_SHARED_DATA_DIR")),
            "ca_file": Path(env["VALETKEY_CA_FILE"]).expanduser() if env.get("VALETKEY_CA_FILE") else None,
            "provider_concurrency": int(_number("VALETKEY_PROVIDER_CONCURRENCY", DEFAULT_CONCURRENCY)),
            "provider_wait_seconds": _number("VALETKEY_PROVIDER_WAIT", DEFAULT_WAIT_SECONDS),
            "provider_timeout_seconds": _number("VALETKEY_PROVIDER_TIMEOUT", DEFAULT_TIMEOUT_SECONDS),
            "outbound_connections": int(
                _number("VALETKEY_OUTBOUND_CONNECTIONS", DEFAULT_OUTBOUND_CONNECTIONS)
            ),
            "job_concurrency": int(_number("VALETKEY_JOB_CONCURRENCY", 4)),
            "job_timeout_seconds": _number("VALETKEY_JOB_TIMEOUT", 30.0),
            "job_lease_seconds": _number("VALETKEY_JOB_LEASE", 90.0),
            "job_retry_base_seconds": _number("VALETKEY_JOB_RETRY_BASE", 2.0),
            "job_retry_max_seconds": _number("VALETKEY_JOB_RETRY_MAX", 3600.0),
            "job_max_attempts": int(_number("VALETKEY_JOB_ATTEMPTS", 10)),
            "job_poll_seconds": _number("VALETKEY_JOB_POLL", 1.0),
            "revoke_concurrency": int(
                _number("VALETKEY_REVOKE_CONCURRENCY", DEFAULT_REVOKE_CONCURRENCY)
            ),
            "revoke_rate": _number("VALETKEY_REVOKE_RATE", DEFAULT_REVOKE_RATE),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        if isinstance(values["data_dir"], str):
            values["data_dir"] = Path(str(values["data_dir"])).expanduser()
        return cls(**values)  # type: ignore[arg-type]

    @property
    def issuer_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host  # noqa: S104 - a comparison, not a bind
        return (self.public_url or f"http://{host}:{self.port}").rstrip("/")

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'valetkey.db'}"

    @property
    def keys_dir(self) -> Path:
        return self.data_dir / "keys"

    @property
    def cli_credentials_path(self) -> Path:
        """Where ``serve`` leaves the owner credential for the CLI on the same machine (0600)."""
        return self.data_dir / "cli.json"
