"""GET /metrics on a real broker: exact counters after real exchanges, per-broker registries, no identifiers."""

from __future__ import annotations

from pathlib import Path

import httpx2
import prometheus_client
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from tests.integration.consent_support import setup_user_connector
from tests.peers.oidc import OidcProviderPeer, confidential_client, oidc_peer_fixture

from valetkey.testing import RunningBroker, running_broker

PROJECT = "proj-qz7"
KEY_NAME = "conn-xv4"
UID = f"api-key/{KEY_NAME}"
API_KEY = "sk-live-secret-9f3k2"
USER = "user-wq8"

oidc_peer = oidc_peer_fixture(
    {
        "scopes": ["read"],
        "clients": [
            confidential_client(
                "metrics-app",
                "metrics-secret-7hd",
                grant_types=("authorization_code", "refresh_token"),
                redirect_uris=["http://127.0.0.1:9/back"],
                scope="openid read",
            )
        ],
    }
)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _scrape(broker: RunningBroker) -> tuple[str, Samples]:
    """The raw exposition and its samples keyed by (name, sorted labels)."""
    response = httpx2.get(f"{broker.url}/metrics", timeout=10)  # no credential sent
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return response.text, samples


def _requests(samples: Samples) -> dict[tuple[str, str], float]:
    """valetkey_token_requests_total as {(decision, reason): value}."""
    return {
        (dict(labels)["decision"], dict(labels)["reason"]): value
        for (name, labels), value in samples.items()
        if name == "valetkey_token_requests_total"
    }


def _exchange(broker: RunningBroker, identity: str, uid: str, body: object) -> httpx2.Response:
    return httpx2.post(
        f"{broker.url}/v1/connect/token/{uid.replace('/', '%2F')}",
        json=body,
        headers={"authorization": f"Bearer {identity}"},
        timeout=10,
    )


def test_counters_follow_allowed_denied_and_revoked_exchanges(sqlite_broker: RunningBroker) -> None:
    """Each exchange bumps exactly one (decision, reason) series; mints, revocations and gauges match."""
    broker = sqlite_broker
    _, fresh = _scrape(broker)
    assert _requests(fresh) == {("allowed", "cache_hit"): 0, ("allowed", "cache_miss"): 0}
    assert fresh[("valetkey_tokens_minted_total", ())] == 0
    assert fresh[("valetkey_cached_tokens", ())] == 0

    identity = broker.setup_project(PROJECT, {UID: {"apiKey": API_KEY}})
    app = {"subject": {"type": "app"}}
    for _ in range(3):
        assert _exchange(broker, identity, UID, app).status_code == 200
    refusals = [
        ("api-key/absent", app, "not_found"),
        (UID, {"subject": {"type": "user", "id": USER}}, "subject_not_allowed"),
        (UID, {"subject": {"type": "app"}, "scopes": ["admin"]}, "scope_not_allowed"),
        (UID, {"subject": {"type": "app"}, "scopes": ["admin"]}, "scope_not_allowed"),
    ]
    for uid, body, code in refusals:
        assert _exchange(broker, identity, uid, body).json()["error"]["code"] == code
    _, after = _scrape(broker)
    assert _requests(after) == {
        ("allowed", "cache_hit"): 2,
        ("allowed", "cache_miss"): 1,
        ("denied", "not_found"): 1,
        ("denied", "subject_not_allowed"): 1,
        ("denied", "scope_not_allowed"): 2,
    }
    assert after[("valetkey_tokens_minted_total", ())] == 1
    assert after[("valetkey_cached_tokens", ())] == 1
    assert after[("valetkey_revocations_total", ())] == 0

    with broker.admin() as c:
        revoked = c.request(
            "DELETE", f"/v1/connect/connectors/{UID}/tokens", json={"allTokens": True}
        )
        assert revoked.status_code == 200, revoked.text
    broker.run(broker.broker.audit.flush())
    _, final = _scrape(broker)
    assert final[("valetkey_revocations_total", ())] == 1
    assert final[("valetkey_cached_tokens", ())] == 0  # the revocation emptied the cache
    assert final[("valetkey_audit_backlog", ())] == 0  # everything recorded was written


