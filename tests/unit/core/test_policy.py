"""The link policy decides, with the exact reason, and resolves what an allowed request gets."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from valetkey.core.models import Connector, Identity, Link, Policy, Subject, TokenRequest
from valetkey.core.policy import Allowed, Denied, evaluate
from valetkey.errors import (
    ConnectorNotLinked,
    EnvironmentNotLinked,
    ScopeNotAllowed,
    SubjectNotAllowed,
    TargetNotAllowed,
)

T0 = datetime(2030, 1, 1, tzinfo=UTC)
IDENTITY = Identity("team_1", "prj_1", "web", "production", "oidc", "ci", None)
TOKEN = replace(IDENTITY, kind="access_token", subject="vk_1", user_id="alice")
CONNECTOR = Connector(
    id="con_1",
    team_id="team_1",
    uid="oauth/main",
    service="oauth",
    name="main",
    type="oauth",
    config={"scopes": ["read", "write"]},
    secrets={},
    created_at=T0,
    updated_at=T0,
)


def link(**policy: object) -> Link:
    return Link("lnk_1", "con_1", "prj_1", ("production",), Policy(**policy))  # type: ignore[arg-type]


def denied(decision: object) -> Denied:
    assert isinstance(decision, Denied), decision
    return decision


def allowed(decision: object) -> TokenRequest:
    assert isinstance(decision, Allowed), decision
    return decision.request


APP = TokenRequest(Subject("app"))


def test_no_link_is_connector_not_linked() -> None:
    """A connector not attached to the caller's project is refused as connector_not_linked."""
    error = denied(evaluate(IDENTITY, CONNECTOR, None, APP)).error
    assert isinstance(error, ConnectorNotLinked)
    assert error.details == {"connector": "oauth/main", "project": "web"}


def test_environment_outside_the_link_is_refused() -> None:
    """A caller in an environment the link does not cover is refused, naming both."""
    staging = replace(IDENTITY, environment="staging")
    error = denied(evaluate(staging, CONNECTOR, link(), APP)).error
    assert isinstance(error, EnvironmentNotLinked)
    assert error.details["environment"] == "staging"
    assert error.details["linkedEnvironments"] == ["production"]


def test_subject_not_allowed_by_the_link() -> None:
    """A subject type the link does not allow is refused, listing the allowed ones."""
    error = denied(evaluate(IDENTITY, CONNECTOR, link(), TokenRequest(Subject("user", "a")))).error
    assert isinstance(error, SubjectNotAllowed)
    assert error.details == {"subject": "user", "allowedSubjects": ["app"]}


def test_scope_above_the_ceiling_is_refused() -> None:
    """Scopes beyond the ceiling (here the connector's configured scopes) are named in the refusal."""
    request = TokenRequest(Subject("app"), ("admin", "read"))
    error = denied(evaluate(IDENTITY, CONNECTOR, link(), request)).error
    assert isinstance(error, ScopeNotAllowed)
    assert error.details == {"scopes": ["admin"], "ceiling": ["read", "write"]}
    # the link's own ceiling overrides the connector's
    error = denied(
        evaluate(
            IDENTITY, CONNECTOR, link(scopes=("read",)), TokenRequest(Subject("app"), ("write",))
        )
    ).error
    assert error.details == {"scopes": ["write"], "ceiling": ["read"]}


def test_resources_and_audiences_outside_the_allow_lists() -> None:
    """A resource or an audience the link does not list is refused as target_not_allowed."""
    policy = link(resources=("https://api.example",), audiences=("api",))
    bad_resource = TokenRequest(Subject("app"), resources=("https://api.example", "https://evil"))
    error = denied(evaluate(IDENTITY, CONNECTOR, policy, bad_resource)).error
    assert isinstance(error, TargetNotAllowed)
    assert error.details["resources"] == ["https://evil"]
    assert error.details["field"] == "resources"
    error = denied(
        evaluate(IDENTITY, CONNECTOR, policy, TokenRequest(Subject("app"), audience="other"))
    ).error
    assert isinstance(error, TargetNotAllowed)
    assert error.details["field"] == "audience"
    # with empty allow-lists, naming any is refused
    error = denied(
        evaluate(IDENTITY, CONNECTOR, link(), TokenRequest(Subject("app"), audience="api"))
    ).error
    assert isinstance(error, TargetNotAllowed)


def test_user_issuer_not_accepted() -> None:
    """A user from an issuer the link does not accept is refused; an accepted issuer passes."""
    policy = link(subjects=("user",), user_issuers=("https://id.example",))
    stranger = TokenRequest(Subject("user", "alice", "https://other.example"))
    error = denied(evaluate(IDENTITY, CONNECTOR, policy, stranger)).error
    assert isinstance(error, SubjectNotAllowed)
    assert error.details["field"] == "subject.issuer"
    assert error.details["allowedIssuers"] == ["https://id.example"]
    known = TokenRequest(Subject("user", "alice", "https://id.example"))
    assert allowed(evaluate(IDENTITY, CONNECTOR, policy, known)).subject == known.subject
    no_issuers = denied(evaluate(IDENTITY, CONNECTOR, link(subjects=("user",)), stranger)).error
    assert "only users named without an issuer" in no_issuers.message


def test_access_token_acts_only_for_its_own_user() -> None:
    """An access token may name only its bound user (issuer-less) and app subjects."""
    policy = link(subjects=("app", "user", "token"))
    assert allowed(evaluate(TOKEN, CONNECTOR, policy, TokenRequest(Subject("user", "alice"))))
    for other in (Subject("user", "bob"),):
        error = denied(evaluate(TOKEN, CONNECTOR, policy, TokenRequest(other))).error
        assert isinstance(error, SubjectNotAllowed)
        assert error.message == "this access token may not act for that user"
    issued = link(subjects=("user",), user_issuers=("https://id.example",))
    same_id_elsewhere = TokenRequest(Subject("user", "alice", "https://id.example"))
    assert isinstance(
        denied(evaluate(TOKEN, CONNECTOR, issued, same_id_elsewhere)).error, SubjectNotAllowed
    )
    token_subject = TokenRequest(Subject("token", "abc"), subject_token="t")
    error = denied(evaluate(TOKEN, CONNECTOR, policy, token_subject)).error
    assert error.message == "access tokens may request only app subjects or their own user"


def test_allowed_request_resolves_scopes_and_resources() -> None:
    """No scopes (absent or []) means the ceiling for app subjects, None for users; [] resources is None."""
    policy = link(subjects=("app", "user"), scopes=("read",))
    assert allowed(evaluate(IDENTITY, CONNECTOR, policy, APP)).scopes == ("read",)
    assert allowed(
        evaluate(IDENTITY, CONNECTOR, policy, TokenRequest(Subject("app"), ()))
    ).scopes == ("read",)
    assert allowed(evaluate(IDENTITY, CONNECTOR, link(), APP)).scopes == ("read", "write")
    user = allowed(evaluate(IDENTITY, CONNECTOR, policy, TokenRequest(Subject("user", "a"), ())))
    assert user.scopes is None
    named = allowed(
        evaluate(IDENTITY, CONNECTOR, policy, TokenRequest(Subject("app"), ("read",), resources=()))
    )
    assert named.scopes == ("read",)
    assert named.resources is None
