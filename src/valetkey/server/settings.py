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

With private networks off, issuers, JWKS and webhooks on private or loopback addresses are refused.
``VALETKEY_CA_FILE`` is a PEM bundle trusted in addition to the public CAs for every outbound
HTTPS call (providers, issuers' JWKS, app webhooks): an internal CA, say.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from valetkey.core.audit import HARD_LIMIT, SOFT_LIMIT

DEFAULT_PORT = 8787
DEFAULT_HOST = "127.0.0.1"


def default_data_dir() -> Path:
    env = os.environ.get("VALETKEY_DATA_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "valetkey"


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Settings:
    data_dir: Path = field(default_factory=default_data_dir)
    database_url: str | None = None
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    public_url: str | None = None
    kek: str | None = field(default=None, repr=False)
    allow_private_networks: bool = False
    #: Largest request body accepted, in bytes.
    max_body_bytes: int = 1 << 20
    #: A PEM bundle of CA certificates trusted besides the public ones, for outbound HTTPS.
    ca_file: Path | None = None
    #: Audit events waiting to be written above which audited requests wait for the writer
    #: (at most ``AuditLog.max_wait``), and at which they are refused (503 ``audit_unavailable``).
    audit_backlog_soft_limit: int = SOFT_LIMIT
    audit_backlog_hard_limit: int = HARD_LIMIT

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
            "ca_file": Path(env["VALETKEY_CA_FILE"]).expanduser() if env.get("VALETKEY_CA_FILE") else None,
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
