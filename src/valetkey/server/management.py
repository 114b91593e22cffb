"""The management API (``/v1/...``): typed request models, member credentials, one call per route."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from valetkey.core import limits
from valetkey.core.audit import AuditEvent
from valetkey.core.jobs import Job
from valetkey.core.models import Member
from valetkey.errors import NotFound
from valetkey.server import management_out as out
from valetkey.server.broker import Broker
from valetkey.server.connect import bearer, broker_of
from valetkey.server.management_out import (
    AccessTokenCreated,
    AccessTokenOut,
    AccessTokenRevoked,
    Attached,
    AuditEntry,
    BindingDeleted,
    ConnectorOut,
    ConnectorRemoved,
    Detached,
    DevelopmentIdentity,
    EnvironmentOut,
    MemberCreated,
    MemberOut,
    MemberRevoked,
    ProjectOut,
    TrustBindingOut,
    Usage,
)
from valetkey.server.roles import authorize_member
from valetkey.services import Services
from valetkey.services.links import LinkRequest


async def bounded_request(request: Request) -> None:
    """Bound every path and query parameter before any route reads it (a route-level dependency).

    Path parameters as on the Connect API (``limits.check_path_params``); every query value at
    most ``limits.QUERY_VALUE`` printable characters (routes declare tighter limits of their own).
    """
    limits.check_path_params(request.path_params)
    for name, value in request.query_params.multi_items():
        limits.check_text(value, name, limits.QUERY_VALUE, allow_empty=True)


router = APIRouter(prefix="/v1", tags=["management"], dependencies=[Depends(bounded_request)])


def _printable(value: str) -> str:
    if not value.isprintable():
        raise ValueError("must hold printable characters only (no control characters)")
    return value


# Body strings, bounded like every value from a request (valetkey.core.limits): a length and
# printable characters. Reuse these for new fields.
Slug = Annotated[str, Field(max_length=limits.SLUG), AfterValidator(_printable)]
UidPart = Annotated[str, Field(max_length=limits.UID_PART), AfterValidator(_printable)]
Name = Annotated[str, Field(max_length=limits.NAME), AfterValidator(_printable)]
SubjectId = Annotated[str, Field(max_length=limits.SUBJECT_ID), AfterValidator(_printable)]
Scope = Annotated[str, Field(max_length=limits.SCOPE), AfterValidator(_printable)]
Issuer = Annotated[str, Field(max_length=limits.ISSUER), AfterValidator(_printable)]
Audience = Annotated[str, Field(max_length=limits.AUDIENCE), AfterValidator(_printable)]
Word = Annotated[str, Field(max_length=16), AfterValidator(_printable)]  # a role, an algorithm
Target = Annotated[str, Field(max_length=limits.URL), AfterValidator(_printable)]  # a resource, an audience


class _Model(BaseModel):
    # strict: a JSON string is not an integer ("60"), nor a float (60.0) or a bool, as on the Connect API.
    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True)


async def member_of(request: Request) -> Member:
    """The member behind the request's credential, with the role its route needs (server.roles)."""
    return await authorize_member(request, bearer(request))


def services_of(request: Request) -> Services:
    return broker_of(request).services


MemberDep = Annotated[Member, Depends(member_of)]
ServicesDep = Annotated[Services, Depends(services_of)]


class Me(BaseModel):
    team: str
    member: str
    name: str
    role: str


@router.get("/me", response_model=Me, summary="Who this credential belongs to")
async def me(member: MemberDep) -> Me:
    return Me(
        team=member.team_id, member=member.member_id, name=member.name, role=member.role.value
    )


# -- members ---------------------------------------------------------------------------


class MemberCreate(_Model):
    name: Slug
    role: Word = "member"
    #: The credential's lifetime; none: it never expires (revoke it with DELETE /v1/members/{id}).
    expiresInSeconds: int | None = None


class CredentialRotate(_Model):
    #: The new credential's lifetime; none: the old one's lifetime (or none, if it had none).
    expiresInSeconds: int | None = None


@router.post(
    "/members",
    summary="Add a team member (owners only); its credential is shown once",
    response_model=MemberCreated,
)
async def create_member(body: MemberCreate, member: MemberDep, m: ServicesDep) -> dict[str, Any]:
    return out.issued(
        await m.members.create_member(
            member, body.name, body.role, expires_in_seconds=body.expiresInSeconds
        )
    )


@router.get("/members", response_model=list[MemberOut])
async def list_members(member: MemberDep, m: ServicesDep) -> list[dict[str, Any]]:
    return [out.member(r) for r in await m.members.list_members(member)]


