"""Bad input gets a clear, typed error and changes nothing, across the broker's whole HTTP surface.

Two halves, each on its own real broker (SQLite, a loopback port):

- Schema-driven fuzzing: schemathesis reads the broker's own ``/openapi.json`` and sends every
  operation 25 derandomized examples per pass (valid and invalid data, path parameters either
  generated or pinned to real state so bodies reach deep code), with the owner credential on the
  management API and a development identity on the Connect API. Checks: no 5xx, the documented
  content type, and every 4xx body is the envelope ``{"error": {"code": str, "message": str}}``.
- Hand-written hostile input the generator does not reach (nesting, bytes, lengths, control
  characters, numbers out of range), each class followed by a check that no state changed.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest
import schemathesis
import sqlalchemy as sa
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from valetkey.store import tables
from valetkey.testing import RunningBroker, running_broker

MAX_EXAMPLES = 25

#: Every operation the schema documents; a new one fails test_every_operation_is_fuzzed until added.
OPERATIONS = [
    "POST /v1/connect/authorize/{uid}/confirm",
    "POST /v1/connect/authorize/{uid}/status",
    "POST /v1/connect/authorize/{uid}",
    "POST /v1/connect/token/{uid}/import",
    "POST /v1/connect/token/{uid}",
    "GET /v1/connect/connectors/{uid}",
    "DELETE /v1/connect/connectors/{uid}/tokens",
    "GET /v1/me",
    "POST /v1/me/credential",
    "GET /v1/members",
    "POST /v1/members",
    "DELETE /v1/members/{member_id}",
    "GET /v1/projects",
    "POST /v1/projects",
    "GET /v1/projects/{project}",
    "POST /v1/projects/{project}/environments",
    "GET /v1/projects/{project}/environments",
    "POST /v1/projects/{project}/development-identity",
    "POST /v1/connectors",
    "GET /v1/connectors",
    "POST /v1/connectors/{uid}/links",
    "POST /v1/connectors/{uid}/detach",
    "GET /v1/connectors/{uid}",
    "PATCH /v1/connectors/{uid}",
    "DELETE /v1/connectors/{uid}",
    "POST /v1/projects/{project}/trust-bindings",
    "GET /v1/trust-bindings",
    "DELETE /v1/trust-bindings/{binding_id}",
    "POST /v1/projects/{project}/access-tokens",
    "GET /v1/access-tokens",
    "DELETE /v1/access-tokens/{token_id}",
    "GET /v1/audit",
    "GET /v1/usage",
    "GET /v1/jobs",
    "POST /v1/jobs/{job_id}/retry",
    "GET /metrics",
    "GET /.well-known/openid-configuration",
    "GET /.well-known/jwks.json",
    "GET /healthz",
    "GET /readyz",
]
#: Operations not fuzzed, with the reason. Empty: every documented operation is fuzzed. (The
#: browser routes /v1/connect/callback and /device are not in the schema; they answer HTML and
#: are covered by tests/integration/test_consent_flows.py.)
EXCLUDED: dict[str, str] = {}

OAUTH = {
    "tokenUrl": "http://127.0.0.1:9/token",  # never contacted: starting consent only builds a URL
    "authorizationUrl": "http://127.0.0.1:9/authorize",
    "clientId": "fuzz-client",
    "clientSecret": "fuzz-secret",
    "grants": ["authorization_code", "client_credentials"],
    "scopes": ["read", "write"],
}


@dataclass
class Seeded:
    broker: RunningBroker
    identity: str  # a development identity for project "fuzz"
    access_token: str  # a development access token for project "fuzz"
    binding_id: str
    spare_token_id: str
    spare_member_id: str
    dead_job_id: str  # a dead-lettered job of the team (a kind no handler runs)


def _ok(response: httpx2.Response) -> Any:
    assert response.status_code < 400, f"{response.request.url.path}: {response.text}"
    return response.json()


def _seed(broker: RunningBroker) -> Seeded:
    identity = broker.setup_project(
        "fuzz",
        {"api-key/search": {"apiKey": "sk-fuzz"}, "api-key/spare": {"apiKey": "sk-spare"}},
    )
    with broker.admin() as c:
        _ok(c.post("/v1/connectors", json={"service": "oauth", "name": "acme", "data": OAUTH}))
        _ok(
            c.post(
                "/v1/connectors/oauth/acme/links",
                json={
                    "project": "fuzz",
                    "environments": ["development"],
                    "subjects": ["app", "user"],
                },
            )
        )
        binding = _ok(
            c.post(
                "/v1/projects/fuzz/trust-bindings",
                json={
                    "environment": "preview",
                    "issuer": "https://issuer.example",
                    "audience": "valetkey",
                    "claims": {"repository_id": "42"},
                },
            )
        )
        token = _ok(c.post("/v1/projects/fuzz/access-tokens", json={"environment": "development"}))
        spare = _ok(c.post("/v1/projects/fuzz/access-tokens", json={"environment": "preview"}))
        member = _ok(c.post("/v1/members", json={"name": "spare", "role": "viewer"}))
        team = _ok(c.get("/v1/me"))["team"]

    async def dead_job() -> str:
        job_id: str = await broker.broker.jobs.enqueue("fuzz", {}, team_id=team, max_attempts=1)
        async with broker.broker.db.session.begin() as s:
            await s.execute(
                sa.update(tables.Job).where(tables.Job.id == job_id).values(status="dead")
            )
        return job_id

    return Seeded(
        broker,
        identity,
        token["token"],
        binding["id"],
        spare["id"],
        member["id"],
        broker.run(dead_job()),
    )


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    """A broker the fuzzer may change at will."""
    with running_broker(tmp_path_factory.mktemp("fuzz") / "data") as broker:
        yield _seed(broker)


@pytest.fixture(scope="module")
def schema(fuzzed: Seeded) -> Any:
    return schemathesis.openapi.from_url(f"{fuzzed.broker.url}/openapi.json")


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    """A broker whose state the hand-written cases compare before and after."""
    with running_broker(tmp_path_factory.mktemp("hostile") / "data") as broker:
        yield _seed(broker)


# -- checks ---------------------------------------------------------------------------------


def error_envelope(_ctx: Any, response: Any, case: Case) -> None:
    """Every 4xx body is {"error": {"code": str, "message": str, ...}}."""
    if not 400 <= response.status_code < 500:
        return
    try:
        body = json.loads(response.content)
    except ValueError as exc:
        raise AssertionError(
            f"{case.operation.label}: a {response.status_code} that is not JSON"
        ) from exc
    error = body.get("error") if isinstance(body, dict) else None
    assert isinstance(error, dict), f"{case.operation.label}: no error envelope: {body!r}"
    assert isinstance(error.get("code"), str), body
    assert error["code"], body
    assert isinstance(error.get("message"), str), body
    assert error["message"], body


CHECKS: list[Callable[..., Any]] = [
    not_a_server_error,
    content_type_conformance,
    response_schema_conformance,  # every response matches its documented model
    error_envelope,
]


def _credential(seeded: Seeded, path: str) -> dict[str, str]:
    if path == "/v1/me/credential":
        # Rotation ends the credential it is called with: each case rotates a fresh member's.
        with seeded.broker.admin() as c:
            fresh = _ok(c.post("/v1/members", json={"name": f"rot-{secrets.token_hex(6)}"}))
        return {"authorization": f"Bearer {fresh['credential']}"}
    if path.startswith("/v1/connect/"):
        return {"authorization": f"Bearer {seeded.identity}"}
    if path.startswith("/v1/"):
        return {"authorization": f"Bearer {seeded.broker.owner_token}"}
    return {}


def _pinned(seeded: Seeded, label: str) -> dict[str, str]:
    """Path parameters naming real state, so generated bodies get past the lookup."""
    consent = "/authorize/" in label or label.endswith("/import")
    destructive = label.startswith("DELETE /v1/connectors/") or label.endswith("/detach")
    uid = "oauth/acme" if consent else "api-key/spare" if destructive else "api-key/search"
    return {
        "uid": uid,
        "project": "fuzz",
        "binding_id": seeded.binding_id,
        "token_id": seeded.spare_token_id,
        "member_id": seeded.spare_member_id,
        "job_id": seeded.dead_job_id,
    }


def _fuzz(
    seeded: Seeded, operation: Any, mode: GenerationMode, pinned: dict[str, str] | None
) -> None:

    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
    )
    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=pinned))
    def run(case: Case) -> None:
        headers = _credential(seeded, operation.path)
        response = case.call(base_url=seeded.broker.url, headers=headers, timeout=15)
        case.validate_response(response, checks=CHECKS, headers=headers)

    run()


def test_every_operation_is_fuzzed(schema: Any) -> None:
    """The fuzzed list is exactly the schema's operations: nothing is left out silently."""
    documented = {result.ok().label for result in schema.get_all_operations()}
    assert documented == set(OPERATIONS) | set(EXCLUDED)
    assert not set(OPERATIONS) & set(EXCLUDED)


