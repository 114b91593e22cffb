"""The link policy: may this caller get this credential, and narrowed to what?

``evaluate`` returns ``Allowed`` (with the effective request) or ``Denied`` (with the
exact error: which environment, which subject, which scope). Never a bare bool.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from valetkey.core.models import Connector, Identity, Link, TokenRequest
from valetkey.errors import (
    ConnectorNotLinked,
    EnvironmentNotLinked,
    ScopeNotAllowed,
    SubjectNotAllowed,
    TargetNotAllowed,
    ValetkeyError,
)


@dataclass(frozen=True, slots=True)
class Allowed:
    #: The request resolved against the link: for every subject but ``user``, a request naming
    #: no scopes (absent or ``[]``) holds the ceiling, to be sent explicitly; for ``user`` it holds
    #: None (the grant as consented, narrowed to the ceiling by the exchange). Empty resource
    #: lists become None.
    request: TokenRequest


@dataclass(frozen=True, slots=True)
class Denied:
    error: ValetkeyError

    @property
    def reason(self) -> str:
        return self.error.code


Decision = Allowed | Denied


def scope_ceiling(connector: Connector, link: Link) -> tuple[str, ...] | None:
    """The link's scope ceiling, else the connector's configured scopes, else None (no scopes)."""
    if link.policy.scopes is not None:
        return link.policy.scopes
    configured = connector.config.get("scopes")
    if isinstance(configured, list):
        return tuple(str(s) for s in configured)
    return None


def evaluate(
    identity: Identity, connector: Connector, link: Link | None, request: TokenRequest
) -> Decision:
    """Check ``request`` from ``identity`` against the link of ``connector`` to its project."""
    if link is None:
        return Denied(
            ConnectorNotLinked(
                f"connector is not linked to this project: {connector.uid} is not attached "
                f"to project {identity.project_slug}",
                connector=connector.uid,
                project=identity.project_slug,
            )
        )
    if identity.environment not in link.environments:
        return Denied(
            EnvironmentNotLinked(
                f"connector {connector.uid} is attached to project {identity.project_slug} for "
                f"{', '.join(link.environments)}, not for {identity.environment}",
                connector=connector.uid,
                environment=identity.environment,
                linkedEnvironments=list(link.environments),
            )
        )
    subject = request.subject
    if subject.type not in link.policy.subjects:
        return Denied(
            SubjectNotAllowed(
                f"the link allows subjects {', '.join(link.policy.subjects)}, not {subject.type}",
                subject=subject.type,
                allowedSubjects=list(link.policy.subjects),
            )
        )
    if identity.kind == "access_token" and subject.type not in ("app", "user"):
        return Denied(
            SubjectNotAllowed(
                "access tokens may request only app subjects or their own user",
                subject=subject.type,
            )
        )
    issuers = link.policy.user_issuers
    if subject.type == "user" and subject.issuer is not None and subject.issuer not in issuers:
        accepts = (
            f"it accepts {', '.join(issuers)}"
            if issuers
            else "it accepts only users named without an issuer"
        )
        return Denied(
            SubjectNotAllowed(
                f"the link does not accept users from this issuer; {accepts}",
                field="subject.issuer",
                issuer=subject.issuer,
                allowedIssuers=list(issuers),
            )
        )
    if identity.kind == "access_token" and subject.type == "user" and (
        subject.id != identity.user_id or subject.issuer is not None
    ):
        # An access token bound to a user acts for the app's own user of that id only.
        return Denied(
            SubjectNotAllowed("this access token may not act for that user", subject=subject.type)
        )
    resources = request.resources or None
    if resources is not None:
        excess = [r for r in resources if r not in link.policy.resources]
        if excess:
            return Denied(
                TargetNotAllowed(
                    f"resource {', '.join(excess)} is not among those the link allows",
                    field="resources",
                    resources=excess,
                    allowedResources=list(link.policy.resources),
                )
            )
    if request.audience is not None and request.audience not in link.policy.audiences:
        return Denied(
            TargetNotAllowed(
                f"audience {request.audience} is not among those the link allows",
                field="audience",
                audience=request.audience,
                allowedAudiences=list(link.policy.audiences),
            )
        )
    # An empty list asks for nothing in particular, exactly like an absent one: the link's
    # defaults. It must never reach the provider as "no scope" (its own defaults, unbounded).
    scopes = request.scopes or None
    if scopes is not None:
        ceiling = scope_ceiling(connector, link)
        allowed = set(ceiling or ())
        excess = [s for s in scopes if s not in allowed]
        if excess:
            return Denied(
                ScopeNotAllowed(
                    f"scope {', '.join(excess)} is above the link's ceiling",
                    scopes=excess,
                    ceiling=list(ceiling or ()),
                )
            )
    elif subject.type != "user":
        scopes = scope_ceiling(connector, link)
    return Allowed(replace(request, scopes=scopes, resources=resources))
