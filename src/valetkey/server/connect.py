"""The Connect API (wire-compatible with Vercel Connect): token, connector metadata, revoke."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any
from urllib.parse import urlsplit

import fastapi.routing
from fastapi import APIRouter, Request
from fastapi.routing import APIRoute
from starlette._utils import get_route_path
from starlette.responses import Response, StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from valetkey.core.exchange_values import Issued
from valetkey.core.limits import SUBJECT_ID, TOKEN, check_path_params, check_text
from valetkey.core.models import Connector, Identity, Member
from valetkey.core.revocation import RevocationRun
from valetkey.errors import (
    ConnectorNotLinked,
    EnvironmentNotLinked,
    IdentityError,
    InstallationRequired,
    InvalidRequest,
    NotFound,
    ValetkeyError,
)
from valetkey.server.broker import Broker
from valetkey.server.errors import error_response
from valetkey.server.openapi import REVOKE_BODY, TOKEN_BODY
from valetkey.server.roles import authorize_member
from valetkey.server.wire import parse_json_object, parse_subject, parse_token_request


class DirectRoute(APIRoute):
    """An API route whose endpoint takes only ``str`` path parameters and the ``Request``: called directly.

    Every path parameter is bounded first (``limits.check_path_params``: a length per name, printable
    characters only), on either handler: an over-long or malformed one is refused with
    ``invalid_request`` naming it before anything looks it up, caches, stores or audits it.

    FastAPI solves dependencies on every request (query, header and cookie parsing, a pydantic
    validation of each path parameter, a sub-response); for such an endpoint that is pure
    overhead, and on the token endpoint (the hot path) it was the largest framework cost.
    The route stays an ``APIRoute``, so OpenAPI documents it as before; an endpoint with any
    other parameter, or a route that gained dependencies, falls back to FastAPI's handler.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        dependant = self.dependant
        effective = getattr(fastapi.routing, "_effective_route_context_var", None)
        context = effective.get() if effective is not None else None
        if context is not None and getattr(context, "original_route", None) is self:
            dependant = getattr(context, "dependant", None) or dependant
        call = dependant.call
        request_name = dependant.request_param_name
        path_names = tuple(f.name for f in dependant.path_params)
        direct = (
            call is not None
            and inspect.iscoroutinefunction(call)
            and request_name is not None
            and not dependant.dependencies
            and not dependant.query_params
            and not dependant.header_params
            and not dependant.cookie_params
            and not dependant.body_params
            and dependant.response_param_name is None
            and dependant.background_tasks_param_name is None
            and dependant.http_connection_param_name is None
            and dependant.security_scopes_param_name is None
            and all(f.field_info.annotation is str for f in dependant.path_params)
        )
        if not direct or call is None or request_name is None:
            solved = super().get_route_handler()

            async def bounded(request: Request) -> Response:
                check_path_params(request.path_params)
                return await solved(request)

            return bounded
        endpoint: Callable[..., Coroutine[Any, Any, Any]] = call
        request_param: str = request_name

        async def handler(request: Request) -> Response:
            params = request.path_params
            check_path_params(params)
            kwargs: dict[str, Any] = {name: params[name] for name in path_names}
            kwargs[request_param] = request
            response = await endpoint(**kwargs)
            if not isinstance(response, Response):
                raise TypeError(f"{endpoint.__name__} must return a Response")
            return response

        return handler


router = APIRouter(prefix="/v1/connect", tags=["connect"], route_class=DirectRoute)

_JSON = "application/json"


def bearer(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise IdentityError("send an identity: Authorization: Bearer <token>", reason="missing")
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value:
        raise IdentityError("the Authorization header must be 'Bearer <token>'", reason="malformed")
    if len(value) > TOKEN:
        raise IdentityError("the bearer token is too long", reason="malformed")
    return value


def broker_of(request: Request) -> Broker:
    broker: Broker = request.app.state.broker
    return broker


async def identity_of(request: Request) -> Identity:
    return await broker_of(request).verifier.verify(bearer(request))


def json_response(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data, separators=(",", ":")), status, media_type=_JSON)


def _ms(issued: Issued) -> int:
    return int(issued.expires_at.timestamp() * 1000)