def test_schema_documents_the_connect_bodies_and_the_error_envelope(schema: Any) -> None:
    """The Connect API's hand-parsed bodies are documented, and refusals as the 4XX envelope, never 422."""
    raw = schema.raw_schema
    token = raw["paths"]["/v1/connect/token/{uid}"]["post"]
    assert token["requestBody"]["content"]["application/json"]["schema"]["required"] == ["subject"]
    for path_item in raw["paths"].values():
        for operation in path_item.values():
            assert "422" not in operation["responses"]
            assert operation["responses"]["4XX"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/ErrorEnvelope"
            }


@pytest.mark.parametrize("label", OPERATIONS)
def test_fuzzed_operation_answers_typed_errors(fuzzed: Seeded, schema: Any, label: str) -> None:
    """Generated valid and invalid requests never get a 5xx, and every refusal is the error envelope."""
    method, path = label.split(" ", 1)
    operation = schema[path][method]
    pinned = {p.name: _pinned(fuzzed, label)[p.name] for p in operation.path_parameters}
    for path_parameters in ({}, pinned) if pinned else ({},):
        _fuzz(fuzzed, operation, GenerationMode.POSITIVE, path_parameters or None)
        # Unsatisfiable: nothing in this operation can be made invalid by the schema (no body,
        # no constrained parameter); the positive pass above already sent what there is to send.
        with contextlib.suppress(Unsatisfiable):
            _fuzz(fuzzed, operation, GenerationMode.NEGATIVE, path_parameters or None)