@router.delete(
    "/members/{member_id}",
    summary="Revoke a member and all its credentials at once (owners only; never the last owner)",
    response_model=MemberRevoked,
)
async def revoke_member(
    member_id: Annotated[str, Path(max_length=40)], member: MemberDep, m: ServicesDep
) -> dict[str, Any]:
    done = await m.members.revoke_member(member, member_id)
    return {"id": done.id, "name": done.name, "revoked": True}


@router.post(
    "/me/credential",
    summary="Rotate the credential of this request: a new one, shown once; this one stops at once",
    response_model=MemberCreated,
)
async def rotate_credential(
    member: MemberDep, m: ServicesDep, body: CredentialRotate | None = None
) -> dict[str, Any]:
    return out.issued(
        await m.members.rotate_credential(
            member, expires_in_seconds=None if body is None else body.expiresInSeconds
        )
    )


# -- projects and environments ------------------------------------------------------------


class ProjectCreate(_Model):
    slug: Slug
    name: Name | None = None


@router.post("/projects", status_code=201, response_model=ProjectOut)
async def create_project(body: ProjectCreate, member: MemberDep, m: ServicesDep) -> dict[str, Any]:
    return out.project(await m.projects.create_project(member, body.slug, body.name))


@router.get("/projects", response_model=list[ProjectOut])
async def list_projects(member: MemberDep, m: ServicesDep) -> list[dict[str, Any]]:
    return [out.project(r) for r in await m.projects.list_projects(member)]


@router.get("/projects/{project}", response_model=ProjectOut)
async def get_project(project: str, member: MemberDep, m: ServicesDep) -> dict[str, Any]:
    return out.project(await m.projects.get_project(member, project))


class EnvironmentCreate(_Model):
    slug: Slug


@router.post("/projects/{project}/environments", status_code=201, response_model=EnvironmentOut)
async def create_environment(
    project: str, body: EnvironmentCreate, member: MemberDep, m: ServicesDep
) -> dict[str, Any]:
    env = await m.projects.create_environment(member, project, body.slug)
    return {"project": env.project, "slug": env.slug}


@router.get("/projects/{project}/environments", response_model=list[str])
async def list_environments(project: str, member: MemberDep, m: ServicesDep) -> list[str]:
    return await m.projects.list_environments(member, project)


class DevelopmentIdentityRequest(_Model):
    ttlSeconds: int = Field(default=8 * 3600, ge=300, le=24 * 3600)


@router.post(
    "/projects/{project}/development-identity",
    summary="A broker-signed development identity (development environment only), for `valetkey env pull`",
    response_model=DevelopmentIdentity,
)
async def development_identity(
    project: str, body: DevelopmentIdentityRequest, request: Request, member: MemberDep, m: ServicesDep
) -> dict[str, Any]:
    broker: Broker = broker_of(request)
    prj = await m.projects.get_project(member, project)
    token = broker.issuer.mint_development_identity(
        team_id=member.team_id,
        project_id=prj.id,
        project_slug=project,
        subject=f"member:{member.name}",
        ttl_seconds=body.ttlSeconds,
    )
    expires = broker.clock.now() + timedelta(seconds=body.ttlSeconds)
    m.projects.record(member, "identity.development", project_id=prj.id, environment="development")
    return {
        "token": token,
        "expiresAt": out.iso(expires),
        "url": broker.settings.issuer_url,
        "project": project,
        "environment": "development",
    }


# -- connectors and links ---------------------------------------------------------------


class ConnectorCreate(_Model):
    service: UidPart
    name: UidPart
    type: UidPart | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class ConnectorUpdate(_Model):
    data: dict[str, Any]


@router.post("/connectors", status_code=201, response_model=ConnectorOut)
async def create_connector(body: ConnectorCreate, member: MemberDep, m: ServicesDep) -> dict[str, Any]:
    return out.connector(
        await m.connectors.create_connector(member, body.service, body.name, body.data, body.type)
    )


@router.get("/connectors", response_model=list[ConnectorOut])
async def list_connectors(
    member: MemberDep,
    m: ServicesDep,
    service: str | None = Query(default=None, max_length=limits.UID_PART),
    project: str | None = Query(default=None, max_length=limits.SLUG),
    search: str | None = Query(default=None, max_length=limits.NAME),
) -> list[dict[str, Any]]:
    found = await m.connectors.list_connectors(
        member, service=service, project=project, search=search
    )
    return [out.connector(r) for r in found]