def connector_ref(c: Connector) -> dict[str, str]:
    """A connector as the wire names it. ``serviceName`` (which the official clients' adapters
    show as "Sign in with ...") is the service the connector was created under, when that names a
    service rather than the connector type (``github/acme``, not ``oauth/acme``)."""
    ref = {"id": c.id, "uid": c.uid, "type": c.type, "name": c.name, "service": c.service}
    if c.service != c.type:
        ref["serviceName"] = c.service
    return ref


def client_url(c: Connector) -> str | None:
    """The service's URL where the configuration names one: the issuer, else the origin of the
    authorization or token endpoint. None for a connector that names no URL (an API key)."""
    issuer = c.config.get("issuer")
    if isinstance(issuer, str) and issuer:
        return issuer
    for name in ("authorizationUrl", "tokenUrl"):
        url = c.config.get(name)
        if isinstance(url, str) and url:
            parts = urlsplit(url)
            if parts.scheme and parts.netloc:
                return f"{parts.scheme}://{parts.netloc}"
    return None


def token_body(issued: Issued) -> dict[str, Any]:
    body: dict[str, Any] = {
        "token": issued.token,
        "expiresAt": _ms(issued),
        "tokenId": issued.token_id,
        "connector": connector_ref(issued.connector),
    }
    if issued.external_subject is not None:
        body["externalSubject"] = issued.external_subject
        if issued.subject_verified:  # the one claim the broker keeps from a verified ID token
            body["claims"] = {"sub": issued.external_subject}
    if issued.installation_id is not None:
        body["installationId"] = issued.installation_id
    if issued.scopes is not None:
        body["scopes"] = list(issued.scopes)
    metadata: dict[str, Any] = {}
    if not issued.capabilities.short_lived:
        # Honest about static secrets: expiresAt is the broker's re-check horizon, not a provider expiry.
        metadata["expires"] = False
    if issued.scope_unknown:
        # The provider did not state the granted scopes: ``scopes`` is only what was asked for.
        metadata["grantedScopes"] = "unknown"
    if metadata:
        body["metadata"] = metadata
    return body


@router.post(
    "/token/{uid:path}",
    summary="Exchange an identity for a provider credential",
    openapi_extra=TOKEN_BODY,
)
async def token(uid: str, request: Request) -> Response:
    broker = broker_of(request)
    identity = await broker.verifier.verify(bearer(request))
    token_request = parse_token_request(parse_json_object(await request.body()))
    issued = await broker.exchange.exchange(identity, uid, token_request)
    return json_response(token_body(issued))


@router.get("/connectors/{uid:path}", summary="Connector metadata, as the caller's project sees it")
async def connector_metadata(uid: str, request: Request) -> Response:
    broker = broker_of(request)
    identity = await identity_of(request)
    view = await broker.repo.connector_view(identity.team_id, uid)
    if view is None:
        raise NotFound(f"no connector {uid}", connector=uid)
    link = view.links.get(identity.project_id)
    if link is None:
        raise ConnectorNotLinked(
            f"connector is not linked to this project: {uid} is not attached "
            f"to project {identity.project_slug}",
            connector=uid,
            project=identity.project_slug,
        )
    if identity.environment not in link.environments:
        raise EnvironmentNotLinked(
            f"connector {uid} is not attached to project {identity.project_slug} for {identity.environment}",
            connector=uid,
            environment=identity.environment,
            linkedEnvironments=list(link.environments),
        )
    c = view.connector
    caps = broker.providers.get(c.type).capabilities(c)
    return json_response(
        {
            "id": c.id,
            "uid": c.uid,
            "type": c.type,
            "name": c.name,
            "service": c.service,
            "clientUrl": client_url(c),
            "createdAt": int(c.created_at.timestamp() * 1000),
            "updatedAt": int(c.updated_at.timestamp() * 1000),
            "data": dict(c.config),
            "capabilities": caps.to_json(),
            "environments": list(link.environments),
            "policy": link.policy.to_json(),
        }
    )


