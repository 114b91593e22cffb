"""The audit log survives hostile input: bounded at the edge, a refused batch split, a slow store absorbed.

Issue 6 item 1: a token request for an over-long connector uid made PostgreSQL refuse the audit
batch, and the writer retried it forever (no later event or usage count written, /v1/audit and
/v1/usage answering 500). Each test below drives a real broker on both stores.
"""

from __future__ import annotations

import httpx

from valetkey.testing import RunningBroker

PROJECT = "audit-prj"
UID = "api-key/audit-key"
API_KEY = "sk-audit-8d2"


def _token(broker: RunningBroker, identity: str, uid: str) -> httpx.Response:
    return httpx.post(
        f"{broker.url}/v1/connect/token/{uid}",
        json={"subject": {"type": "app"}},
        headers={"authorization": f"Bearer {identity}"},
        timeout=30,
    )


def test_an_over_long_uid_does_not_stop_the_audit_log(broker: RunningBroker) -> None:
    """After a token request for a 200-character uid, a valid exchange is still audited and usage answers."""
    identity = broker.setup_project(PROJECT, {UID: {"apiKey": API_KEY}})
    hostile = _token(broker, identity, "api-key/" + "a" * 200)
    assert hostile.status_code in (400, 404), hostile.text
    assert _token(broker, identity, UID).status_code == 200
    with broker.admin() as c:
        audit = c.get("/v1/audit", params={"connector": UID, "action": "token.exchange"})
        assert audit.status_code == 200, audit.text
        assert [e["reason"] for e in audit.json()] == ["issued"]
        usage = c.get("/v1/usage")
        assert usage.status_code == 200, usage.text
        assert usage.json()["counters"]["token_requests"] == 1