def test_a_refusal_while_minting_is_counted_with_its_code(
    sqlite_broker: RunningBroker, oidc_peer: OidcProviderPeer
) -> None:
    """A user with no grant is refused inside the mint path, and counted under that refusal's code."""
    data = {
        "issuer": oidc_peer.issuer,
        "clientId": "metrics-app",
        "clientSecret": "metrics-secret-7hd",
        "grants": ["authorization_code"],
        "scopes": ["read"],
    }
    identity = setup_user_connector(sqlite_broker, "oauth/acme", data, project=PROJECT)
    refused = _exchange(
        sqlite_broker, identity, "oauth/acme", {"subject": {"type": "user", "id": USER}}
    )
    assert refused.json()["error"]["code"] == "user_authorization_required"
    _, samples = _scrape(sqlite_broker)
    assert _requests(samples)[("denied", "user_authorization_required")] == 1
    assert samples[("valetkey_tokens_minted_total", ())] == 0


def test_the_exposition_names_no_tenant_user_or_secret(sqlite_broker: RunningBroker) -> None:
    """After real traffic the text holds no project, connector, user, token id, key or credential."""
    broker = sqlite_broker
    identity = broker.setup_project(PROJECT, {UID: {"apiKey": API_KEY}})
    issued = _exchange(broker, identity, UID, {"subject": {"type": "app"}}).json()
    _exchange(broker, identity, UID, {"subject": {"type": "user", "id": USER}})
    with broker.admin() as c:
        project_id = c.get(f"/v1/projects/{PROJECT}").json()["id"]
    team_id = broker.broker.bootstrap_result.team_id
    text, samples = _scrape(broker)
    forbidden = [
        PROJECT,
        project_id,
        KEY_NAME,
        USER,
        API_KEY,
        issued["tokenId"],
        issued["connector"]["id"],
        identity,
        broker.owner_token,
        team_id,
    ]
    for value in forbidden:
        assert value not in text, value
    labels = {k for (_, pairs) in samples for k, _ in pairs}
    assert labels <= {
        "decision",
        "reason",
        "generation",
        "implementation",
        "major",
        "minor",
        "patchlevel",
        "version",
    }


def test_each_broker_reports_only_its_own_traffic(
    sqlite_broker: RunningBroker, tmp_path: Path
) -> None:
    """Two brokers in one process keep separate registries, and neither uses the global one."""
    identity = sqlite_broker.setup_project(PROJECT, {UID: {"apiKey": API_KEY}})
    assert _exchange(sqlite_broker, identity, UID, {"subject": {"type": "app"}}).status_code == 200
    with running_broker(tmp_path / "second") as second:
        _, theirs = _scrape(second)
        _, ours = _scrape(sqlite_broker)
    assert _requests(theirs)[("allowed", "cache_miss")] == 0
    assert _requests(ours)[("allowed", "cache_miss")] == 1
    assert ("process_resident_memory_bytes", ()) in ours  # the process collector works per registry
    global_names = {f.name for f in prometheus_client.REGISTRY.collect()}
    assert not any(name.startswith("valetkey_") for name in global_names)


def test_a_prometheus_scraper_asking_for_openmetrics_gets_it(sqlite_broker: RunningBroker) -> None:
    """With Prometheus's own Accept header the answer is valid OpenMetrics with the same counters."""
    accept = (
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
        "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
    )
    response = httpx2.get(f"{sqlite_broker.url}/metrics", headers={"accept": accept}, timeout=10)
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    parsed = openmetrics_families(response.text)  # type: ignore[no-untyped-call]
    families = {f.name: f for f in parsed}  # parsing raises unless the text is valid
    assert families["valetkey_token_requests"].type == "counter"
    assert families["valetkey_audit_backlog"].type == "gauge"
