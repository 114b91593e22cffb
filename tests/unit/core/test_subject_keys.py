"""A user subject is (issuer, id): its text key never confuses two subjects, and the wire parser
bounds the issuer before anything stores it."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from valetkey.core.models import Subject
from valetkey.errors import InvalidRequest
from valetkey.server.wire import parse_subject, parse_token_request

ISSUERS = [None, "https://a.example", "https://a.example/", "https://a.example:alice", "a"]
IDS = ["alice", "https://a.example|alice", "alice|x", "a:b", "@", "user@https://a.example|alice"]


def test_distinct_subjects_have_distinct_keys() -> None:
    """Every (issuer, id) pair, including ids that hold the key's separators, has its own key,
    and none equals an app, jwt-bearer or token subject's key."""
    subjects = [Subject("user", i, iss) for iss, i in itertools.product(ISSUERS, IDS)]
    subjects += [Subject("app"), Subject("jwt-bearer", "alice"), Subject("token", "alice")]
    keys = [s.key() for s in subjects]
    assert len(set(keys)) == len(subjects)
    assert Subject("user", "alice").key() == "user:alice"  # unchanged for the app's own users


@pytest.mark.parametrize("issuer", ["https://idp.example/tenant/v2.0", "x", "a" * 255, "urn:x:y"])
def test_a_valid_issuer_is_kept(issuer: str) -> None:
    """Visible-ASCII issuers of up to 255 characters without '|' are accepted as sent."""
    subject = parse_subject({"type": "user", "id": "alice", "issuer": issuer})
    assert subject == Subject("user", "alice", issuer)


@pytest.mark.parametrize(
    "issuer", ["", "a" * 256, "https://a|b", "https://a b", "https://\u00e4", "a\nb", 5, [], {}]
)
def test_a_malformed_issuer_is_refused_naming_the_field(issuer: Any) -> None:
    """An empty, too long, non-ASCII, '|'-holding, spaced or non-string issuer is invalid_request."""
    with pytest.raises(InvalidRequest) as caught:
        parse_subject({"type": "user", "id": "alice", "issuer": issuer})
    assert caught.value.details["field"] == "subject.issuer"


def test_no_issuer_and_a_null_issuer_are_the_apps_own_user() -> None:
    """An absent and a null issuer are the same subject: the app's own user."""
    assert parse_subject({"type": "user", "id": "alice"}) == parse_subject(
        {"type": "user", "id": "alice", "issuer": None}
    )


def test_the_token_cache_key_holds_the_issuer() -> None:
    """Two requests differing only in the issuer never share a cache key."""
    keys = {
        parse_token_request({"subject": {"type": "user", "id": "alice", **extra}}).cache_key()
        for extra in ({}, {"issuer": "https://a.example"}, {"issuer": "https://b.example"})
    }
    assert len(keys) == 3
