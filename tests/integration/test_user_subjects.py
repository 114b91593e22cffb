"""A user subject is (issuer, id): the same id under another issuer, or under none, is another
person, with its own grant, cache entries, ledger rows and revocation; a link names the issuers
it accepts. On SQLite and PostgreSQL, through the real broker (and a second one on the same
store, which starts with an empty memory cache and reads the shared cache rows), with grants
imported or made by consent at the real oidc-provider peer.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from tests.peers.oidc import OidcProviderPeer, confidential_client, oidc_peer_fixture
from vercel.api import session
from vercel.connect import (
    ConnectApiError,
    ConnectOptions,
    ConnectServiceOptions,
    ConnectUserTokenSubject,
    get_token,
)

import valetkey
from valetkey.store import tables
from valetkey.store.db import MIGRATIONS, Database
from valetkey.testing import RunningBroker, free_port, running_broker

ISSUER_A = "https://idp-a.example.test"
ISSUER_B = "https://idp-b.example.test/tenant/v2.0"
ISSUER_C = "https://idp-c.example.test"
SECRET = "subjects-web-secret-0123"
#: The consent test's broker listens here: the peer must know its callback as a redirect URI.
PORT = free_port()
CALLBACK = f"http://127.0.0.1:{PORT}/v1/connect/callback"
RETURN_URL = "http://127.0.0.1:9/back"
PUBLIC_URL = "http://valetkey-subjects.test"

oidc_peer = oidc_peer_fixture(
    {
        "scopes": ["read"],
        "clients": [
            confidential_client(
                "subjects-web",
                SECRET,
                grant_types=("authorization_code", "refresh_token"),
                redirect_uris=[CALLBACK],
                scope="openid read",
            )
        ],
    }
)

#: User ids that a naive key would confuse: plain, holding the key's separators, the longest.
IDS = ["alice", "a@b|c:user@x", "u" * 200]


def _subject(user: str, issuer: str | None) -> dict[str, Any]:
    subject: dict[str, Any] = {"type": "user", "id": user}
    if issuer is not None:
        subject["issuer"] = issuer
    return subject


class App:
    """One project linked to one user-capable oauth connector, with its development identity."""

    def __init__(self, broker: RunningBroker, identity: str, uid: str) -> None:
        self.broker, self.identity, self.uid = broker, identity, uid

    def post(self, path: str, body: dict[str, Any], url: str | None = None) -> httpx2.Response:
        return httpx2.post(
            f"{url or self.broker.url}{path}",
            json=body,
            headers={"authorization": f"Bearer {self.identity}"},
            timeout=30,
        )

    def token(
        self, user: str, issuer: str | None, url: str | None = None, **body: Any
    ) -> httpx2.Response:
        return self.post(
            f"/v1/connect/token/{self.uid}", {"subject": _subject(user, issuer), **body}, url
        )

    def served(self, user: str, issuer: str | None, url: str | None = None) -> str | None:
        """The token served for (issuer, user), or None when it is user_authorization_required."""
        answer = self.token(user, issuer, url)
        if answer.status_code == 403:
            assert answer.json()["error"]["code"] == "user_authorization_required", answer.text
            assert answer.json()["error"]["user"] == user
            assert answer.json()["error"].get("issuer") == issuer
            return None
        assert answer.status_code == 200, answer.text
        token: str = answer.json()["token"]
        return token

    def import_grant(self, user: str, issuer: str | None, access_token: str) -> httpx2.Response:
        return self.post(
            f"/v1/connect/token/{self.uid}/import",
            {"subject": _subject(user, issuer), "accessToken": access_token, "expiresIn": 3600},
        )

    def revoke(self, user: str, issuer: str | None) -> httpx2.Response:
        return httpx2.request(
            "DELETE",
            f"{self.broker.url}/v1/connect/connectors/{self.uid}/tokens",
            json={"subject": _subject(user, issuer)},
            headers={"authorization": f"Bearer {self.identity}"},
            timeout=30,
        )


def new_app(
    broker: RunningBroker,
    peer: OidcProviderPeer,
    *,
    issuers: list[str] | None = None,
    link: dict[str, Any] | None = None,
) -> App:
    name = f"c{secrets.token_hex(4)}"
    project = f"p{secrets.token_hex(4)}"
    config = {
        "issuer": peer.issuer,
        "clientId": "subjects-web",
        "clientSecret": SECRET,
        "grants": ["authorization_code"],
        "scopes": ["openid", "read"],
    }
    policy: dict[str, Any] = {"subjects": ["user"], **(link or {})}
    if issuers is not None:
        policy["userIssuers"] = issuers
    with broker.admin() as admin:
        for path, body in (
            ("/v1/projects", {"slug": project}),
            ("/v1/connectors", {"service": "oauth", "name": name, "data": config}),
            (
                f"/v1/connectors/oauth/{name}/links",
                {"project": project, "environments": ["development"], **policy},
            ),
            (f"/v1/projects/{project}/development-identity", {}),
        ):
            response = admin.post(path, json=body)
            assert response.status_code < 300, f"{path}: {response.text}"
    return App(broker, response.json()["token"], f"oauth/{name}")


def _ledger(broker: RunningBroker, user: str) -> list[tuple[str | None, str | None]]:
    """(subject_id, subject_issuer) of every issued-token row for ``user``, read from the store."""

    async def read() -> list[tuple[str | None, str | None]]:
        issued = tables.IssuedToken
        async with broker.broker.repo.db.session() as s:
            rows = (
                await s.execute(
                    sa.select(issued.subject_id, issued.subject_issuer).where(
                        issued.subject_id == user
                    )
                )
            ).all()
        return sorted(((r[0], r[1]) for r in rows), key=lambda r: (r[1] or "", r[0] or ""))

    return broker.run(read())


@pytest.fixture
def shared_broker(database_url: str, tmp_path: Path) -> Iterator[RunningBroker]:
    """A broker whose public URL a second one on the same store can share."""
    with running_broker(tmp_path / "data", database_url=database_url, public_url=PUBLIC_URL) as b:
        yield b


@pytest.mark.parametrize("user", IDS)
def test_the_same_id_under_two_issuers_and_none_is_three_users(
    shared_broker: RunningBroker,
    database_url: str,
    tmp_path: Path,
    oidc_peer: OidcProviderPeer,
    user: str,
) -> None:
    """Each of (A, id), (B, id) and (no issuer, id) gets only its own grant's token, or
    user_authorization_required: from a grant, from the memory cache, and from the shared cache
    rows read by a second broker on the same store."""
    app = new_app(shared_broker, oidc_peer, issuers=[ISSUER_A, ISSUER_B])
    assert app.import_grant(user, ISSUER_A, "token-of-a").status_code == 201
    for _ in range(2):  # from the grant, then from the memory cache
        assert app.served(user, ISSUER_A) == "token-of-a"
        assert app.served(user, ISSUER_B) is None
        assert app.served(user, None) is None
    assert app.import_grant(user, None, "token-of-the-app-user").status_code == 201
    for _ in range(2):
        assert app.served(user, None) == "token-of-the-app-user"
        assert app.served(user, ISSUER_A) == "token-of-a"
        assert app.served(user, ISSUER_B) is None

    # A second broker on the same store: its memory cache is empty, so it reads the shared rows.
    with running_broker(
        tmp_path / "data", database_url=database_url, public_url=PUBLIC_URL
    ) as second:
        assert app.served(user, ISSUER_B, second.url) is None
        assert app.served(user, ISSUER_A, second.url) == "token-of-a"
        assert app.served(user, None, second.url) == "token-of-the-app-user"

    assert app.import_grant(user, ISSUER_B, "token-of-b").status_code == 201
    assert app.served(user, ISSUER_B) == "token-of-b"
    assert app.served(user, ISSUER_A) == "token-of-a"
    assert app.served(user, None) == "token-of-the-app-user"
    assert _ledger(shared_broker, user) == [
        (user, None),
        (user, ISSUER_A),
        (user, ISSUER_B),
    ]


@pytest.mark.parametrize(
    ("issuer", "status", "code"),
    [
        (ISSUER_C, 403, "subject_not_allowed"),
        (ISSUER_A + "/", 403, "subject_not_allowed"),  # another issuer, however close
        ("", 400, "invalid_request"),
        ("x" * 256, 400, "invalid_request"),
        ("https://a.example|alice", 400, "invalid_request"),
        ("https://a.example/ x", 400, "invalid_request"),
        ("https://ä.example", 400, "invalid_request"),
        (5, 400, "invalid_request"),
        (["https://idp-a.example.test"], 400, "invalid_request"),
    ],
)
def test_an_issuer_the_link_does_not_accept_is_refused_everywhere(
    broker: RunningBroker, oidc_peer: OidcProviderPeer, issuer: Any, status: int, code: str
) -> None:
    """A token request, a consent start and an import naming an issuer the link does not
    accept (or a malformed one) are refused naming subject.issuer, and store nothing."""
    app = new_app(broker, oidc_peer, issuers=[ISSUER_A])
    subject = {"type": "user", "id": "alice", "issuer": issuer}
    for path, body in (
        (f"/v1/connect/token/{app.uid}", {"subject": subject}),
        (f"/v1/connect/authorize/{app.uid}", {"subject": subject, "returnUrl": RETURN_URL}),
        (
            f"/v1/connect/token/{app.uid}/import",
            {"subject": subject, "accessToken": "imported-token", "expiresIn": 3600},
        ),
    ):
        refused = app.post(path, body)
        assert refused.status_code == status, (path, refused.text)
        error = refused.json()["error"]
        assert (error["code"], error["field"]) == (code, "subject.issuer"), (path, error)
    # Nothing was imported for anyone: not for the issuer-less alice, nor for A's.
    assert app.served("alice", None) is None
    assert app.served("alice", ISSUER_A) is None


def test_a_link_without_user_issuers_accepts_only_issuer_less_users(
    broker: RunningBroker, oidc_peer: OidcProviderPeer
) -> None:
    """By default a link accepts no issuer: any named issuer is refused, the app's own user is served."""
    app = new_app(broker, oidc_peer)
    assert app.import_grant("alice", None, "token-of-alice").status_code == 201
    assert app.served("alice", None) == "token-of-alice"
    for issuer in (ISSUER_A, ISSUER_B):
        refused = app.token("alice", issuer)
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["allowedIssuers"] == []


