"""User consent over HTTP: start, confirm, the provider callback, the device page, token import."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Form, Request
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.responses import HTMLResponse, RedirectResponse, Response

from valetkey.core import limits
from valetkey.core.authorizations import PendingAuthorization
from valetkey.core.consent_cases import ConsentRequest, TokenImport
from valetkey.errors import InvalidRequest, ValetkeyError
from valetkey.server.connect import DirectRoute, bearer, broker_of, connector_ref, json_response
from valetkey.server.openapi import AUTHORIZE_BODY, CONFIRM_BODY, IMPORT_BODY, STATUS_BODY
from valetkey.server.roles import authorize_member
from valetkey.server.wire import parse_json_object, parse_subject, parse_token_request

router = APIRouter(tags=["consent"], route_class=DirectRoute)  # path parameters bounded there

_templates = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(["html"]),
)
_SECURITY_HEADERS = {
    "cache-control": "no-store",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self' https: http:",
}


def page(
    title: str,
    message: str = "",
    *,
    status: int = 200,
    error: bool = False,
    form: bool = False,
    user_code: str | None = None,
) -> HTMLResponse:
    html = _templates.get_template("page.html").render(
        title=title, message=message, error=error, form=form, user_code=user_code
    )
    return HTMLResponse(html, status, headers=_SECURITY_HEADERS)


#: Far above the consent service's own ceiling (1 hour), which gives the exact refusal.
_MAX_EXPIRES_IN_MS = 86_400_000

_AUTHORIZE_FIELDS = {
    "subject",
    "scopes",
    "returnUrl",
    "callbackUrl",
    "webhook",
    "deviceCode",
    "expiresInMs",
    "installationId",
    "loginHint",
    "prompt",
    # The token parameters the official clients' adapters spread into the request (wire.py parses
    # them as a token request's): resources are forwarded, audience is checked against the link,
    # authorizationDetails refused, validityBufferMs (a client-side cache margin) ignored.
    "audience",
    "resources",
    "authorizationDetails",
    "validityBufferMs",
}
#: OpenID Connect Core §3.1.2.1: space-separated values (``none``, ``login``, ``consent``,
#: ``select_account``, or a provider's own such as ``create``).
_PROMPT = re.compile(r"^[A-Za-z0-9_-]{1,40}( [A-Za-z0-9_-]{1,40}){0,7}$")


def _request_state(done: PendingAuthorization) -> Response:
    """One consent request's state on the wire: its id, status, user (and the user's issuer)."""
    body = {"request": done.id, "status": done.status, "user": done.user_id}
    if done.user_issuer is not None:
        body["issuer"] = done.user_issuer
    return json_response(body)


@router.post(
    "/v1/connect/authorize/{uid:path}/confirm",
    summary="Confirm that the person who consented is the user named",
    openapi_extra=CONFIRM_BODY,
)
async def confirm(uid: str, request: Request) -> Response:
    broker = broker_of(request)
    identity = await broker.verifier.verify(bearer(request))
    data = parse_json_object(await request.body())
    request_id = limits.check_text(data.get("request"), "request", 64)
    verifier = limits.check_text(data.get("verifier"), "verifier", 256)
    return _request_state(await broker.consent_cases.confirm(identity, uid, request_id, verifier))


@router.post(
    "/v1/connect/authorize/{uid:path}/status",
    summary="The state of one consent request (a device request is polled at the provider)",
    openapi_extra=STATUS_BODY,
)
async def status(uid: str, request: Request) -> Response:
    broker = broker_of(request)
    identity = await broker.verifier.verify(bearer(request))
    data = parse_json_object(await request.body())
    request_id = limits.check_text(data.get("request"), "request", 64)
    return _request_state(await broker.consent_cases.watch(identity, uid, request_id))


@router.post(
    "/v1/connect/authorize/{uid:path}",
    summary="Start a user's consent (callback, webhook or device code)",
    openapi_extra=AUTHORIZE_BODY,
)
async def authorize(uid: str, request: Request) -> Response:
    broker = broker_of(request)
    identity = await broker.verifier.verify(bearer(request))
    data = parse_json_object(await request.body())
    unknown = set(data) - _AUTHORIZE_FIELDS
    if unknown:
        raise InvalidRequest(f"unknown field {sorted(unknown)[0]}", field=sorted(unknown)[0])
    subject = parse_subject(data.get("subject"))
    if subject.type != "user":
        raise InvalidRequest(
            'consent is for a user subject: {"type": "user", "id": ...}', field="subject.type"
        )
    targets = parse_token_request(
        {"subject": {"type": "app"}}
        | {
            k: data[k]
            for k in ("scopes", "audience", "resources", "authorizationDetails", "validityBufferMs")
            if k in data
        }
    )
    prompt = data.get("prompt")
    if prompt is not None and (not isinstance(prompt, str) or not _PROMPT.fullmatch(prompt)):
        raise InvalidRequest(
            "prompt must be OpenID Connect prompt values separated by spaces (e.g. consent)",
            field="prompt",
        )
    return_url = data.get("returnUrl") or data.get("callbackUrl")
    webhook = data.get("webhook")
    device = data.get("deviceCode", False)
    for name, value, limit in (
        ("returnUrl", return_url, limits.URL),
        ("webhook", webhook, limits.URL),
        ("loginHint", data.get("loginHint"), limits.NAME),
        ("installationId", data.get("installationId"), limits.SUBJECT_ID),
    ):
        if value is not None:
            # Printable only: urlsplit drops CR/LF/TAB silently; refuse them rather than store them.
            limits.check_text(value, name, limit)
    if not isinstance(device, bool):
        raise InvalidRequest("deviceCode must be a boolean", field="deviceCode")
    lifetime = None
    if data.get("expiresInMs") is not None:
        ms = data["expiresInMs"]
        if isinstance(ms, bool) or not isinstance(ms, int) or not 0 < ms <= _MAX_EXPIRES_IN_MS:
            # Bounded before timedelta(), which overflows (OverflowError, a 500) past ~10^17 ms.
            raise InvalidRequest(
                "expiresInMs must be a positive integer (30 seconds to 1 hour)", field="expiresInMs"
            )
        lifetime = timedelta(milliseconds=ms)
    began = await broker.consent_cases.authorize(
        identity,
        uid,
        ConsentRequest(
            subject=subject,
            scopes=targets.scopes,
            return_url=return_url,
            webhook_url=webhook,
            device=device,
            lifetime=lifetime,
            login_hint=data.get("loginHint"),
            prompt=prompt,
            resources=targets.resources,
            audience=targets.audience,
            installation_id=data.get("installationId"),
        ),
    )
    started = began.started
    body: dict[str, Any] = {
        "url": started.url,
        "request": started.authorization.id,
        "verifier": started.verifier,
        "expiresAt": int(started.authorization.expires_at.timestamp() * 1000),
        "connector": connector_ref(began.connector),
    }
    if started.user_code is not None:
        body["deviceCode"] = started.user_code
        body["interval"] = started.authorization.interval
    return json_response(body)


@router.get("/v1/connect/callback", include_in_schema=False)
async def callback(request: Request) -> Response:
    broker = broker_of(request)
    q = request.query_params
    for name in ("state", "code", "error"):
        value = q.get(name) or ""
        if len(value) > 4096 or not value.isprintable():
            return page("Invalid link", "This consent link is malformed.", status=400, error=True)

    result = await broker.consent.callback(
        broker.connector_flows, state=q.get("state"), code=q.get("code"), error=q.get("error")
    )
    if result.redirect is not None:
        return RedirectResponse(
            result.redirect,
            303,
            headers={"cache-control": "no-store", "referrer-policy": "no-referrer"},
        )
    return page(result.title, result.message, status=200 if result.ok else 400, error=not result.ok)


@router.get("/device", include_in_schema=False)
async def device_page(user_code: str | None = None) -> Response:
    return page("Connect your account", form=True, user_code=(user_code or "")[:12])


@router.post("/device", include_in_schema=False)
async def device_submit(
    request: Request, user_code: str = Form(default="", max_length=32)
) -> Response:
    broker = broker_of(request)
    try:
        target = await broker.consent.device_redirect(user_code)
    except ValetkeyError as exc:
        return page("Connect your account", exc.message, status=400, error=True, form=True)
    return RedirectResponse(
        target, 303, headers={"cache-control": "no-store", "referrer-policy": "no-referrer"}
    )


_IMPORT_FIELDS = {
    "subject",
    "accessToken",
    "refreshToken",
    "expiresAt",
    "expiresIn",
    "scopes",
    "project",
    "environment",
}


@router.post(
    "/v1/connect/token/{uid:path}/import",
    summary="Import a user's existing tokens as a grant, without a consent round",
    openapi_extra=IMPORT_BODY,
)
async def import_tokens(uid: str, request: Request) -> Response:
    broker = broker_of(request)
    credential = bearer(request)
    data = parse_json_object(await request.body())
    unknown = set(data) - _IMPORT_FIELDS
    if unknown:
        raise InvalidRequest(f"unknown field {sorted(unknown)[0]}", field=sorted(unknown)[0])
    for name in ("project", "environment"):
        if data.get(name) is not None:
            limits.check_text(data[name], name, limits.SLUG)
    if credential.startswith("vk_pt_"):
        member = await authorize_member(request, credential)
        identity = await broker.services.projects.identity_for(
            member, data.get("project"), data.get("environment")
        )
    else:
        identity = await broker.verifier.verify(credential)
    subject = parse_subject(data.get("subject"))
    if subject.type != "user":
        raise InvalidRequest("tokens are imported for a user subject", field="subject.type")
    access = data.get("accessToken")
    if not isinstance(access, str) or not access or len(access) > limits.TOKEN:
        raise InvalidRequest("accessToken must be a non-empty string", field="accessToken")
    refresh = data.get("refreshToken")
    if refresh is not None and (
        not isinstance(refresh, str) or not refresh or len(refresh) > limits.TOKEN
    ):
        raise InvalidRequest("refreshToken must be a non-empty string", field="refreshToken")
    expires_at = _import_expiry(data, broker.clock.now())
    scopes = parse_token_request({"subject": {"type": "app"}, "scopes": data.get("scopes")}).scopes
    grant = await broker.consent_cases.import_tokens(
        identity,
        uid,
        TokenImport(
            subject=subject,
            access_token=access,
            refresh_token=refresh,
            expires_at=expires_at,
            scopes=scopes,
        ),
    )
    return json_response(
        {
            "grantId": grant.grant_id,
            "subject": {"type": "user", "id": grant.subject.id}
            | ({} if grant.subject.issuer is None else {"issuer": grant.subject.issuer}),
            "expiresAt": None
            if grant.expires_at is None
            else int(grant.expires_at.timestamp() * 1000),
            "refreshable": grant.refreshable,
            "scopes": None if grant.scopes is None else list(grant.scopes),
        },
        201,
    )


def _import_expiry(data: dict[str, Any], now: datetime) -> datetime | None:
    if data.get("expiresAt") is not None and data.get("expiresIn") is not None:
        raise InvalidRequest("give expiresAt or expiresIn, not both", field="expiresAt")
    if data.get("expiresAt") is not None:
        ms = data["expiresAt"]
        if isinstance(ms, bool) or not isinstance(ms, int) or ms <= 0:
            raise InvalidRequest("expiresAt is epoch milliseconds", field="expiresAt")
        try:
            return datetime.fromtimestamp(ms / 1000, UTC)
        except (OverflowError, ValueError, OSError) as exc:
            raise InvalidRequest("expiresAt is out of range", field="expiresAt") from exc
    if data.get("expiresIn") is not None:
        seconds = data["expiresIn"]
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int)
            or not 0 < seconds <= 10 * 365 * 86400
        ):
            raise InvalidRequest("expiresIn is a positive number of seconds", field="expiresIn")
        return now + timedelta(seconds=seconds)
    return None
