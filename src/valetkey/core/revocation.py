"""Revocation of issued credentials and user grants (DESIGN §3).

The exchange's other half: it deletes what the broker issued for a connector (one subject's
tokens, or all of them for owners and members), asks the provider to revoke each credential it
still holds (RFC 7009 for user grants' refresh tokens), publishes the invalidation that drops
them from every replica's cache, and audits the outcome. ``ExchangeService.revoke`` delegates
here; the provider calls share the exchange's ``ProviderGate``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from valetkey.core.audit import AuditEvent, AuditLog
from valetkey.core.clock import Clock
from valetkey.core.gate import ProviderGate
from valetkey.core.models import Connector, Identity, Member, Subject
from valetkey.core.ports import (
    ExchangeStore,
    GrantStore,
    Invalidation,
    InvalidationBus,
    ProviderLookup,
)
from valetkey.core.providers import MintedToken, Provider, ProviderContext
from valetkey.core.ratelimit import RateLimits
from valetkey.errors import Forbidden, NotFound, ValetkeyError

log = logging.getLogger("valetkey.revocation")

#: Provider revocations in flight at once for one revocation (capped by the gate's slots).
DEFAULT_REVOKE_CONCURRENCY = 4
#: Provider outcomes written to the ledger per statement batch while a run goes on.
OUTCOMES_PER_WRITE = 500


@dataclass(frozen=True, slots=True)
class RevokeCounts:
    tokens_found: int
    deleted: int
    provider_revoked: int
    provider_skipped: int
    provider_failed: int

    def to_wire(self) -> dict[str, int]:
        return {
            "tokensFound": self.tokens_found,
            "deleted": self.deleted,
            "providerRevoked": self.provider_revoked,
            "providerSkipped": self.provider_skipped,
            "providerFailed": self.provider_failed,
        }


#: Called with the run after each provider outcome (and once when the provider phase starts).
Progress = Callable[["RevocationRun"], None]


@dataclass(slots=True)
class RevocationRun:
    """One revocation: what the ledger phase found, and the provider phase as it goes.

    ``total`` provider calls are to be made; ``done`` of them are, so far. ``task`` finishes the
    run (records the outcomes, audits) and keeps going if whoever asked goes away.
    """

    found: int
    deleted: int
    skipped: int
    total: int
    revoked: int = 0
    failed: int = 0
    done: int = 0
    task: asyncio.Task[RevokeCounts] | None = field(default=None, repr=False)
    listeners: list[Progress] = field(default_factory=list, repr=False)

    def counts(self) -> RevokeCounts:
        return RevokeCounts(self.found, self.deleted, self.revoked, self.skipped, self.failed)

    @property
    def pending(self) -> int:
        return self.total - self.done

    async def result(self) -> RevokeCounts:
        """The final counts, once every provider call is made (a cancelled waiter does not
        cancel the run)."""
        if self.task is None:
            return self.counts()
        return await asyncio.shield(self.task)

    def _tell(self) -> None:
        for listener in list(self.listeners):
            listener(self)


@dataclass(frozen=True, slots=True)
class _Call:
    """One provider revocation to make: a ledger token, or a removed grant's token."""

    issued_id: str | None
    token: MintedToken | None = field(repr=False)
    grant_token: str | None = field(default=None, repr=False)
    hint: str = "access_token"