def test_revoking_one_issuers_user_leaves_the_others(
    broker: RunningBroker, oidc_peer: OidcProviderPeer
) -> None:
    """Revoking (A, alice) removes only that grant and its tokens; (B, alice) and the app's alice
    are still served; then revoking the app's alice leaves (B, alice)."""
    app = new_app(broker, oidc_peer, issuers=[ISSUER_A, ISSUER_B])
    for issuer, token in ((ISSUER_A, "tok-a"), (ISSUER_B, "tok-b"), (None, "tok-none")):
        assert app.import_grant("alice", issuer, token).status_code == 201
        assert app.served("alice", issuer) == token
    revoked = app.revoke("alice", ISSUER_A)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["deleted"] == 2  # its ledger row and its grant
    assert app.served("alice", ISSUER_A) is None
    assert app.served("alice", ISSUER_B) == "tok-b"
    assert app.served("alice", None) == "tok-none"
    assert app.revoke("alice", None).json()["deleted"] == 2
    assert app.served("alice", None) is None
    assert app.served("alice", ISSUER_B) == "tok-b"
    # The audit names each user with its issuer. The provider's phase of a revocation runs after
    # the answer: wait (bounded) for both of its final events.
    deadline = time.monotonic() + 15
    while True:
        with broker.admin() as admin:
            events = admin.get("/v1/audit", params={"limit": 1000}).json()
        finished = [e for e in events if e.get("reason") == "provider_revoked"]
        if len(finished) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    exchanged = {e["subject"] for e in events if e["action"] == "token.exchange"}
    assert exchanged >= {f"user@{ISSUER_A}|alice", f"user@{ISSUER_B}|alice", "user:alice"}
    # Each revocation: one summary event (the broker's phase), then one with the provider's
    # final counts (this connector revokes at the provider, RFC 7009).
    for reason in ("revoked", "provider_revoked"):
        revoked = [
            e["subject"] for e in events if e["action"] == "token.revoke" and e["reason"] == reason
        ]
        assert sorted(revoked) == sorted([f"user@{ISSUER_A}|alice", "user:alice"]), reason