# -- hand-written hostile input ---------------------------------------------------------------


def _snapshot(broker: RunningBroker) -> dict[str, Any]:
    """Everything a bad request could have changed, as the management API shows it."""
    with broker.admin() as c:
        allowed = _ok(c.get("/v1/audit", params={"decision": "allowed", "limit": 1000}))
        return {
            "usage": _ok(c.get("/v1/usage"))["counters"],
            "connectors": _ok(c.get("/v1/connectors")),
            "allowed": [(e["id"], e["action"]) for e in allowed],
            "projects": _ok(c.get("/v1/projects")),
            # last use is written by the snapshot's own requests (once a minute): not state
            "members": [
                {k: v for k, v in m.items() if k != "lastUsedAt"} for m in _ok(c.get("/v1/members"))
            ],
            "access_tokens": _ok(c.get("/v1/access-tokens")),
            "bindings": _ok(c.get("/v1/trust-bindings")),
        }


def _refused(response: httpx2.Response, *statuses: int) -> dict[str, Any]:
    """Assert a refusal with one of ``statuses`` and the error envelope; return the error."""
    assert response.status_code in statuses, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/json")
    error: dict[str, Any] = response.json()["error"]
    assert isinstance(error["code"], str)
    assert isinstance(error["message"], str)
    return error


@pytest.fixture
def unchanged(hostile: Seeded) -> Iterator[Seeded]:
    """The hostile broker, checked afterwards to hold exactly the state it held before."""
    before = _snapshot(hostile.broker)
    yield hostile
    assert _snapshot(hostile.broker) == before


def _post(
    seeded: Seeded, path: str, body: bytes, *, owner: bool = False, method: str = "POST"
) -> httpx2.Response:
    credential = seeded.broker.owner_token if owner else seeded.identity
    return httpx2.request(
        method,
        seeded.broker.url + path,
        content=body,
        headers={"authorization": f"Bearer {credential}", "content-type": "application/json"},
        timeout=10,
    )


# (method, path, owner credential?) for each kind of body the broker reads
BODIES = [
    ("POST", "/v1/connect/token/api-key%2Fsearch", False),
    ("POST", "/v1/connect/authorize/oauth%2Facme", False),
    ("POST", "/v1/connect/authorize/oauth%2Facme/confirm", False),
    ("POST", "/v1/connect/token/oauth%2Facme/import", False),
    ("DELETE", "/v1/connect/connectors/api-key%2Fsearch/tokens", False),
    ("POST", "/v1/projects", True),
    ("POST", "/v1/connectors", True),
    ("PATCH", "/v1/connectors/api-key%2Fsearch", True),
    ("POST", "/v1/projects/fuzz/access-tokens", True),
]


@pytest.mark.parametrize(("method", "path", "owner"), BODIES)
def test_deeply_nested_json_is_refused_quickly(
    unchanged: Seeded, method: str, path: str, owner: bool
) -> None:
    """10 000 nested lists (bare, and under a field) get a 400, never a 500 or a hang, and change nothing."""
    deep = b"[" * 10_000 + b"]" * 10_000
    for body in (deep, b'{"subject":' + deep + b"}", b'{"data":' + deep + b"}"):
        _refused(_post(unchanged, path, body, owner=owner, method=method), 400, 413)


