"""Trust bindings: validation at creation, matching, and most-specific selection."""

from __future__ import annotations

from typing import Any

import pytest
from identity_helpers import AUDIENCE, ISSUER, binding

from valetkey.errors import InvalidRequest
from valetkey.identity.bindings import (
    BINDING_ALGORITHMS,
    DEFAULT_BINDING_ALGORITHMS,
    matches,
    select_binding,
    validate_algorithms,
    validate_conditions,
)
from valetkey.identity.errors import AmbiguousBinding
from valetkey.identity.jwt import ASYMMETRIC_ALGORITHMS, IssuerPolicy

CLAIMS: dict[str, Any] = {
    "iss": ISSUER,
    "aud": AUDIENCE,
    "sub": "repo:acme/app:environment:prod",
    "repository": "acme/app",
    "repository_id": "123456",
    "repository_owner_id": 42,
    "ref": "refs/heads/main",
    "runner_environment": "github-hosted",
}


def test_the_binding_algorithms_are_one_list_the_verifier_can_check() -> None:
    """Every algorithm a binding may allow is one JWT verification supports; the default is in it."""
    assert set(BINDING_ALGORITHMS) <= ASYMMETRIC_ALGORITHMS
    assert set(DEFAULT_BINDING_ALGORITHMS) <= set(BINDING_ALGORITHMS)
    policy = IssuerPolicy(ISSUER, AUDIENCE, BINDING_ALGORITHMS, max_lifetime_seconds=60)
    assert policy.algorithms == BINDING_ALGORITHMS
    assert validate_algorithms(list(BINDING_ALGORITHMS)) == BINDING_ALGORITHMS


@pytest.mark.parametrize(
    "alg", ["HS256", "none", "RSA-OAEP", *sorted(ASYMMETRIC_ALGORITHMS - set(BINDING_ALGORITHMS))]
)
def test_an_algorithm_outside_the_list_is_refused_at_creation(alg: str) -> None:
    """An algorithm not in BINDING_ALGORITHMS is refused, the field named, the list shown."""
    with pytest.raises(InvalidRequest) as info:
        validate_algorithms(["RS256", alg])
    assert info.value.details == {"field": "algorithms"}
    assert ", ".join(BINDING_ALGORITHMS) in info.value.message


def test_a_binding_without_conditions_is_refused() -> None:
    """No claim condition is an error at creation, never "allow all"."""
    with pytest.raises(InvalidRequest) as info:
        validate_conditions({})
    assert info.value.details["field"] == "conditions"


@pytest.mark.parametrize(
    "conditions",
    [
        {"": "x"},
        {"bad name": "x"},
        {"sub": ""},
        {"sub": "*"},
        {"sub": "**?"},
        {"sub": "repo:[ab]*"},
        {"sub": "line\nbreak"},
        {"exp": "1"},
        {"sub": 5},
        {"sub": "x" * 513},
    ],
)
def test_malformed_conditions_are_refused(conditions: dict[str, Any]) -> None:
    """Bad names, empty or match-anything values, classes and volatile claims are refused."""
    with pytest.raises(InvalidRequest):
        validate_conditions(conditions)


def test_valid_conditions_are_returned() -> None:
    """Well-formed exact and glob conditions pass validation unchanged."""
    conditions = {"repository_id": "123456", "ref": "refs/heads/*", "sub": "repo:acme/?pp:*"}
    assert validate_conditions(conditions) == conditions


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        ({"repository_id": "123456"}, True),
        ({"repository_id": "12345"}, False),
        ({"repository_owner_id": "42"}, True),  # numeric claim compared as text
        ({"ref": "refs/heads/*"}, True),
        ({"ref": "refs/tags/*"}, False),
        ({"repository": "acme/?pp"}, True),
        ({"repository": "ACME/app"}, False),  # case-sensitive
        ({"sub": "repo:acme/*"}, True),  # * crosses '/' and ':'
        ({"missing": "x"}, False),
        ({"repository_id": "123456", "ref": "refs/heads/dev"}, False),  # every condition holds
        ({"repository": "acme.app"}, False),  # '.' is literal, not a regex wildcard
    ],
)
def test_matches(conditions: dict[str, str], expected: bool) -> None:
    """A binding matches when every condition holds, exact or glob."""
    assert matches(binding(conditions=conditions), CLAIMS) is expected


def test_list_claims_never_match() -> None:
    """A condition never matches a list or object claim."""
    assert not matches(binding(conditions={"groups": "admins"}), {"groups": ["admins"]})


def test_an_empty_binding_never_matches() -> None:
    """A binding stored without conditions matches nothing, defensively."""
    assert not matches(binding(conditions={}), CLAIMS)


def test_nothing_matches_gives_none() -> None:
    """No matching binding selects None."""
    assert select_binding(CLAIMS, [binding(conditions={"repository_id": "9"})]) is None


def test_issuer_and_audience_must_match_too() -> None:
    """A binding for another issuer or audience is never selected."""
    other_issuer = binding("b1", issuer="https://other.example.com")
    other_audience = binding("b2", audience="something-else")
    assert select_binding(CLAIMS, [other_issuer, other_audience]) is None


def test_more_conditions_win() -> None:
    """With both matching, the binding with more conditions wins."""
    broad = binding("broad", {"repository_id": "123456"}, project_id="p1")
    narrow = binding("narrow", {"repository_id": "123456", "ref": "refs/heads/*"}, project_id="p2")
    assert select_binding(CLAIMS, [broad, narrow]) is narrow


def test_exact_conditions_beat_globs() -> None:
    """With the same number of conditions, more exact ones win."""
    glob = binding("glob", {"ref": "refs/heads/*"}, project_id="p1")
    exact = binding("exact", {"ref": "refs/heads/main"}, project_id="p2")
    assert select_binding(CLAIMS, [glob, exact]) is exact


def test_longer_literal_prefix_wins() -> None:
    """Between globs, the longer literal prefix wins."""
    short = binding("short", {"sub": "repo:*"}, project_id="p1")
    long = binding("long", {"sub": "repo:acme/app:*"}, project_id="p2")
    assert select_binding(CLAIMS, [short, long]) is long


def test_equally_specific_bindings_for_different_targets_are_ambiguous() -> None:
    """A tie between different (project, environment) pairs is refused."""
    a = binding("a", {"repository_id": "123456"}, environment="production")
    b = binding("b", {"ref": "refs/heads/main"}, environment="preview")
    with pytest.raises(AmbiguousBinding) as info:
        select_binding(CLAIMS, [a, b])
    assert info.value.code == "ambiguous_binding"
    assert info.value.status == 403
    assert info.value.details["bindings"] == ["a", "b"]


def test_equally_specific_bindings_for_the_same_target_pick_one() -> None:
    """A tie between bindings for the same project and environment is not ambiguous."""
    a = binding("a", {"repository_id": "123456"})
    b = binding("b", {"ref": "refs/heads/main"})
    assert select_binding(CLAIMS, [b, a]) is a