def test_an_access_token_bound_to_a_user_acts_for_the_apps_own_user_only(
    broker: RunningBroker, oidc_peer: OidcProviderPeer
) -> None:
    """An access token bound to alice gets the app's alice, never alice of an issuer (not even
    one the link accepts), and may not revoke for her."""
    app = new_app(broker, oidc_peer, issuers=[ISSUER_A])
    assert app.import_grant("alice", None, "tok-none").status_code == 201
    assert app.import_grant("alice", ISSUER_A, "tok-a").status_code == 201
    with broker.admin() as admin:
        created = admin.post(
            f"/v1/projects/{_project_of(broker, app)}/access-tokens",
            json={"environment": "development", "userId": "alice"},
        )
        assert created.status_code == 201, created.text
    bound = App(broker, created.json()["token"], app.uid)
    assert bound.served("alice", None) == "tok-none"
    refused = bound.token("alice", ISSUER_A)
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "subject_not_allowed"
    assert bound.revoke("alice", ISSUER_A).status_code == 403
    assert app.served("alice", ISSUER_A) == "tok-a"


def _project_of(broker: RunningBroker, app: App) -> str:
    with broker.admin() as admin:
        connector = admin.get(f"/v1/connectors/{app.uid}").json()
    project: str = connector["links"][0]["project"]
    return project


