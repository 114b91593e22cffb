"""Connectors: create, read, update, remove; each read with the links that attach it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from valetkey.core.models import Member, Policy, parse_uid
from valetkey.core.ports import Invalidation
from valetkey.core.providers import Capabilities, ValidatedConfig
from valetkey.errors import Conflict, ConnectorLinked, InvalidRequest
from valetkey.providers.registry import ProviderRegistry
from valetkey.services._common import Deps, Service, require
from valetkey.store import tables as t
from valetkey.store.ids import new_id
from valetkey.store.repo import connector_from_row


@dataclass(frozen=True, slots=True)
class LinkRecord:
    """A connector's attachment to a project (by slug)."""

    project: str
    environments: tuple[str, ...]
    policy: Policy


@dataclass(frozen=True, slots=True)
class ConnectorRecord:
    id: str
    uid: str
    service: str
    name: str
    type: str
    #: The configuration that may be shown; the secret fields are only named.
    data: Mapping[str, Any]
    secret_fields: tuple[str, ...]
    capabilities: Capabilities
    created_at: datetime
    updated_at: datetime
    links: tuple[LinkRecord, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class ConnectorRemoved:
    uid: str
    #: How many project links were detached with it.
    detached: int


class ConnectorsService(Service):
    def __init__(self, deps: Deps, providers: ProviderRegistry) -> None:
        super().__init__(deps)
        self._providers = providers

    def _record(
        self,
        row: t.Connector,
        links: Sequence[t.ProjectLink] = (),
        projects: Mapping[str, str] | None = None,
    ) -> ConnectorRecord:
        provider = self._providers.get(row.type)
        connector = connector_from_row(row, self._store.keyring)
        return ConnectorRecord(
            id=row.id,
            uid=row.uid,
            service=row.service,
            name=row.name,
            type=row.type,
            data=dict(row.config),
            secret_fields=tuple(sorted(connector.secrets)),
            capabilities=provider.capabilities(connector),
            created_at=row.created_at,
            updated_at=row.updated_at,
            links=tuple(
                LinkRecord(
                    project=(projects or {}).get(link.project_id, link.project_id),
                    environments=tuple(link.environments),
                    policy=Policy.from_json(link.policy),
                )
                for link in links
            ),
        )

    async def create_connector(
        self,
        actor: Member,
        service: str,
        name: str,
        data: Mapping[str, Any],
        type_: str | None = None,
    ) -> ConnectorRecord:
        require(actor)
        uid = f"{service}/{name}"
        parse_uid(uid)
        kind = type_ or self._providers.type_for_service(service)
        if kind is None:
            types = self._providers.types()
            raise InvalidRequest(
                f"no connector type is implied by service {service!r}: name the type "
                f"(one of {', '.join(types)})",
                field="type",
                knownTypes=list(types),
                hint=f"With the CLI: `valetkey connect create {service} --type "
                f"{'oauth' if 'oauth' in types else 'TYPE'} --name NAME --data …`; "
                'over the API: "type" in the body.',
            )
        provider = self._providers.get(kind)
        if not isinstance(data, Mapping):
            raise InvalidRequest("data must be a JSON object", field="data")
        validated = provider.validate_config(data)
        if not await self._store.create_connector(
            connector_id=new_id("con"),
            team_id=actor.team_id,
            uid=uid,
            service=service,
            name=name,
            type_=kind,
            config=validated.config,
            secrets=validated.secrets,
            now=self._clock.now(),
        ):
            raise Conflict(
                f"connector {uid} exists",
                connector=uid,
                hint=f"To change its configuration: `valetkey connect update {uid} --data …` "
                f"(PATCH /v1/connectors/{uid}).",
            )
        self._audit(actor, "connector.create", connector_uid=uid, type=kind)
        await self._bus.publish(Invalidation(kind="connector", team_id=actor.team_id, uid=uid))
        return await self.get_connector(actor, uid)

    async def get_connector(self, actor: Member, uid: str) -> ConnectorRecord:
        row = await self._connector(actor.team_id, uid)
        links, projects = await self._store.links_of(actor.team_id, [row.id])
        return self._record(row, links.get(row.id, []), projects)

    async def list_connectors(
        self,
        actor: Member,
        *,
        service: str | None = None,
        project: str | None = None,
        search: str | None = None,
    ) -> list[ConnectorRecord]:
        project_id = None if not project else (await self._project(actor.team_id, project)).id
        rows = await self._store.connectors(
            actor.team_id, service=service, project_id=project_id, search=search
        )
        links, projects = await self._store.links_of(actor.team_id, [r.id for r in rows])
        return [self._record(r, links.get(r.id, []), projects) for r in rows]

    async def update_connector(
        self, actor: Member, uid: str, data: Mapping[str, Any]
    ) -> ConnectorRecord:
        require(actor)
        row = await self._connector(actor.team_id, uid)
        uid = row.uid  # named by id or uid: the uid from here on
        if not isinstance(data, Mapping):
            raise InvalidRequest("data must be a JSON object", field="data")
        provider = self._providers.get(row.type)
        previous = ValidatedConfig(dict(row.config), self._store.connector_secrets(row))
        validated = provider.validate_config(data, previous)
        await self._store.update_connector(
            row.id, validated.config, validated.secrets, self._clock.now()
        )
        self._audit(actor, "connector.update", connector_uid=uid, fields=sorted(data))
        await self._bus.publish(
            Invalidation(kind="connector", team_id=actor.team_id, uid=uid, connector_id=row.id)
        )
        return await self.get_connector(actor, uid)

    async def remove_connector(
        self, actor: Member, uid: str, *, disconnect_all: bool = False
    ) -> ConnectorRemoved:
        require(actor)
        row = await self._connector(actor.team_id, uid)
        uid = row.uid  # named by id or uid: the uid from here on

        def unless_linked(links: int) -> None:
            if links and not disconnect_all:
                raise ConnectorLinked(
                    f"connector {uid} is attached to {links} project(s)",
                    connector=uid,
                    links=links,
                )

        detached = await self._store.remove_connector(row.id, self._clock.now(), unless_linked)
        self._audit(actor, "connector.remove", connector_uid=uid, detached=detached)
        await self._bus.publish(
            Invalidation(kind="connector", team_id=actor.team_id, uid=uid, connector_id=row.id)
        )
        return ConnectorRemoved(uid, detached)