@router.delete(
    "/connectors/{uid:path}/tokens", summary="Revoke issued tokens", openapi_extra=REVOKE_BODY
)
async def revoke_tokens(uid: str, request: Request) -> Response:
    broker = broker_of(request)
    credential = bearer(request)
    principal: Identity | Member
    if credential.startswith("vk_pt_"):
        principal = await authorize_member(request, credential)
    else:
        principal = await broker.verifier.verify(credential)
    data = parse_json_object(await request.body())
    unknown = set(data) - {"subject", "installationId", "allTokens"}
    if unknown:
        raise InvalidRequest(f"unknown field {sorted(unknown)[0]}", field=sorted(unknown)[0])
    if data.get("installationId") is not None:
        check_text(data["installationId"], "installationId", SUBJECT_ID)
        # No connector type has installations: revoking "only installation X" cannot be honoured.
        raise InstallationRequired(
            f"{uid} has no installations to choose from; drop installationId to revoke "
            "the subject's tokens",
            connector=uid,
            field="installationId",
            reason="installations_not_supported",
        )
    all_tokens = data.get("allTokens", False)
    if not isinstance(all_tokens, bool):
        raise InvalidRequest("allTokens must be a boolean", field="allTokens")
    subject = None if data.get("subject") is None else parse_subject(data["subject"])
    if subject is not None and all_tokens:
        raise InvalidRequest("give a subject or allTokens, not both", field="allTokens")
    if NDJSON not in request.headers.get("accept", ""):
        counts = await broker.exchange.revoke(principal, uid, subject)
        return json_response(counts.to_wire())
    run = await broker.exchange.revocation.begin(principal, uid, subject)
    broker.exchange.counts.revocations += 1
    return StreamingResponse(_progress_lines(run), media_type=NDJSON)


#: Asked for with ``Accept: application/x-ndjson``: revoke-tokens streams its progress.
NDJSON = "application/x-ndjson"
#: Seconds between progress lines while provider revocations run.
PROGRESS_EVERY = 0.25


def _progress_line(run: RevocationRun, *, done: bool) -> bytes:
    line = {
        **run.counts().to_wire(),
        "providerTotal": run.total,
        "providerPending": run.pending,
        "done": done,
    }
    return json.dumps(line, separators=(",", ":")).encode() + b"\n"


async def _progress_lines(run: RevocationRun) -> AsyncIterator[bytes]:
    """One line of counts now, one every ``PROGRESS_EVERY`` seconds while provider calls run
    (only when something changed), and the final counts with ``"done": true``. The client
    going away stops the lines, not the revocation."""
    last = -1
    while run.task is not None and not run.task.done():
        if run.done != last:
            last = run.done
            yield _progress_line(run, done=False)
        await asyncio.wait({run.task}, timeout=PROGRESS_EVERY)
    await run.result()
    yield _progress_line(run, done=True)


_EXCHANGE_PREFIX = "/v1/connect/token/"
_IMPORT_SUFFIX = "/import"  # POST /v1/connect/token/{uid}/import is consent's route, matched first


class TokenShortcut:
    """``POST /v1/connect/token/{uid}`` straight to :func:`token`, before the router: the hot path.

    FastAPI's router tries every route in order (~80 on this app, each a regex and a scope
    copy) before it reaches the token route; on a cache hit that was the largest single cost of
    the request. This middleware sits inside ``Admission`` and ``BodyLimit`` (both still apply)
    and takes exactly the requests the router would hand to :func:`token`: method POST, a path
    under ``/v1/connect/token/`` with a non-empty rest that does not end in ``/import`` (consent's import route, which
    the router matches first). Everything else goes to the router unchanged; the route stays
    registered, so OpenAPI documents it as before. Path parameters are bounded as on every
    Connect route, and a refusal gets the same envelope as from the router's exception handler;
    an unexpected error reaches the same outermost handler (500 ``internal_error``).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    @staticmethod
    def takes(scope: Scope) -> str | None:
        """The ``uid`` when the router would route ``scope`` to :func:`token`, else None."""
        if scope["type"] != "http" or scope["method"] != "POST":
            return None
        path = get_route_path(scope)
        if not path.startswith(_EXCHANGE_PREFIX) or path.endswith(_IMPORT_SUFFIX):
            return None
        return path[len(_EXCHANGE_PREFIX) :] or None  # an empty uid is the router's (404)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        uid = self.takes(scope)
        if uid is None:
            await self.app(scope, receive, send)
            return
        scope["path_params"] = {"uid": uid}
        request = Request(scope, receive, send)
        try:
            check_path_params(scope["path_params"])
            response = await token(uid, request)
        except ValetkeyError as exc:
            response = error_response(exc)
        await response(scope, receive, send)