@pytest.fixture
def consent_broker(database_url: str, tmp_path: Path) -> Iterator[RunningBroker]:
    """A broker on the port the peer knows as its callback."""
    with running_broker(tmp_path / "data", database_url=database_url, port=PORT) as running:
        yield running


def test_consent_for_one_issuers_user_makes_a_grant_for_that_user_only(
    consent_broker: RunningBroker, oidc_peer: OidcProviderPeer
) -> None:
    """Consent started for (B, alice), finished at the peer and confirmed, serves (B, alice) a
    token acting for alice at the peer; the app's alice and (A, alice) still need consent."""
    app = new_app(consent_broker, oidc_peer, issuers=[ISSUER_A, ISSUER_B])
    started = app.post(
        f"/v1/connect/authorize/{app.uid}",
        {"subject": _subject("alice", ISSUER_B), "returnUrl": RETURN_URL},
    )
    assert started.status_code == 200, started.text
    back = oidc_peer.authorize(started.json()["url"], login="alice")
    assert back.startswith(CALLBACK), back
    landed = httpx2.get(back, follow_redirects=False, timeout=30)
    assert landed.status_code == 303, landed.text
    query = parse_qs(urlsplit(landed.headers["location"]).query)
    assert query["valetkey_status"] == ["confirm"]
    confirmed = app.post(
        f"/v1/connect/authorize/{app.uid}/confirm",
        {"request": started.json()["request"], "verifier": started.json()["verifier"]},
    )
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json() == {
        "request": started.json()["request"],
        "status": "completed",
        "user": "alice",
        "issuer": ISSUER_B,
    }
    token = app.served("alice", ISSUER_B)
    assert token is not None
    info = oidc_peer.introspect(token, "subjects-web", SECRET)
    assert (info["active"], info["sub"]) == (True, "alice")
    assert app.served("alice", None) is None
    assert app.served("alice", ISSUER_A) is None


def _migrate(database_url: str, target: str, *, down: bool) -> None:
    """Run the Alembic migrations up or down to ``target`` on the store, as the broker does."""

    def step(connection: sa.Connection) -> None:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(cfg, target)

    async def run() -> None:
        db = Database(database_url)
        try:
            async with db.engine.begin() as connection:
                await connection.run_sync(step)
        finally:
            await db.close()

    asyncio.run(run())


def test_rows_from_before_the_migration_belong_to_the_apps_own_users(
    database_url: str, tmp_path: Path, oidc_peer: OidcProviderPeer
) -> None:
    """A grant and ledger row stored before subjects had an issuer (the schema at 0002) are, after
    the migration, the issuer-less user's: still served to that user, to no issuer's user."""
    with running_broker(
        tmp_path / "data", database_url=database_url, public_url=PUBLIC_URL
    ) as first:
        app = new_app(first, oidc_peer, issuers=[ISSUER_A])
        assert app.import_grant("alice", None, "tok-before").status_code == 201
        assert app.served("alice", None) == "tok-before"
    _migrate(database_url, "0002", down=True)
    _migrate(database_url, "head", down=False)
    with running_broker(
        tmp_path / "data", database_url=database_url, public_url=PUBLIC_URL
    ) as second:
        app = App(second, app.identity, app.uid)
        assert app.served("alice", None) == "tok-before"
        assert app.served("alice", ISSUER_A) is None
        assert app.import_grant("alice", ISSUER_A, "tok-a").status_code == 201
        assert app.served("alice", ISSUER_A) == "tok-a"
        assert app.served("alice", None) == "tok-before"


async def test_the_official_vercel_connect_client_names_the_issuer_and_gets_that_users_token(
    broker: RunningBroker, oidc_peer: OidcProviderPeer
) -> None:
    """vercel-connect's ConnectUserTokenSubject(id, issuer) sends subject.issuer: each issuer's
    alice gets her own token, and an issuer the link does not accept is refused."""
    app = new_app(broker, oidc_peer, issuers=[ISSUER_A, ISSUER_B])
    for issuer, token in ((ISSUER_A, "tok-a"), (ISSUER_B, "tok-b"), (None, "tok-none")):
        assert app.import_grant("alice", issuer, token).status_code == 201
    options = ConnectOptions(vercel_token=app.identity)
    async with session(service_options=[ConnectServiceOptions(base_url=broker.url)]):
        for issuer, token in ((ISSUER_A, "tok-a"), (ISSUER_B, "tok-b"), (None, "tok-none")):
            subject = ConnectUserTokenSubject(id="alice", issuer=issuer)
            for _ in range(2):  # the client's own cache keys on the issuer too
                assert await get_token(app.uid, subject=subject, options=options) == token
        with pytest.raises(ConnectApiError) as refused:
            await get_token(
                app.uid,
                subject=ConnectUserTokenSubject(id="alice", issuer=ISSUER_C),
                options=options,
            )
    assert refused.value.code == "subject_not_allowed"


