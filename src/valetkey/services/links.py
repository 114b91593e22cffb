"""Links and policy: attaching a connector to a project's environments under a ceiling."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

from valetkey.core.models import SUBJECT_TYPES, Member, Policy, SubjectType, check_issuer
from valetkey.core.ports import Invalidation
from valetkey.errors import InvalidRequest, NotFound
from valetkey.providers.registry import ProviderRegistry
from valetkey.services._common import Deps, Service, require, string_list
from valetkey.store.repo import connector_from_row

MAX_LINK_LIFETIME = 31 * 24 * 3600


@dataclass(frozen=True, slots=True)
class LinkRequest:
    """What an attach asks for: the environments and the link's ceiling (None: its default)."""

    environments: Sequence[str]
    subjects: Sequence[str] | None = None
    scopes: Sequence[str] | None = None
    max_lifetime_seconds: int | None = None
    confirm_consent: bool = True
    user_issuers: Sequence[str] | None = None
    resources: Sequence[str] | None = None
    audiences: Sequence[str] | None = None
    allow_unknown_scope: bool = False


@dataclass(frozen=True, slots=True)
class Attached:
    connector: str
    project: str
    #: All the environments the link covers now.
    environments: tuple[str, ...]
    policy: Policy


@dataclass(frozen=True, slots=True)
class Detached:
    connector: str
    project: str
    #: The environments still attached; empty: the link is gone.
    environments: tuple[str, ...]

    @property
    def detached(self) -> bool:
        return not self.environments


class LinksService(Service):
    def __init__(self, deps: Deps, providers: ProviderRegistry) -> None:
        super().__init__(deps)
        self._providers = providers

    async def attach(self, actor: Member, uid: str, project: str, request: LinkRequest) -> Attached:
        require(actor)
        row = await self._connector(actor.team_id, uid)
        uid = row.uid  # named by id or uid: the uid from here on
        prj = await self._project(actor.team_id, project)
        envs = string_list(request.environments, "environments")
        if not envs:
            raise InvalidRequest("name at least one environment", field="environments")
        await self._check_environments(prj.id, project, envs)
        subjects_ = tuple(string_list(request.subjects or ["app"], "subjects"))
        for subject in subjects_:
            if subject not in SUBJECT_TYPES:
                raise InvalidRequest(
                    f"unknown subject type {subject!r}; use {', '.join(SUBJECT_TYPES)}",
                    field="subjects",
                )
        provider = self._providers.get(row.type)
        caps = provider.capabilities(connector_from_row(row, self._store.keyring))
        unsupported = [s for s in subjects_ if s not in caps.subjects]
        if unsupported:
            raise InvalidRequest(
                f"{row.type} connectors cannot issue {', '.join(unsupported)} tokens",
                field="subjects",
            )
        scopes = request.scopes
        scopes_ = None if scopes is None else tuple(sorted(set(string_list(scopes, "scopes"))))
        if scopes_ is not None and not caps.scopable and scopes_:
            raise InvalidRequest(
                f"{row.type} connectors cannot be narrowed by scope", field="scopes"
            )
        configured = row.config.get("scopes")
        if scopes_ is not None and isinstance(configured, list):
            beyond = sorted(set(scopes_) - set(configured))
            if beyond:
                raise InvalidRequest(
                    f"scope ceiling {', '.join(beyond)} is not among the connector's scopes",
                    field="scopes",
                )
        lifetime = request.max_lifetime_seconds
        if lifetime is not None and (
            isinstance(lifetime, bool)
            or not isinstance(lifetime, int)
            or not 60 <= lifetime <= MAX_LINK_LIFETIME
        ):
            raise InvalidRequest(
                f"maxLifetimeSeconds must be an integer from 60 to {MAX_LINK_LIFETIME}",
                field="maxLifetimeSeconds",
            )
        issuers_ = tuple(
            sorted(
                {
                    check_issuer(i, "userIssuers")
                    for i in string_list(request.user_issuers or [], "userIssuers")
                }
            )
        )
        if not isinstance(request.allow_unknown_scope, bool):
            raise InvalidRequest("allowUnknownScope must be a boolean", field="allowUnknownScope")
        policy = Policy(
            subjects=cast(tuple[SubjectType, ...], subjects_),
            scopes=scopes_,
            max_lifetime_seconds=lifetime,
            confirm_consent=request.confirm_consent,
            user_issuers=issuers_,
            resources=targets(request.resources, "resources", uri=True),
            audiences=targets(request.audiences, "audiences", uri=False),
            allow_unknown_scope=request.allow_unknown_scope,
        )
        environments = await self._store.upsert_link(
            row.id, prj.id, envs, policy.to_json(), self._clock.now()
        )
        self._audit(
            actor,
            "link.attach",
            connector_uid=uid,
            project_id=prj.id,
            environments=list(envs),
            policy=policy.to_json(),
        )
        await self._bus.publish(
            Invalidation(kind="connector", team_id=actor.team_id, uid=uid, connector_id=row.id)
        )
        return Attached(uid, project, tuple(environments), policy)

    async def detach(
        self, actor: Member, uid: str, project: str, environments: Sequence[str] | None = None
    ) -> Detached:
        require(actor)
        row = await self._connector(actor.team_id, uid)
        uid = row.uid  # named by id or uid: the uid from here on
        prj = await self._project(actor.team_id, project)
        remaining = await self._store.remove_link(row.id, prj.id, environments, self._clock.now())
        if remaining is None:
            raise NotFound(
                f"connector {uid} is not attached to {project}", connector=uid, project=project
            )
        self._audit(
            actor,
            "link.detach",
            connector_uid=uid,
            project_id=prj.id,
            environments=list(environments or []),
        )
        await self._bus.publish(
            Invalidation(kind="connector", team_id=actor.team_id, uid=uid, connector_id=row.id)
        )
        return Detached(uid, project, tuple(remaining))


def targets(values: Sequence[str] | None, what: str, *, uri: bool) -> tuple[str, ...]:
    """A link's resource or audience allow-list: at most 100 printable strings of at most 2000
    characters; a resource is an absolute URI without a fragment (RFC 8707 §2)."""
    items = set()
    for value in string_list(values or [], what):
        if len(value) > 2000 or not value.isprintable() or " " in value:
            raise InvalidRequest(
                f"{what} must hold printable values of at most 2000 characters, without spaces",
                field=what,
            )
        if uri:
            parts = urlsplit(value)
            if (
                not parts.scheme
                or not (parts.netloc or parts.path)
                or parts.fragment
                or "#" in value
            ):
                raise InvalidRequest(
                    f"{what} must be absolute URIs without a fragment (RFC 8707)", field=what
                )
        items.add(value)
    return tuple(sorted(items))
