"""Revocation of issued credentials and user grants (DESIGN §3).

The exchange's other half: it deletes what the broker issued for a connector (one subject's
tokens, or all of them for owners and members), asks the provider to revoke each credential it
still holds (RFC 7009 for user grants' refresh tokens), publishes the invalidation that drops
them from every replica's cache, and audits the outcome. ``ExchangeService.revoke`` delegates
here; the provider calls share the exchange's ``ProviderGate``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from valetkey.core.audit import AuditEvent, AuditLog
from valetkey.core.clock import Clock
from valetkey.core.gate import ProviderGate
from valetkey.core.models import Identity, Member, Subject
from valetkey.core.ports import (
    ExchangeStore,
    GrantStore,
    Invalidation,
    InvalidationBus,
    ProviderLookup,
)
from valetkey.core.providers import ProviderContext
from valetkey.errors import Forbidden, NotFound, ValetkeyError


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


class RevocationService:
    """Revokes a connector's issued tokens and, once user subjects are enabled, its grants."""

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
    ) -> None:
        self._store = store
        self._providers = providers
        self._audit = audit
        self._bus = bus
        self._clock = clock
        self._ctx = ctx
        self.gate = gate
        #: Set when user subjects are enabled (``ExchangeService.attach_consent``).
        self._grants: GrantStore | None = None

    def attach_grants(self, grants: GrantStore) -> None:
        self._grants = grants

    async def revoke(
        self, principal: Identity | Member, uid: str, subject: Subject | None
    ) -> RevokeCounts:
        """Revoke issued tokens: a subject's (my tokens) or, for owners and members, all of them."""
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
        targets = await self._store.revocation_targets(
            team_id,
            connector.id,
            subject=subject,
            project_id=project_id,
            environment=environment,
            now=now,
        )
        provider = self._providers.get(connector.type)
        outcomes: dict[str, str] = {}
        revoked = skipped = failed = 0
        for target in targets:
            if target.token is None:
                outcomes[target.issued_id] = "skipped: the broker no longer holds this token"
                skipped += 1
                continue
            try:
                result = await self.gate.call(
                    connector.id,
                    functools.partial(provider.revoke, self._ctx, connector, target.token),
                )
            except ValetkeyError as exc:
                outcomes[target.issued_id] = f"failed: {exc.code}"
                failed += 1
                continue
            if result.revoked:
                outcomes[target.issued_id] = "revoked"
                revoked += 1
            elif result.skipped:
                outcomes[target.issued_id] = "skipped: the provider cannot revoke this credential"
                skipped += 1
            else:
                outcomes[target.issued_id] = f"failed: {result.error or 'unknown'}"[:300]
                failed += 1
        deleted = await self._store.mark_revoked(outcomes, now) if outcomes else 0
        grants_found = 0
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
            deleted += grants_found
            user_flows = provider.user_flows()
            flows = None if user_flows is None else user_flows.revocation
            for grant in removed:
                token, hint = (
                    (grant.tokens.refresh_token, "refresh_token")
                    if grant.tokens.refresh_token
                    else (grant.tokens.access_token, "access_token")
                )
                if flows is None:
                    skipped += 1
                    continue
                try:
                    result = await self.gate.call(
                        connector.id,
                        functools.partial(
                            flows.revoke_user_token, self._ctx, connector, token=token, hint=hint
                        ),
                    )
                except ValetkeyError:
                    failed += 1
                    continue
                if result.revoked:
                    revoked += 1
                elif result.skipped:
                    skipped += 1
                else:
                    failed += 1
        await self._bus.publish(
            Invalidation(
                kind="tokens",
                team_id=team_id,
                connector_id=connector.id,
                subject_key=None if subject is None else subject.key(),
            )
        )
        counts = RevokeCounts(len(targets) + grants_found, deleted, revoked, skipped, failed)
        self._audit_revoke(principal, uid, subject, "allowed", "revoked", actor, **counts.to_wire())
        return counts

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