class RevocationService:
    """Revokes a connector's issued tokens and, once user subjects are enabled, its grants.

    The ledger phase is a few set-based statements, whatever the number of tokens; the
    provider phase (only for tokens the provider can revoke) runs at most ``concurrency`` calls
    at once per revocation, each through the connector's ``ProviderGate`` slot and its token
    bucket (``limits``), and one call's failure is counted, never raised.
    """

    def __init__(
        self,
        *,
        store: ExchangeStore,
        providers: ProviderLookup,
        audit: AuditLog,
        bus: InvalidationBus,
        clock: Clock,
        ctx: ProviderContext[object],
        gate: ProviderGate,
        concurrency: int = DEFAULT_REVOKE_CONCURRENCY,
        limits: RateLimits | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._store = store
        self._providers = providers
        self._audit = audit
        self._bus = bus
        self._clock = clock
        self._ctx = ctx
        self.gate = gate
        #: Never more than the gate's slots: a revocation must leave room for the exchange.
        self.concurrency = min(concurrency, gate.concurrency)
        self.limits = limits if limits is not None else RateLimits()
        #: Set when user subjects are enabled (``ExchangeService.attach_consent``).
        self._grants: GrantStore | None = None
        self._running: set[asyncio.Task[RevokeCounts]] = set()

    def attach_grants(self, grants: GrantStore) -> None:
        self._grants = grants

    async def revoke(
        self, principal: Identity | Member, uid: str, subject: Subject | None
    ) -> RevokeCounts:
        """Revoke issued tokens: a subject's (my tokens) or, for owners and members, all of them."""
        run = await self.begin(principal, uid, subject)
        return await run.result()

    async def begin(
        self,
        principal: Identity | Member,
        uid: str,
        subject: Subject | None,
        *,
        progress: Progress | None = None,
    ) -> RevocationRun:
        """Check the caller, revoke in the ledger (the broker stops serving the tokens at once,
        on every replica), and start the provider phase; ``RevocationRun.result`` awaits it."""
        now = self._clock.now()
        team_id = principal.team_id
        view = await self._store.connector_view(team_id, uid)
        actor = _actor(principal)
        if view is None:
            self._audit_revoke(principal, uid, subject, "denied", "not_found", actor)
            raise NotFound(f"no connector {uid}", connector=uid)
        project_id: str | None = None
        environment: str | None = None
        if isinstance(principal, Identity):
            if subject is None:
                self._audit_revoke(principal, uid, subject, "denied", "forbidden", actor)
                raise Forbidden(
                    "revoking all tokens needs an owner or member credential; "
                    "a workload identity revokes its own subject's tokens",
                )
            if (
                principal.kind == "access_token"
                and subject.type == "user"
                and (subject.id != principal.user_id or subject.issuer is not None)
            ):
                self._audit_revoke(principal, uid, subject, "denied", "forbidden", actor)
                raise Forbidden("this access token may not act for that user")
            project_id, environment = principal.project_id, principal.environment
        elif not principal.role.can_write():
            self._audit_revoke(principal, uid, subject, "denied", "forbidden", actor)
            raise Forbidden("viewers cannot revoke tokens")
        connector = view.connector
        provider = self._providers.get(connector.type)
        # A provider that declares no revocation is not asked per token: the ledger phase
        # records them all skipped in a few statements.
        at_provider = provider.capabilities(connector).revocation
        marked = await self._store.revoke_issued(
            team_id,
            connector.id,
            subject=subject,
            project_id=project_id,
            environment=environment,
            now=now,
            at_provider=at_provider,
        )
        calls = [_Call(target.issued_id, target.token) for target in marked.targets]
        grants_found = skipped_grants = 0
        if self._grants is not None and (subject is None or subject.type != "app"):
            # Grants hold refresh tokens: revoke them at the provider (RFC 7009) and forget them.
            removed = await self._grants.delete_grants(
                team_id,
                connector.id,
                subject=subject,
                project_id=project_id,
                environment=environment,
            )
            grants_found = len(removed)
            user_flows = provider.user_flows()
            if user_flows is None or user_flows.revocation is None:
                skipped_grants = grants_found
            else:
                for grant in removed:
                    token, hint = (
                        (grant.tokens.refresh_token, "refresh_token")
                        if grant.tokens.refresh_token
                        else (grant.tokens.access_token, "access_token")
                    )
                    calls.append(_Call(None, None, token, hint))
        await self._bus.publish(
            Invalidation(
                kind="tokens",
                team_id=team_id,
                connector_id=connector.id,
                subject_key=None if subject is None else subject.key(),
            )
        )
        run = RevocationRun(
            found=marked.found + grants_found,
            deleted=marked.found + grants_found,
            skipped=marked.skipped + skipped_grants,
            total=len(calls),
        )
        if progress is not None:
            run.listeners.append(progress)
        if not calls:
            self._audit_revoke(
                principal, uid, subject, "allowed", "revoked", actor, **run.counts().to_wire()
            )
            return run
        self._audit_revoke(
            principal,
            uid,
            subject,
            "allowed",
            "revoked",
            actor,
            **run.counts().to_wire(),
            providerPending=run.total,
        )
        finish = self._finish(run, connector, provider, calls, principal, uid, subject, actor)
        task = asyncio.get_running_loop().create_task(finish, name=f"valetkey-revoke-{connector.id}")
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        run.task = task
        return run

    async def _finish(
        self,
        run: RevocationRun,
        connector: Connector,
        provider: Provider,
        calls: Sequence[_Call],
        principal: Identity | Member,
        uid: str,
        subject: Subject | None,
        actor: str,
    ) -> RevokeCounts:
        """The provider phase: ``concurrency`` workers over ``calls``, each call paced by the
        connector's token bucket; then the outcomes in the ledger and one audit event."""
        bucket = self.limits.bucket(connector.id)
        user_flows = provider.user_flows()
        flows = None if user_flows is None else user_flows.revocation
        outcomes: dict[str, str] = {}
        queue = iter(calls)
        run._tell()

        async def one(call: _Call) -> str:
            await bucket.take()
            try:
                if call.token is not None:
                    result = await self.gate.call(
                        connector.id,
                        functools.partial(provider.revoke, self._ctx, connector, call.token),
                    )
                elif flows is not None and call.grant_token is not None:
                    result = await self.gate.call(
                        connector.id,
                        functools.partial(
                            flows.revoke_user_token,
                            self._ctx,
                            connector,
                            token=call.grant_token,
                            hint=call.hint,
                        ),
                    )
                else:
                    return "skipped: the broker no longer holds this token"
            except ValetkeyError as exc:
                return f"failed: {exc.code}"
            except Exception as exc:  # a provider plug-in's bug fails one call, not the run
                log.warning("a provider revocation raised %s", type(exc).__name__)
                return "failed: internal_error"
            if result.revoked:
                return "revoked"
            if result.skipped:
                return "skipped: the provider cannot revoke this credential"
            return f"failed: {result.error or 'unknown'}"[:300]

        async def worker() -> None:
            for call in queue:  # a shared iterator: each call is taken by one worker
                outcome = await one(call)
                if outcome == "revoked":
                    run.revoked += 1
                elif outcome.startswith("skipped"):
                    run.skipped += 1
                else:
                    run.failed += 1
                if call.issued_id is not None:
                    outcomes[call.issued_id] = outcome
                run.done += 1
                run._tell()
                if len(outcomes) >= OUTCOMES_PER_WRITE:
                    await flush()

        async def flush() -> None:
            # Outcomes are written as they come, a batch at a time: a run stopped midway
            # (shutdown) leaves only the calls not yet made ``pending`` in the ledger.
            batch = dict(outcomes)
            outcomes.clear()
            if batch:
                await self._store.record_revocations(batch)

        try:
            await asyncio.gather(*(worker() for _ in range(min(self.concurrency, len(calls)))))
        finally:
            await asyncio.shield(flush())
        counts = run.counts()
        self._audit_revoke(
            principal, uid, subject, "allowed", "provider_revoked", actor, **counts.to_wire()
        )
        return counts

    async def close(self) -> None:
        """Stop provider phases still running (shutdown): the outcomes so far are written, the
        tokens not yet revoked at the provider stay ``pending`` in the ledger (never served)."""
        running = list(self._running)
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)

    def _audit_revoke(
        self,
        principal: Identity | Member,
        uid: str,
        subject: Subject | None,
        decision: str,
        reason: str,
        actor: str,
        **details: Any,
    ) -> None:
        self._audit.record(
            AuditEvent(
                team_id=principal.team_id,
                at=self._clock.now(),
                actor=actor,
                action="token.revoke",
                decision=decision,
                reason=reason,
                connector_uid=uid,
                project_id=principal.project_id if isinstance(principal, Identity) else None,
                environment=principal.environment if isinstance(principal, Identity) else None,
                subject=None if subject is None else subject.key(),
                details=details,
            )
        )


def _actor(principal: Identity | Member) -> str:
    if isinstance(principal, Member):
        return f"member:{principal.name}"
    return f"{principal.kind}:{principal.subject}"