class LinkCreate(_Model):
    project: Slug
    environments: list[Slug] = Field(max_length=limits.ITEMS)
    subjects: list[Word] | None = Field(default=None, max_length=limits.ITEMS)
    scopes: list[Scope] | None = Field(default=None, max_length=limits.SCOPES_COUNT)
    maxLifetimeSeconds: int | None = None
    #: False lets apps that never call confirm (e.g. written for Vercel Connect) finish browser
    #: consent without it — and without the protection it gives (docs/security.md).
    confirmConsent: bool = True
    #: Issuers whose users a request may name (``subject.issuer``); none: issuer-less users only.
    userIssuers: list[Issuer] | None = Field(default=None, max_length=limits.ITEMS)
    #: RFC 8707 resources a request may name; none: a request may name no resource.
    resources: list[Target] | None = Field(default=None, max_length=limits.ITEMS)
    #: Audiences a request may name; none: a request may name no audience.
    audiences: list[Target] | None = Field(default=None, max_length=limits.ITEMS)
    #: Serve tokens whose granted scopes the provider does not state (flagged in ``metadata``).
    allowUnknownScope: bool = False


class LinkDelete(_Model):
    project: Slug
    environments: list[Slug] | None = Field(default=None, max_length=limits.ITEMS)


# Links before the catch-all uid routes: a uid holds a slash.
@router.post("/connectors/{uid:path}/links", response_model=Attached)
async def attach(uid: str, body: LinkCreate, member: MemberDep, m: ServicesDep) -> dict[str, Any]:
    done = await m.links.attach(
        member,
        uid,
        body.project,
        LinkRequest(
            environments=body.environments,
            subjects=body.subjects,
            scopes=body.scopes,
            max_lifetime_seconds=body.maxLifetimeSeconds,
            confirm_consent=body.confirmConsent,
            user_issuers=body.userIssuers,
            resources=body.resources,
            audiences=body.audiences,
            allow_unknown_scope=body.allowUnknownScope,
        ),
    )
    return {
        "connector": done.connector,
        "project": done.project,
        "environments": list(done.environments),
        "policy": out.policy(done.policy),
    }


@router.post("/connectors/{uid:path}/detach", response_model=Detached)
async def detach(uid: str, body: LinkDelete, member: MemberDep, m: ServicesDep) -> dict[str, Any]:
    done = await m.links.detach(member, uid, body.project, body.environments)
    return {
        "connector": done.connector,
        "project": done.project,
        "environments": list(done.environments),
        "detached": done.detached,
    }


@router.get("/connectors/{uid:path}", response_model=ConnectorOut)
async def get_connector(uid: str, member: MemberDep, m: ServicesDep) -> dict[str, Any]:
    return out.connector(await m.connectors.get_connector(member, uid))


@router.patch("/connectors/{uid:path}", response_model=ConnectorOut)
async def update_connector(
    uid: str, body: ConnectorUpdate, member: MemberDep, m: ServicesDep
) -> dict[str, Any]:
    return out.connector(await m.connectors.update_connector(member, uid, body.data))


@router.delete("/connectors/{uid:path}", response_model=ConnectorRemoved)
async def remove_connector(
    uid: str, member: MemberDep, m: ServicesDep, disconnectAll: bool = False
) -> dict[str, Any]:
    done = await m.connectors.remove_connector(member, uid, disconnect_all=disconnectAll)
    return {"uid": done.uid, "removed": True, "detached": done.detached}


# -- trust bindings -----------------------------------------------------------------------


class BindingCreate(_Model):
    environment: Slug
    issuer: Issuer
    audience: Audience
    claims: dict[str, str]  # bounded by validate_conditions (count, names, values)
    algorithms: list[Word] | None = Field(default=None, max_length=limits.ITEMS)


@router.post("/projects/{project}/trust-bindings", status_code=201, response_model=TrustBindingOut)
async def create_binding(
    project: str, body: BindingCreate, member: MemberDep, m: ServicesDep
) -> dict[str, Any]:
    return out.binding(
        await m.trust.create_binding(
            member,
            project,
            environment=body.environment,
            issuer=body.issuer,
            audience=body.audience,
            claims=body.claims,
            algorithms=body.algorithms,
        )
    )


@router.get("/trust-bindings", response_model=list[TrustBindingOut])
async def list_bindings(
    member: MemberDep, m: ServicesDep, project: str | None = Query(default=None, max_length=limits.SLUG)
) -> list[dict[str, Any]]:
    return [out.binding(r) for r in await m.trust.list_bindings(member, project)]


@router.delete("/trust-bindings/{binding_id}", response_model=BindingDeleted)
async def delete_binding(binding_id: str, member: MemberDep, m: ServicesDep) -> dict[str, Any]:
    return {"id": await m.trust.delete_binding(member, binding_id), "deleted": True}