@pytest.mark.parametrize(("method", "path", "owner"), BODIES[:5])
def test_connect_bodies_nested_past_the_limit_are_refused(
    unchanged: Seeded, method: str, path: str, owner: bool
) -> None:
    """Regression: nesting the JSON decoder accepts (~900 levels) but recursive code would not is a 400."""
    for depth in (33, 900):
        claims = b'{"a":' * depth + b"1" + b"}" * depth
        body = b'{"subject":{"type":"jwt-bearer","sub":"x","additionalClaims":' + claims + b"}}"
        error = _refused(_post(unchanged, path, body, owner=owner, method=method), 400)
        assert "nested deeper than 32" in error["message"]


def test_nesting_within_the_limit_still_parses(hostile: Seeded) -> None:
    """A body nested 32 levels deep is read (and refused for its content, not its shape)."""
    claims = b'{"a":' * 29 + b"1" + b"}" * 29
    body = b'{"subject":{"type":"jwt-bearer","sub":"x","additionalClaims":' + claims + b"}}"
    error = _refused(_post(hostile, "/v1/connect/token/api-key%2Fsearch", body), 400, 403)
    assert "nested" not in error["message"]


@pytest.mark.parametrize(("method", "path", "owner"), BODIES)
def test_invalid_utf8_bodies_are_refused(
    unchanged: Seeded, method: str, path: str, owner: bool
) -> None:
    """Bodies that are not UTF-8 (or not JSON at all) get a 400 envelope and change nothing."""
    for body in (
        b'{"subject": "\xff\xfe"}',
        b"\xc0\xaf",
        b'{"slug": "\xed\xa0\x80"}',
        b"\x00" * 64,
    ):
        _refused(_post(unchanged, path, body, owner=owner, method=method), 400)


HOSTILE_IDS = [
    "..%2F..%2Fetc%2Fpasswd",
    "api-key/../search",
    "api-key%2F..%2Fsearch",
    "api-key%00search",
    "%00",
    "%ff%fe",
    "%C0%AF",
    "a" * 10_240,
    "api-key%2F" + "a" * 10_240,
]


@pytest.mark.parametrize("uid", HOSTILE_IDS, ids=lambda u: u[:24])
def test_hostile_ids_in_paths_are_refused(unchanged: Seeded, uid: str) -> None:
    """Traversal, NUL bytes, broken percent-encoding and 10 KB ids get a 4xx envelope on every route."""
    b, owner = unchanged.broker, {"authorization": f"Bearer {unchanged.broker.owner_token}"}
    app = {"authorization": f"Bearer {unchanged.identity}"}
    answers = [
        httpx2.post(
            f"{b.url}/v1/connect/token/{uid}", json={"subject": {"type": "app"}}, headers=app
        ),
        httpx2.get(f"{b.url}/v1/connect/connectors/{uid}", headers=app),
        httpx2.request(
            "DELETE", f"{b.url}/v1/connect/connectors/{uid}/tokens", json={}, headers=app
        ),
        httpx2.post(
            f"{b.url}/v1/connect/authorize/{uid}",
            json={"subject": {"type": "user", "id": "u"}, "deviceCode": True},
            headers=app,
        ),
        httpx2.get(f"{b.url}/v1/connectors/{uid}", headers=owner),
        httpx2.patch(f"{b.url}/v1/connectors/{uid}", json={"data": {}}, headers=owner),
        httpx2.delete(f"{b.url}/v1/connectors/{uid}", headers=owner),
        httpx2.get(f"{b.url}/v1/projects/{uid}", headers=owner),
        httpx2.delete(f"{b.url}/v1/access-tokens/{uid}", headers=owner),
        httpx2.delete(f"{b.url}/v1/trust-bindings/{uid}", headers=owner),
        httpx2.delete(f"{b.url}/v1/members/{uid}", headers=owner),
    ]
    for answer in answers:
        _refused(answer, 400, 403, 404)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/back\r\nSet-Cookie: session=stolen",
        "http://127.0.0.1/back\nLocation: https://evil.example",
        "https://app.example/back\tx",
        "https://app.example/\x00",
        "https://app.example/\x85",
    ],
)
def test_control_characters_in_consent_urls_are_refused(unchanged: Seeded, url: str) -> None:
    """Regression: CR/LF/TAB/NUL in returnUrl, callbackUrl, webhook or loginHint is a 400 naming the field.

    (``urlsplit`` silently drops CR/LF/TAB, so the URL used to pass its check and be stored raw.)
    """
    for field in ("returnUrl", "callbackUrl", "webhook", "loginHint"):
        body: dict[str, Any] = {"subject": {"type": "user", "id": "u1"}, field: url}
        if field == "loginHint":
            body["returnUrl"] = "http://127.0.0.1/back"
        answer = _post(unchanged, "/v1/connect/authorize/oauth%2Facme", json.dumps(body).encode())
        error = _refused(answer, 400)
        assert error["field"] == ("returnUrl" if field == "callbackUrl" else field)


