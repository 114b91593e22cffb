"""The broker: every service wired together, with one start and one close.

Built by ``Broker.create(settings)``; nothing is created at import time.
On first start it creates the data directory (0700), the key-encryption key and
signing keys (files 0600), applies migrations and bootstraps the default team.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import secrets
import socket
import ssl
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import certifi
import httpx2

from valetkey.core.audit import AuditLog
from valetkey.core.clock import Clock, SystemClock
from valetkey.core.consent import ConsentService
from valetkey.core.consent_cases import ConsentCases
from valetkey.core.exchange import ExchangeService
from valetkey.core.gate import ProviderGate
from valetkey.core.jobs import Job, JobWorker, RetryPolicy
from valetkey.core.models import Connector
from valetkey.core.ports import Invalidation, InvalidationBus, LocalBus
from valetkey.core.providers import UserFlows, require_user_flows
from valetkey.core.ratelimit import RateLimits
from valetkey.core.revocation import RevocationService
from valetkey.crypto import KeyRing
from valetkey.errors import NotFound
from valetkey.identity.issuer import BrokerIssuer
from valetkey.identity.jwks import JwksCache
from valetkey.identity.keys import SigningKeys
from valetkey.identity.verifier import IdentityVerifier
from valetkey.netguard import GuardedTransport
from valetkey.private_paths import ensure_private_dir
from valetkey.providers.registry import ProviderRegistry
from valetkey.server.notify import WEBHOOK_JOB, WebhookNotifier
from valetkey.server.settings import Settings
from valetkey.services import Bootstrap, Services
from valetkey.store.consent import ConsentRepository
from valetkey.store.db import Database
from valetkey.store.grants import GrantRepository
from valetkey.store.jobs import JobStore
from valetkey.store.repo import Repository

log = logging.getLogger("valetkey.broker")

#: Seconds between maintenance rounds (expiring consent requests, purging the token cache):
#: one ``maintenance`` job per period, run by one replica.
MAINTENANCE_INTERVAL = 60.0
MAINTENANCE_JOB = "maintenance"
#: How long finished (done) jobs are kept; dead jobs are kept until retried.
DONE_JOBS_KEPT = timedelta(days=1)

BROKER_AUDIENCE = "valetkey"
#: Connections of the pool for issuers' JWKS and app webhooks.
OWN_CONNECTIONS = 20


def outbound_tls(ca_file: Path | None) -> ssl.SSLContext:
    """The public CAs (certifi), plus ``ca_file``'s certificates when one is configured.

    Always an explicit context: httpx2's default would trust the host's store and
    ``SSL_CERT_FILE`` instead, so which CAs the broker trusts would depend on the machine.
    """
    context = ssl.create_default_context(cafile=certifi.where())
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file))
    return context


def outbound_client(settings: Settings, connections: int) -> httpx2.AsyncClient:
    """An outbound HTTP client of at most ``connections`` connections, behind the SSRF guard."""
    return httpx2.AsyncClient(
        timeout=httpx2.Timeout(10.0),
        follow_redirects=False,
        headers={"user-agent": "valetkey-broker"},
        # Every outbound request is checked against the network policy (SSRF).
        transport=GuardedTransport(
            httpx2.AsyncHTTPTransport(
                verify=outbound_tls(settings.ca_file),
                limits=httpx2.Limits(
                    max_connections=connections, max_keepalive_connections=min(20, connections)
                ),
            ),
            allow_private=settings.allow_private_networks,
        ),
    )


@dataclass(frozen=True, slots=True)
class BrokerContext:
    """What the broker lends a provider for one call (a ``ProviderContext[httpx2.AsyncClient]``)."""

    http: httpx2.AsyncClient
    clock: Clock


def write_private_json(path: Path, data: dict[str, str]) -> None:
    """Write ``data`` to ``path`` with mode 0600 from the first byte (atomic replace)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)
    os.replace(tmp, path)


