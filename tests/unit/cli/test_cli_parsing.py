"""Turning command-line text into request values."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from valetkey.cli.errors import CliError
from valetkey.cli.parsing import parse_claims, parse_data, parse_list, parse_when
from valetkey.errors import InvalidRequest

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def test_data_inline_file_and_stdin(tmp_path: Path) -> None:
    """--data takes inline JSON, @path and @- alike."""
    (tmp_path / "c.json").write_text('{"apiKey": "k1"}')
    assert parse_data('{"apiKey": "k0"}') == {"apiKey": "k0"}
    assert parse_data(f"@{tmp_path / 'c.json'}") == {"apiKey": "k1"}
    assert parse_data("@-", stdin=io.StringIO('{"apiKey": "k2"}')) == {"apiKey": "k2"}


def test_bad_json_is_refused_without_echoing_it() -> None:
    """Malformed JSON is refused naming the option and position, never the text (maybe a secret)."""
    with pytest.raises(InvalidRequest) as caught:
        parse_data('{"apiKey": "sk-TOPSECRET",')
    assert caught.value.details == {"field": "--data"}
    assert "sk-TOPSECRET" not in caught.value.message
    assert "line 1" in caught.value.message


def test_data_must_be_an_object() -> None:
    """A JSON array or string is refused: the configuration is an object."""
    for text in ("[1]", '"x"', "3"):
        with pytest.raises(InvalidRequest, match="JSON object"):
            parse_data(text)


def test_missing_data_file_is_a_cli_error(tmp_path: Path) -> None:
    """@path to a file that does not exist says which file."""
    with pytest.raises(CliError, match=r"nope\.json"):
        parse_data(f"@{tmp_path / 'nope.json'}")


def test_oversized_data_is_refused() -> None:
    """More than 1 MiB of --data is refused before parsing."""
    with pytest.raises(InvalidRequest, match="larger than"):
        parse_data("@-", stdin=io.StringIO(" " * ((1 << 20) + 2)))


def test_lists_split_on_commas_and_repeat() -> None:
    """-e production,preview -e development gives three environments, in order, no duplicates."""
    assert parse_list(["production,preview", "development", " preview "]) == [
        "production",
        "preview",
        "development",
    ]
    assert parse_list(None) is None


def test_claims_parse_name_value_pairs() -> None:
    """--claim name=value pairs become a mapping; the value may itself hold '='."""
    assert parse_claims(["repository_id=123", "ref=refs/heads/a=b"]) == {
        "repository_id": "123",
        "ref": "refs/heads/a=b",
    }


@pytest.mark.parametrize("bad", ["repository_id", "=123", "repo id=1", "x=", "1x=2"])
def test_bad_claim_syntax_is_refused(bad: str) -> None:
    """A --claim that is not name=value is an invalid_request on the claim field."""
    with pytest.raises(InvalidRequest) as caught:
        parse_claims([bad])
    assert caught.value.details["field"] == "claim"


def test_claim_given_twice_is_refused() -> None:
    """The same claim name twice is ambiguous and refused."""
    with pytest.raises(InvalidRequest, match="twice"):
        parse_claims(["sub=a", "sub=b"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", NOW - timedelta(seconds=90)),
        ("15m", NOW - timedelta(minutes=15)),
        ("1h", NOW - timedelta(hours=1)),
        ("2d", NOW - timedelta(days=2)),
        ("1w", NOW - timedelta(weeks=1)),
        ("2026-11-01T10:00:00Z", datetime(2026, 11, 1, 10, tzinfo=UTC)),
        ("2026-11-01T10:00:00", datetime(2026, 11, 1, 10, tzinfo=UTC)),
        ("2026-11-01T12:00:00+02:00", datetime(2026, 11, 1, 10, tzinfo=UTC)),
    ],
)
def test_when_accepts_spans_and_iso_times(text: str, expected: datetime) -> None:
    """--since/--until take a span back from now or an ISO time (UTC when no offset is given)."""
    assert parse_when(text, NOW, "--since") == expected


def test_when_refuses_other_text() -> None:
    """Anything else is refused naming the option."""
    with pytest.raises(InvalidRequest, match="--until"):
        parse_when("yesterday", NOW, "--until")
    assert parse_when(None, NOW, "--since") is None
