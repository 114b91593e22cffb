"""Trust bindings: which workload identities (issuer, audience, claims) act for a project."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from valetkey.core.models import Member
from valetkey.core.ports import Invalidation
from valetkey.errors import AudienceTaken, InvalidRequest, NotFound
from valetkey.identity.bindings import (
    DEFAULT_BINDING_ALGORITHMS,
    TrustBinding,
    validate_algorithms,
    validate_conditions,
)
from valetkey.services._common import Service, require, string_list
from valetkey.store import tables as t
from valetkey.store.ids import new_id
from valetkey.store.repo import binding_from_row, trust_audience_key

#: Audiences ``valetkey:<team-slug>[:…]`` belong to the team with that slug (the recommended
#: convention on a broker several teams share).
RESERVED_AUDIENCE_PREFIX = "valetkey:"


@dataclass(frozen=True, slots=True)
class BindingRecord:
    binding: TrustBinding
    #: False when its (issuer, audience) belongs to another team (bindings that overlapped
    #: before pairs had owners): such a binding is never selected.
    active: bool


class TrustService(Service):
    async def create_binding(
        self,
        actor: Member,
        project: str,
        *,
        environment: str,
        issuer: str,
        audience: str,
        claims: Mapping[str, str],
        algorithms: Sequence[str] | None = None,
    ) -> BindingRecord:
        require(actor)
        prj = await self._project(actor.team_id, project)
        await self._check_environments(prj.id, project, [environment])
        if (
            not isinstance(issuer, str)
            or not issuer.startswith(("https://", "http://"))
            or len(issuer) > 500
        ):
            raise InvalidRequest("issuer must be an http(s) URL", field="issuer")
        if not isinstance(audience, str) or not audience or len(audience) > 500:
            raise InvalidRequest("audience must be a non-empty string", field="audience")
        await self._check_reserved_audience(actor, audience)
        if not isinstance(claims, Mapping):
            raise InvalidRequest("claims must be an object of name: value", field="claims")
        validate_conditions(claims)
        algs = validate_algorithms(
            string_list(algorithms or DEFAULT_BINDING_ALGORITHMS, "algorithms")
        )
        now = self._clock.now()
        issuer_ = issuer.rstrip("/") if issuer.endswith("/") and issuer.count("/") > 3 else issuer
        row = t.TrustBinding(
            id=new_id("tb"),
            team_id=actor.team_id,
            project_id=prj.id,
            environment=environment,
            issuer=issuer_,
            audience=audience,
            conditions=dict(claims),
            algorithms=list(algs),
            created_at=now,
        )

        def ours(owner: str | None) -> None:
            if owner != actor.team_id:
                raise AudienceTaken(
                    "another team's trust bindings use this issuer with this audience; "
                    "give your workloads an audience of your own",
                    field="audience",
                )

        await self._store.create_binding(row, now, ours)
        self._audit(
            actor, "trust.create", project_id=prj.id, environment=environment, issuer=issuer
        )
        await self._bus.publish(Invalidation(kind="identity"))
        return BindingRecord(binding_from_row(row, project), active=True)

    async def _check_reserved_audience(self, actor: Member, audience: str) -> None:
        """Audiences under ``valetkey:`` are reserved: ``valetkey:<slug>`` (or
        ``valetkey:<slug>:…``) only for the team whose slug it names, so the recommended
        per-team audience cannot be claimed first by another team."""
        if not audience.startswith(RESERVED_AUDIENCE_PREFIX):
            return
        slug = await self._store.team_slug(actor.team_id)
        own = f"{RESERVED_AUDIENCE_PREFIX}{slug}"
        if audience != own and not audience.startswith(own + ":"):
            raise InvalidRequest(
                f"audiences under {RESERVED_AUDIENCE_PREFIX} name their team: use {own} "
                f"(or {own}:<anything>)",
                field="audience",
            )

    async def list_bindings(self, actor: Member, project: str | None = None) -> list[BindingRecord]:
        project_id = None if not project else (await self._project(actor.team_id, project)).id
        rows, owned = await self._store.bindings(actor.team_id, project_id)
        return [
            BindingRecord(
                binding_from_row(row, slug),
                active=trust_audience_key(row.issuer, row.audience) in owned,
            )
            for row, slug in rows
        ]

    async def delete_binding(self, actor: Member, binding_id: str) -> str:
        """Delete a binding; returns its id."""
        require(actor)
        if not await self._store.delete_binding(actor.team_id, binding_id):
            raise NotFound(f"no trust binding {binding_id}")
        self._audit(actor, "trust.delete", binding=binding_id)
        await self._bus.publish(Invalidation(kind="identity"))
        return binding_id