async def test_the_valetkey_sdk_names_the_issuer(
    broker: RunningBroker, oidc_peer: OidcProviderPeer
) -> None:
    """The SDK's Subject.user(id, issuer=...) reaches (issuer, id); its cache keeps the users apart."""
    app = new_app(broker, oidc_peer, issuers=[ISSUER_A])
    assert app.import_grant("alice", ISSUER_A, "tok-a").status_code == 201
    assert app.import_grant("alice", None, "tok-none").status_code == 201
    async with valetkey.AsyncClient(base_url=broker.url, identity=app.identity) as sdk:
        for _ in range(2):
            assert (
                await sdk.get_token(app.uid, subject=valetkey.Subject.user("alice", issuer=ISSUER_A))
                == "tok-a"
            )
            assert await sdk.get_token(app.uid, user="alice") == "tok-none"
            assert (
                await sdk.get_token(app.uid, subject={"type": "user", "id": "alice", "issuer": None})
                == "tok-none"
            )
        with pytest.raises(valetkey.SubjectNotAllowed):
            await sdk.get_token(app.uid, subject=valetkey.Subject.user("alice", issuer=ISSUER_B))


@pytest.mark.parametrize("scopes", [[], None, ["read"], ["read", "read"]])
def test_a_user_request_naming_no_scopes_is_served_the_grant_as_consented(
    broker: RunningBroker, oidc_peer: OidcProviderPeer, scopes: list[str] | None
) -> None:
    """`scopes: []` for a user is the grant as consented (within the ceiling), never a request
    to narrow to nothing (which a refresh without `scope` answers with the whole grant)."""
    app = new_app(broker, oidc_peer)
    imported = app.post(
        f"/v1/connect/token/{app.uid}/import",
        {
            "subject": _subject("alice", None),
            "accessToken": "tok-read",
            "expiresIn": 3600,
            "scopes": ["read"],
        },
    )
    assert imported.status_code == 201, imported.text
    body: dict[str, Any] = {} if scopes is None else {"scopes": scopes}
    served = app.token("alice", None, **body)
    assert served.status_code == 200, served.text
    assert served.json()["token"] == "tok-read"


def _cached_rows(broker: RunningBroker, user: str) -> int:
    """Stored mint-cache rows of tokens issued for ``user``."""

    async def read() -> int:
        issued, cached = tables.IssuedToken, tables.CachedToken
        async with broker.broker.repo.db.session() as s:
            count = await s.scalar(
                sa.select(sa.func.count())
                .select_from(cached)
                .join(issued, issued.id == cached.issued_token_id)
                .where(issued.subject_id == user)
            )
        return int(count or 0)

    return broker.run(read())


@pytest.mark.parametrize("issuer", [None, ISSUER_A])
@pytest.mark.parametrize("user", IDS)
def test_a_new_grant_replaces_the_old_grants_cached_token(
    broker: RunningBroker, oidc_peer: OidcProviderPeer, user: str, issuer: str | None
) -> None:
    """After a new grant (an import here; a consent again saves the same way) the user is served
    the new grant's token at once, not the old one from the stored mint cache; another user's
    cache, and the same id under another issuer, are untouched."""
    other_issuer = ISSUER_B if issuer is not None else ISSUER_A
    app = new_app(broker, oidc_peer, issuers=[ISSUER_A, ISSUER_B] if issuer else None)
    neighbours = [("bob", issuer)] + ([(user, other_issuer)] if issuer is not None else [])
    for who, iss in [(user, issuer), *neighbours]:
        assert app.import_grant(who, iss, f"old-{who[:8]}-{iss}").status_code == 201
        assert app.served(who, iss) == f"old-{who[:8]}-{iss}"
    assert _cached_rows(broker, user) >= 1

    assert app.import_grant(user, issuer, "new-grant-token").status_code == 201
    assert app.served(user, issuer) == "new-grant-token"
    assert app.served(user, issuer) == "new-grant-token"
    for who, iss in neighbours:
        assert app.served(who, iss) == f"old-{who[:8]}-{iss}"
