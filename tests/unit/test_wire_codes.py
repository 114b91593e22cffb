"""The codes the official Vercel Connect clients branch on, with Valetkey's own next to them as
``valetkeyCode``, and the token request fields those clients add (issue 8)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from valetkey import errors
from valetkey.core.consent_values import consent_needed, no_installations
from valetkey.core.models import Connector
from valetkey.error_codes import error_for_code
from valetkey.server.wire import MAX_VALIDITY_BUFFER_MS, parse_token_request

NOW = datetime(2026, 12, 2, tzinfo=UTC)
CONNECTOR = Connector(
    id="con_1",
    team_id="team_1",
    uid="oauth/acme",
    service="oauth",
    name="acme",
    type="oauth",
    config={},
    secrets={},
    created_at=NOW,
    updated_at=NOW,
)


def test_an_unlinked_connector_is_forbidden_with_the_precise_code_beside() -> None:
    wire = errors.ConnectorNotLinked("connector is not linked to this project: x").to_wire()
    assert wire["error"]["code"] == "forbidden"
    assert wire["error"]["valetkeyCode"] == "connector_not_linked"
    assert errors.ConnectorNotLinked.code == "connector_not_linked"  # the class keeps its own


@pytest.mark.parametrize(
    ("reason", "code"),
    [
        ("grant_failed", "no_token"),
        ("expired_without_refresh_token", "no_token"),
        ("scopes_not_granted", "user_authorization_required"),
        (None, "user_authorization_required"),
    ],
)
def test_an_unusable_grant_is_no_token(reason: str | None, code: str) -> None:
    details: dict[str, Any] = {} if reason is None else {"reason": reason}
    err = consent_needed(CONNECTOR, "alice", **details)
    body = err.to_wire()["error"]
    assert body["code"] == code
    assert err.code == "user_authorization_required"
    if code == "no_token":
        assert body["valetkeyCode"] == "user_authorization_required"
    else:
        assert "valetkeyCode" not in body
    assert type(err) is errors.UserAuthorizationRequired
    # Another error of the class is untouched by one error's wire code.
    assert consent_needed(CONNECTOR, "bob").to_wire()["error"]["code"] == (
        "user_authorization_required"
    )


@pytest.mark.parametrize(
    "err",
    [
        errors.ConnectorNotLinked("connector is not linked to this project", connector="a/b"),
        consent_needed(CONNECTOR, "alice", reason="grant_failed"),
        no_installations(CONNECTOR),
        errors.NotFound("no connector a/b"),
    ],
    ids=["not-linked", "no-token", "installation", "not-found"],
)
def test_valetkeys_clients_rebuild_the_precise_class(err: errors.ValetkeyError) -> None:
    body = err.to_wire()["error"]
    details = {k: v for k, v in body.items() if k not in ("code", "message")}
    again = error_for_code(body["code"], body["message"], err.status, details)
    assert type(again) is type(err)
    assert again.code == err.code
    assert "valetkeyCode" not in again.details


@pytest.mark.parametrize("valetkey_code", [7, None, ["connector_not_linked"]])
def test_a_valetkey_code_that_is_not_text_is_ignored(valetkey_code: Any) -> None:
    again = error_for_code("forbidden", "no", 403, {"valetkeyCode": valetkey_code})
    assert type(again) is errors.Forbidden


def test_installation_id_refusal_is_the_clients_installation_code() -> None:
    body = no_installations(CONNECTOR).to_wire()["error"]
    assert body["code"] == "connector_installation_required"
    assert (body["field"], body["reason"]) == ("installationId", "installations_not_supported")


APP = {"type": "app"}


@pytest.mark.parametrize("buffer", [0, 1, 30_000, MAX_VALIDITY_BUFFER_MS, None])
def test_validity_buffer_within_bounds_is_accepted_and_ignored(buffer: int | None) -> None:
    request = parse_token_request({"subject": APP, "validityBufferMs": buffer})
    assert request == parse_token_request({"subject": APP})  # no part of what is minted


@pytest.mark.parametrize(
    "buffer", [-1, MAX_VALIDITY_BUFFER_MS + 1, 10**100, True, False, 1.0, "1", [1], {"ms": 1}]
)
def test_validity_buffer_out_of_bounds_is_refused(buffer: Any) -> None:
    with pytest.raises(errors.InvalidRequest) as info:
        parse_token_request({"subject": APP, "validityBufferMs": buffer})
    assert info.value.details["field"] == "validityBufferMs"


@pytest.mark.parametrize(
    ("details", "error"),
    [
        ([], None),
        ([{"type": "x"}], errors.UnsupportedOperation),
        ([{"type": "x"}] * 100, errors.UnsupportedOperation),
        ([{"type": "x"}] * 101, errors.InvalidRequest),
        ({"type": "x"}, errors.InvalidRequest),
        ("x", errors.InvalidRequest),
        ([1], errors.InvalidRequest),
        ([{"type": 1}], errors.InvalidRequest),
        ([{}], errors.InvalidRequest),
    ],
)
def test_authorization_details(details: Any, error: type[errors.ValetkeyError] | None) -> None:
    if error is None:
        assert parse_token_request({"subject": APP, "authorizationDetails": details})
        return
    with pytest.raises(error) as info:
        parse_token_request({"subject": APP, "authorizationDetails": details})
    assert type(info.value) is error
    assert info.value.details["field"] == "authorizationDetails"
