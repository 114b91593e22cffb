"""Helpers shared by the user-consent integration tests: a token pair straight from the peer,
and a connector, link and identity for a user subject on a running broker."""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx2
from tests.peers.oidc import OidcProviderPeer, basic_authorization

from valetkey.testing import RunningBroker

__all__ = ["authorization_code_tokens", "setup_user_connector", "user_token"]


def authorization_code_tokens(
    peer: OidcProviderPeer,
    *,
    client_id: str,
    client_secret: str,
    redirect_uri: str,
    scope: str = "openid read write",
    login: str = "alice",
) -> dict[str, Any]:
    """Run authorization code + PKCE at the peer as ``login``; return its token response."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    state = secrets.token_urlsafe(16)
    query = urlencode(
        {
            "client_id": client_id,
            "response_type": "code",
            "redirect_uri": redirect_uri,
            "scope": scope,
            "state": state,
            "code_challenge": challenge.decode(),
            "code_challenge_method": "S256",
        }
    )
    back = parse_qs(
        urlsplit(peer.authorize(f"{peer.authorization_url}?{query}", login=login)).query
    )
    assert back["state"] == [state], back
    answer = httpx2.post(
        peer.token_url,
        data={
            "grant_type": "authorization_code",
            "code": back["code"][0],
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        },
        headers={"Authorization": basic_authorization(client_id, client_secret)},
    )
    answer.raise_for_status()
    tokens: dict[str, Any] = answer.json()
    assert tokens.get("refresh_token"), "the peer issued no refresh token"
    return tokens


def setup_user_connector(
    broker: RunningBroker,
    uid: str,
    data: dict[str, Any],
    *,
    project: str = "agent",
    subjects: tuple[str, ...] = ("user",),
) -> str:
    """Create ``uid`` with ``data``, attach it for ``subjects``; return a development identity."""
    service, name = uid.split("/")
    with broker.admin() as c:
        for method, path, body in (
            ("POST", "/v1/projects", {"slug": project}),
            ("POST", "/v1/connectors", {"service": service, "name": name, "data": data}),
            (
                "POST",
                f"/v1/connectors/{uid}/links",
                {"project": project, "environments": ["development"], "subjects": list(subjects)},
            ),
        ):
            answer = c.request(method, path, json=body)
            assert answer.status_code < 300, f"{path}: {answer.text}"
        ident = c.post(f"/v1/projects/{project}/development-identity", json={})
        assert ident.status_code < 300, ident.text
        token: str = ident.json()["token"]
    return token


def user_token(
    http: httpx2.Client, url: str, identity: str, uid: str, user: str, **body: Any
) -> httpx2.Response:
    """``POST /v1/connect/token/{uid}`` for a user subject."""
    return http.post(
        f"{url}/v1/connect/token/{uid.replace('/', '%2F')}",
        json={"subject": {"type": "user", "id": user}, **body},
        headers={"authorization": f"Bearer {identity}"},
    )
