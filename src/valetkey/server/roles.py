"""Which role each route needs: one table, enforced by one dependency, checked when the app is built.

Every HTTP route is in exactly one of two tables:

* :data:`ROUTE_ROLES` — routes that accept a member credential (``vk_pt_…``), with the least
  role that may call them (viewer < member < owner). :func:`authorize_member` enforces it for
  the request's route; a route that authenticates a member any other way does not exist.
* :data:`NO_MEMBER_CREDENTIAL` — routes that never take a member credential (public documents,
  or a workload identity verified by the identity layer), with the reason.

:func:`check_routes` refuses to build an app with a route in neither table (or in both), so a
new route cannot ship without a declared role; tests/integration/test_roles.py walks every
route of the table against every role.

A viewer only reads. Anything that changes state, or yields a credential-bearing identity
(a development identity can be exchanged for the connector's secrets), needs at least member.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from starlette.requests import Request
from starlette.routing import BaseRoute

from valetkey.core.models import Member, Role
from valetkey.errors import Forbidden, ValetkeyError

__all__ = [
    "NO_MEMBER_CREDENTIAL",
    "ROUTE_ROLES",
    "authorize_member",
    "check_routes",
    "required_role",
    "route_keys",
]

VIEWER, MEMBER, OWNER = Role.VIEWER, Role.MEMBER, Role.OWNER

#: (method, path template) -> the least role that may call it with a member credential.
ROUTE_ROLES: Mapping[tuple[str, str], Role] = {
    # who am I, members
    ("GET", "/v1/me"): VIEWER,
    ("POST", "/v1/me/credential"): VIEWER,  # rotate one's own credential
    ("GET", "/v1/members"): VIEWER,
    ("POST", "/v1/members"): OWNER,
    ("DELETE", "/v1/members/{member_id}"): OWNER,
    # projects and environments
    ("GET", "/v1/projects"): VIEWER,
    ("POST", "/v1/projects"): MEMBER,
    ("GET", "/v1/projects/{project}"): VIEWER,
    ("GET", "/v1/projects/{project}/environments"): VIEWER,
    ("POST", "/v1/projects/{project}/environments"): MEMBER,
    ("POST", "/v1/projects/{project}/development-identity"): MEMBER,
    # connectors and links
    ("GET", "/v1/connectors"): VIEWER,
    ("POST", "/v1/connectors"): MEMBER,
    ("GET", "/v1/connectors/{uid:path}"): VIEWER,
    ("PATCH", "/v1/connectors/{uid:path}"): MEMBER,
    ("DELETE", "/v1/connectors/{uid:path}"): MEMBER,
    ("POST", "/v1/connectors/{uid:path}/links"): MEMBER,
    ("POST", "/v1/connectors/{uid:path}/detach"): MEMBER,
    # trust bindings, access tokens
    ("GET", "/v1/trust-bindings"): VIEWER,
    ("POST", "/v1/projects/{project}/trust-bindings"): MEMBER,
    ("DELETE", "/v1/trust-bindings/{binding_id}"): MEMBER,
    ("GET", "/v1/access-tokens"): VIEWER,
    ("POST", "/v1/projects/{project}/access-tokens"): MEMBER,
    ("DELETE", "/v1/access-tokens/{token_id}"): MEMBER,
    # reports
    ("GET", "/v1/audit"): VIEWER,
    ("GET", "/v1/usage"): VIEWER,
    # background jobs: what they are and how they went (never their payloads); a redelivery
    ("GET", "/v1/jobs"): MEMBER,
    ("POST", "/v1/jobs/{job_id}/retry"): MEMBER,
    # Connect routes that also accept a member credential (a workload identity is checked by
    # the exchange's own rules there)
    ("DELETE", "/v1/connect/connectors/{uid:path}/tokens"): MEMBER,
    ("POST", "/v1/connect/token/{uid:path}/import"): MEMBER,
}

#: (method, path template) -> why the route never takes a member credential.
NO_MEMBER_CREDENTIAL: Mapping[tuple[str, str], str] = {
    ("POST", "/v1/connect/token/{uid:path}"): "workload identity",
    ("GET", "/v1/connect/connectors/{uid:path}"): "workload identity",
    ("POST", "/v1/connect/authorize/{uid:path}"): "workload identity",
    ("POST", "/v1/connect/authorize/{uid:path}/confirm"): "workload identity",
    ("POST", "/v1/connect/authorize/{uid:path}/status"): "workload identity",
    ("GET", "/v1/connect/callback"): "the provider's browser redirect (single-use state)",
    ("GET", "/device"): "the user's browser (single-use user code)",
    ("POST", "/device"): "the user's browser (single-use user code)",
    ("GET", "/.well-known/openid-configuration"): "public document",
    ("GET", "/.well-known/jwks.json"): "public document",
    ("GET", "/healthz"): "public probe",
    ("GET", "/readyz"): "public probe",
    ("GET", "/metrics"): "public (operators restrict it at the network)",
    ("GET", "/"): "public index",
    ("GET", "/openapi.json"): "public document",
    ("GET", "/docs"): "public document",
    ("GET", "/docs/oauth2-redirect"): "public document",
}

#: Methods a route answers implicitly (Starlette adds HEAD to GET routes).
_IMPLICIT = frozenset({"HEAD", "OPTIONS"})


def route_keys(routes: Iterable[BaseRoute]) -> Iterator[tuple[str, str]]:
    """(method, path template) of every route an app answers, included routers walked through."""
    for route in routes:
        contexts = getattr(route, "effective_route_contexts", None)
        if contexts is not None:  # FastAPI's included router: the routes it resolves to
            for context in contexts():
                yield from _keys(context.original_route, context.path)
        else:
            yield from _keys(route, getattr(route, "path", None))


def _keys(route: BaseRoute, path: Any) -> Iterator[tuple[str, str]]:
    methods: Any = getattr(route, "methods", None)
    if isinstance(path, str) and methods:
        for method in sorted(set(methods) - _IMPLICIT):
            yield method, path


def check_routes(routes: Iterable[BaseRoute]) -> None:
    """Raise ``RuntimeError`` unless every route is in exactly one of the two tables."""
    missing: list[str] = []
    twice: list[str] = []
    seen: set[tuple[str, str]] = set()
    for key in route_keys(routes):
        seen.add(key)
        if key in ROUTE_ROLES and key in NO_MEMBER_CREDENTIAL:
            twice.append(" ".join(key))
        elif key not in ROUTE_ROLES and key not in NO_MEMBER_CREDENTIAL:
            missing.append(" ".join(key))
    stale = sorted(" ".join(k) for k in {*ROUTE_ROLES, *NO_MEMBER_CREDENTIAL} - seen)
    problems = []
    if missing:
        problems.append(f"routes with no declared role: {', '.join(sorted(missing))}")
    if twice:
        problems.append(f"routes declared twice: {', '.join(sorted(twice))}")
    if stale:
        problems.append(f"declared routes that do not exist: {', '.join(stale)}")
    if problems:
        raise RuntimeError("valetkey.server.roles: " + "; ".join(problems))


def required_role(request: Request) -> Role:
    """The least role the request's route needs, from :data:`ROUTE_ROLES` (fail closed)."""
    route: Any = request.scope.get("route")
    path = getattr(route, "path", None)
    needed = ROUTE_ROLES.get((request.method, path)) if isinstance(path, str) else None
    if needed is None:
        # Unreachable in a built app (check_routes); refused, never allowed, if it happens.
        raise ValetkeyError("this route declares no role for member credentials")
    return needed


async def authorize_member(request: Request, credential: str) -> Member:
    """Authenticate ``credential`` and refuse (``forbidden``) a role below the route's."""
    needed = required_role(request)
    member: Member = await request.app.state.broker.services.members.authenticate(credential)
    if not member.role.at_least(needed):
        raise Forbidden(
            f"this needs the {needed.value} role or above; this credential's role is "
            f"{member.role.value}",
            needed=needed.value,
            role=member.role.value,
        )
    return member