@pytest.mark.parametrize("length", [16_385, 20_000])
def test_oversized_bearer_tokens_are_refused(unchanged: Seeded, length: int) -> None:
    """A 16-20 KB bearer token (member-shaped or not) is a 401 envelope with a challenge, on both APIs."""
    b = unchanged.broker
    for token in ("a" * length, "vk_pt_" + "a" * length):
        header = {"authorization": f"Bearer {token}"}
        for answer in (
            httpx2.get(f"{b.url}/v1/me", headers=header),
            httpx2.post(
                f"{b.url}/v1/connect/token/api-key%2Fsearch",
                json={"subject": {"type": "app"}},
                headers=header,
            ),
        ):
            _refused(answer, 401)
            assert answer.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "slug",
    [
        "fu\u0437\u0437",  # Cyrillic ze for z
        "\u0066\u0075\u200bzz",  # zero-width space
        "\uff46\uff55\uff5a\uff5a",  # fullwidth
        "fuzz\u0301",  # combining accent
        "Fuzz",
        "fu zz",
        "-",
        "a" * 65,
        "\x00",
        "",
    ],
)
def test_confusable_and_malformed_slugs_are_refused(unchanged: Seeded, slug: str) -> None:
    """Project, environment and connector names that only look like ASCII slugs get a 400 and create nothing."""
    with unchanged.broker.admin() as c:
        _refused(c.post("/v1/projects", json={"slug": slug}), 400)
        _refused(c.post("/v1/projects/fuzz/environments", json={"slug": slug}), 400)
        _refused(
            c.post(
                "/v1/connectors", json={"service": "api-key", "name": slug, "data": {"apiKey": "k"}}
            ),
            400,
        )


BAD_NUMBERS = [
    b"1e300",
    b"-1",
    b"true",
    b"1.5",
    b'"60"',
    b"9" * 400,
    b"-" + b"9" * 400,
    b"NaN",
    b"Infinity",
]


@pytest.mark.parametrize("number", BAD_NUMBERS, ids=lambda n: n[:12].decode())
def test_out_of_range_numbers_are_refused(unchanged: Seeded, number: bytes) -> None:
    """1e300, -1, true, fractions, strings and 400-digit integers in numeric fields get a 400 envelope."""
    owner_cases = [
        ("/v1/projects/fuzz/access-tokens", b'{"environment":"development","expiresInSeconds":%s}'),
        ("/v1/projects/fuzz/development-identity", b'{"ttlSeconds":%s}'),
        (
            "/v1/connectors/api-key%2Fspare/links",
            b'{"project":"fuzz","environments":["preview"],"maxLifetimeSeconds":%s}',
        ),
    ]
    for path, template in owner_cases:
        _refused(_post(unchanged, path, template % number, owner=True), 400)
    app_cases = [
        (
            "/v1/connect/authorize/oauth%2Facme",
            b'{"subject":{"type":"user","id":"u"},"returnUrl":"http://127.0.0.1/b","expiresInMs":%s}',
        ),
        (
            "/v1/connect/token/oauth%2Facme/import",
            b'{"subject":{"type":"user","id":"u"},"accessToken":"x","expiresAt":%s}',
        ),
        (
            "/v1/connect/token/oauth%2Facme/import",
            b'{"subject":{"type":"user","id":"u"},"accessToken":"x","expiresIn":%s}',
        ),
    ]
    for path, template in app_cases:
        error = _refused(_post(unchanged, path, template % number), 400)
        assert error["code"] == "invalid_request"
    with unchanged.broker.admin() as c:
        _refused(c.get("/v1/audit", params={"limit": number.decode()}), 400)


@pytest.mark.parametrize("ms", [10**300, 2**63, -(2**63), -1, 0])
def test_expires_in_ms_out_of_range_is_a_400(unchanged: Seeded, ms: int) -> None:
    """Regression: a huge expiresInMs overflowed timedelta() into a 500; zero silently meant the default."""
    body = {
        "subject": {"type": "user", "id": "u"},
        "returnUrl": "http://127.0.0.1/b",
        "expiresInMs": ms,
    }
    error = _refused(
        _post(unchanged, "/v1/connect/authorize/oauth%2Facme", json.dumps(body).encode()), 400
    )
    assert error["field"] == "expiresInMs"
