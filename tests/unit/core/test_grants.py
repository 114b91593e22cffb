"""A grant's freshness and what a refresh keeps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from valetkey.core.grants import Grant, merge_refreshed
from valetkey.core.models import Subject
from valetkey.core.providers import TokenSet

T0 = datetime(2030, 1, 1, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def grant(lifetime: timedelta | None, *, obtained: datetime | None = T0) -> Grant:
    tokens = TokenSet("at", None if lifetime is None else T0 + lifetime, "rt")
    return Grant(
        "grt_1",
        "team_1",
        "con_1",
        "prj_1",
        "production",
        Subject("user", "a"),
        "active",
        tokens,
        1,
        "consent",
        obtained_at=obtained,
    )


def test_fresh_while_valid_for_longer_than_the_buffer() -> None:
    """An hour-long token is fresh until the buffer before its expiry, then not."""
    g = grant(timedelta(hours=1))
    assert g.fresh(T0 + timedelta(minutes=58), MINUTE)
    assert not g.fresh(T0 + timedelta(minutes=59), MINUTE)
    assert not g.fresh(T0 + timedelta(hours=2), MINUTE)


def test_buffer_capped_at_half_the_lifetime() -> None:
    """A two-minute token with a five-minute buffer stays fresh for its first minute (half its life)."""
    g = grant(timedelta(minutes=2))
    assert g.fresh(T0 + timedelta(seconds=59), 5 * MINUTE)
    assert not g.fresh(T0 + timedelta(seconds=60), 5 * MINUTE)
    # without knowing when it was obtained, the whole buffer applies
    assert not grant(timedelta(minutes=2), obtained=None).fresh(T0, 5 * MINUTE)


def test_token_without_expiry_is_always_fresh() -> None:
    """A grant whose access token does not expire never needs a refresh."""
    assert grant(None).fresh(T0 + timedelta(days=365), MINUTE)


def test_merge_keeps_a_refresh_token_that_was_not_rotated() -> None:
    """A refresh answer without a refresh token (or provider subject) keeps the old ones."""
    old = TokenSet("at-1", T0, "rt-1", provider_subject="acct")
    merged = merge_refreshed(old, TokenSet("at-2", T0 + MINUTE))
    assert (merged.access_token, merged.refresh_token, merged.provider_subject) == (
        "at-2",
        "rt-1",
        "acct",
    )
    rotated = merge_refreshed(old, TokenSet("at-3", T0, "rt-2", provider_subject="acct-2"))
    assert (rotated.refresh_token, rotated.provider_subject) == ("rt-2", "acct-2")