# -- access tokens ------------------------------------------------------------------------


class AccessTokenCreate(_Model):
    environment: Slug
    name: Name | None = None
    userId: SubjectId | None = None
    expiresInSeconds: int | None = None


@router.post(
    "/projects/{project}/access-tokens",
    status_code=201,
    summary="Create an access token (shown once)",
    response_model=AccessTokenCreated,
)
async def create_access_token(
    project: str, body: AccessTokenCreate, member: MemberDep, m: ServicesDep
) -> dict[str, Any]:
    done = await m.access_tokens.create_access_token(
        member,
        project,
        environment=body.environment,
        name=body.name,
        user_id=body.userId,
        ttl_seconds=body.expiresInSeconds,
    )
    return out.token_issued(done)


@router.get("/access-tokens", response_model=list[AccessTokenOut])
async def list_access_tokens(
    member: MemberDep, m: ServicesDep, project: str | None = Query(default=None, max_length=limits.SLUG)
) -> list[dict[str, Any]]:
    return [out.token(r) for r in await m.access_tokens.list_access_tokens(member, project)]


@router.delete("/access-tokens/{token_id}", response_model=AccessTokenRevoked)
async def revoke_access_token(token_id: str, member: MemberDep, m: ServicesDep) -> dict[str, Any]:
    return {"id": await m.access_tokens.revoke_access_token(member, token_id), "revoked": True}


# -- audit and usage ------------------------------------------------------------------------


@router.get("/audit", response_model=list[AuditEntry])
async def audit(
    member: MemberDep,
    m: ServicesDep,
    connector: str | None = Query(default=None, max_length=limits.UID),
    project: str | None = Query(default=None, max_length=limits.SLUG),
    decision: str | None = Query(default=None, max_length=16),
    action: str | None = Query(default=None, max_length=64),
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = Query(default=100, ge=1, le=1000),
) -> list[dict[str, Any]]:
    found = await m.reports.query_audit(
        member,
        connector=connector,
        project=project,
        decision=decision,
        action=action,
        since=since,
        until=until,
        limit=limit,
    )
    return [out.audit(r) for r in found]


@router.get("/usage", response_model=Usage)
async def usage(
    member: MemberDep, m: ServicesDep, month: str | None = Query(default=None, max_length=7)
) -> dict[str, Any]:
    report = await m.reports.usage(member, month)
    return {
        "month": report.month,
        "counters": {out.camel(metric): n for metric, n in report.counters.items()},
    }


# -- background jobs (valetkey.core.jobs) ---------------------------------------------------------


class JobOut(out._Out):
    id: str
    kind: str
    status: str
    attempts: int
    maxAttempts: int
    runAt: str
    lastError: str | None
    createdAt: str
    updatedAt: str
    finishedAt: str | None


def _job_out(job: Job) -> dict[str, Any]:
    """A job on the wire: what it is and how it went; never its payload (the webhook URL and body)."""
    return {
        "id": job.id,
        "kind": job.kind,
        "status": job.status,
        "attempts": job.attempts,
        "maxAttempts": job.max_attempts,
        "runAt": job.run_at.isoformat(),
        "lastError": job.last_error,
        "createdAt": job.created_at.isoformat(),
        "updatedAt": job.updated_at.isoformat(),
        "finishedAt": None if job.finished_at is None else job.finished_at.isoformat(),
    }


@router.get(
    "/jobs",
    response_model=list[JobOut],
    summary="The team's background jobs (webhooks), newest first; status=dead lists dead letters",
)
async def list_jobs(
    request: Request,
    member: MemberDep,
    status: Literal["queued", "running", "done", "dead"] | None = None,
    limit: int = Query(default=100, ge=1, le=1000),
) -> list[dict[str, Any]]:
    jobs = await broker_of(request).jobs.list(team_id=member.team_id, status=status, limit=limit)
    return [_job_out(job) for job in jobs]


@router.post(
    "/jobs/{job_id}/retry",
    response_model=JobOut,
    summary="Queue a dead job again, with a fresh attempt budget",
)
async def retry_job(job_id: str, request: Request, member: MemberDep) -> dict[str, Any]:
    broker: Broker = broker_of(request)
    job = await broker.jobs.retry(job_id, team_id=member.team_id)
    if job is None:
        raise NotFound(f"no dead job {job_id} in this team")
    broker.audit.record(
        AuditEvent(
            team_id=member.team_id,
            at=broker.clock.now(),
            actor=f"member:{member.name}",
            action="job.retry",
            decision="allowed",
            reason="ok",
            details={"job": job.id, "kind": job.kind},
        )
    )
    return _job_out(job)