@dataclass
class Broker:
    settings: Settings
    clock: Clock
    db: Database
    keyring: KeyRing
    signing_keys: SigningKeys
    issuer: BrokerIssuer
    #: Outbound HTTP to providers (bounded per connector by ``exchange.gate``).
    http: httpx2.AsyncClient
    #: Outbound HTTP for the broker's own needs: issuers' JWKS, app webhooks.
    own_http: httpx2.AsyncClient
    providers: ProviderRegistry
    repo: Repository
    audit: AuditLog
    bus: InvalidationBus
    verifier: IdentityVerifier
    exchange: ExchangeService
    services: Services
    consent: ConsentService
    #: What the consent routes call (start, confirm, import), over ``consent``.
    consent_cases: ConsentCases
    consent_store: ConsentRepository
    grant_store: GrantRepository
    notifier: WebhookNotifier
    jobs: JobStore
    worker: JobWorker
    bootstrap_result: Bootstrap | None = None

    @classmethod
    def create(cls, settings: Settings, *, clock: Clock | None = None) -> Broker:
        clock = clock or SystemClock()
        ensure_private_dir(settings.data_dir)
        ensure_private_dir(settings.keys_dir)
        keyring = (
            KeyRing.from_env(settings.kek)
            if settings.kek
            else KeyRing.load_or_create(settings.keys_dir / "kek.json")
        )
        signing_keys = SigningKeys.load_or_create(settings.keys_dir / "signing.json")
        issuer = BrokerIssuer(signing_keys, settings.issuer_url, clock)
        db = Database(settings.resolved_database_url)
        # Providers share one outbound pool, in which a connector holds at most
        # ``provider_concurrency`` connections (settings refuse a concurrency that is not below
        # the pool size), each for at most ``provider_timeout_seconds``. Issuers' JWKS and app
        # webhooks have a pool of their own, so that hanging providers never delay verifying
        # identities.
        gate = ProviderGate(
            concurrency=settings.provider_concurrency,
            wait_seconds=settings.provider_wait_seconds,
            timeout_seconds=settings.provider_timeout_seconds,
        )
        http = outbound_client(settings, settings.outbound_connections)
        own_http = outbound_client(settings, OWN_CONNECTIONS)
        providers = ProviderRegistry.load()
        repo = Repository(db, keyring, clock)
        audit = AuditLog(
            repo,
            clock,
            soft_limit=settings.audit_backlog_soft_limit,
            hard_limit=settings.audit_backlog_hard_limit,
        )
        bus: InvalidationBus
        if db.is_postgres:
            from valetkey.store.bus import PostgresBus

            bus = PostgresBus(db)
        else:
            bus = LocalBus()
        jwks = JwksCache(own_http, clock, allow_private_addresses=settings.allow_private_networks)
        verifier = IdentityVerifier(
            issuer=issuer, jwks=jwks, store=repo, clock=clock, audience=BROKER_AUDIENCE
        )
        ctx = BrokerContext(http, clock)
        revocation = functools.partial(
            RevocationService,
            concurrency=settings.revoke_concurrency,
            limits=RateLimits(settings.revoke_rate),
        )
        exchange = ExchangeService(
            store=repo,
            providers=providers,
            audit=audit,
            bus=bus,
            clock=clock,
            ctx=ctx,
            gate=gate,
            revocation=revocation,
        )
        services = Services.create(
            db=db, repo=repo, keyring=keyring, providers=providers, audit=audit, bus=bus, clock=clock
        )
        consent_store = ConsentRepository(db, keyring, clock)
        grant_store = GrantRepository(db, keyring, clock, refresh_seconds=gate.hold_seconds)
        jobs = JobStore(db, keyring, clock, max_attempts=settings.job_max_attempts)
        worker = JobWorker(
            jobs,
            clock,
            worker_id=f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}",
            concurrency=settings.job_concurrency,
            job_timeout=settings.job_timeout_seconds,
            lease_seconds=settings.job_lease_seconds,
            poll_seconds=settings.job_poll_seconds,
            retry=RetryPolicy(settings.job_retry_base_seconds, settings.job_retry_max_seconds),
        )
        jobs.on_enqueue = worker.wake
        notifier = WebhookNotifier(
            own_http, issuer, allow_private=settings.allow_private_networks, queue=jobs
        )
        consent = ConsentService(
            store=consent_store,
            grants=grant_store,
            audit=audit,
            clock=clock,
            ctx=ctx,
            callback_url=f"{settings.issuer_url}/v1/connect/callback",
            device_url=f"{settings.issuer_url}/device",
            notifier=notifier,
            gate=gate,
        )
        exchange.attach_consent(grant_store, consent, notifier, consent_store.webhook_for)
        consent_cases = ConsentCases(
            consent=consent,
            connectors=repo,
            providers=providers,
            grants=grant_store,
            bus=bus,
            audit=audit,
            clock=clock,
        )
        broker = cls(
            settings=settings,
            clock=clock,
            db=db,
            keyring=keyring,
            signing_keys=signing_keys,
            issuer=issuer,
            http=http,
            own_http=own_http,
            providers=providers,
            repo=repo,
            audit=audit,
            bus=bus,
            verifier=verifier,
            exchange=exchange,
            services=services,
            consent=consent,
            consent_cases=consent_cases,
            consent_store=consent_store,
            grant_store=grant_store,
            notifier=notifier,
            jobs=jobs,
            worker=worker,
        )
        worker.register(WEBHOOK_JOB, notifier.deliver)
        worker.register(MAINTENANCE_JOB, broker._maintenance_job)
        worker.every(MAINTENANCE_JOB, MAINTENANCE_INTERVAL)
        bus.subscribe(broker._on_invalidation)
        return broker

    def _on_invalidation(self, inv: Invalidation) -> None:
        if inv.kind == "identity":
            if inv.token_hash is not None:
                self.verifier.forget(token_hash=inv.token_hash)
            else:
                self.verifier.forget(all=True)

    async def start(self) -> Bootstrap:
        await self.db.migrate()
        start = getattr(self.bus, "start", None)
        if start is not None:
            await start()
        self.audit.start()
        self.bootstrap_result = await self.services.members.bootstrap()
        if self.bootstrap_result.owner_token is not None:
            write_private_json(
                self.settings.cli_credentials_path,
                {"url": self.settings.issuer_url, "token": self.bootstrap_result.owner_token},
            )
        else:
            self._follow_url_in_cli_file()
        shadowed = await self.repo.shadowed_bindings()
        if shadowed:
            log.warning(
                "%d trust binding(s) are never selected: their (issuer, audience) belongs to "
                "another team. `valetkey trust list` shows them as inactive; give each an "
                "audience of its own team (e.g. valetkey:<team-slug>).",
                shadowed,
            )
        self.worker.start()
        return self.bootstrap_result

    def _follow_url_in_cli_file(self) -> None:
        """A restart on another port or URL: ``cli.json`` names where the broker now is, so the
        CLI and ``make demo-oauth`` on this machine follow it (the credential is kept)."""
        path = self.settings.cli_credentials_path
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return  # absent or hand-edited: the CLI reports it when it reads it
        if isinstance(saved, dict) and saved.get("url") != self.settings.issuer_url:
            write_private_json(path, {**saved, "url": self.settings.issuer_url})

    async def connector_flows(self, team_id: str, connector_id: str) -> tuple[Connector, UserFlows]:
        """A connector by id with its provider's user flows (for callbacks and sweeps)."""
        view = await self.repo.connector_view(team_id, connector_id)
        if view is None:
            raise NotFound("the connector was removed")
        provider = self.providers.get(view.connector.type)
        return view.connector, require_user_flows(provider, view.connector)

    async def maintain_once(self) -> None:
        """Expire abandoned consent requests (revoking held tokens) and drop expired cache rows."""
        await self.consent.sweep(self.connector_flows)
        await self.repo.purge_expired_cache(self.clock.now())

    async def _maintenance_job(self, _job: Job) -> None:
        """The periodic ``maintenance`` job: one replica per period runs it (a failure is retried
        once, then dead and visible; the next period runs again)."""
        await self.maintain_once()
        await self.jobs.purge_finished(self.clock.now() - DONE_JOBS_KEPT)

    async def close(self) -> None:
        await self.exchange.revocation.close()
        await self.worker.close()
        await self.notifier.close()
        await self.audit.close()
        close = getattr(self.bus, "close", None)
        if close is not None:
            await close()
        await self.http.aclose()
        await self.own_http.aclose()
        await self.db.close()
