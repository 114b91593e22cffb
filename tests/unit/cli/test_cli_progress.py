"""revoke-tokens --all-tokens shows the broker's progress lines on stderr, the result on stdout."""

from __future__ import annotations

import pytest

from valetkey.cli.progress import follow_revocation

LINES = [
    {
        "tokensFound": 3,
        "deleted": 3,
        "providerRevoked": 0,
        "providerSkipped": 0,
        "providerFailed": 0,
        "providerTotal": 3,
        "providerPending": 3,
        "done": False,
    },
    {
        "tokensFound": 3,
        "deleted": 3,
        "providerRevoked": 1,
        "providerSkipped": 0,
        "providerFailed": 1,
        "providerTotal": 3,
        "providerPending": 1,
        "done": False,
    },
    {
        "tokensFound": 3,
        "deleted": 3,
        "providerRevoked": 2,
        "providerSkipped": 0,
        "providerFailed": 1,
        "providerTotal": 3,
        "providerPending": 0,
        "done": True,
    },
]


def test_without_a_terminal_each_step_is_a_plain_line(capsys: pytest.CaptureFixture[str]) -> None:
    """Not a TTY: one line per progress line on stderr; the last line's five counts returned."""
    result = follow_revocation(LINES, tty=False)
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "revoking at the provider: 0/3 (revoked 0, skipped 0, failed 0)",
        "revoking at the provider: 2/3 (revoked 1, skipped 0, failed 1)",
        "revoking at the provider: 3/3 (revoked 2, skipped 0, failed 1)",
    ]
    assert result == {
        "tokensFound": 3,
        "deleted": 3,
        "providerRevoked": 2,
        "providerSkipped": 0,
        "providerFailed": 1,
    }


def test_on_a_terminal_a_bar_ends_complete(capsys: pytest.CaptureFixture[str]) -> None:
    """A TTY: a Rich bar whose last frame shows every call made; stdout stays empty."""
    follow_revocation(LINES, tty=True)
    out = capsys.readouterr()
    assert out.out == ""
    assert "3/3" in out.err
    assert "failed 1" in out.err


def test_nothing_to_revoke_at_the_provider_shows_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An answer without provider work (or an older broker's single JSON answer) prints no progress."""
    plain = {
        "tokensFound": 2,
        "deleted": 2,
        "providerRevoked": 0,
        "providerSkipped": 2,
        "providerFailed": 0,
    }
    assert follow_revocation([plain], tty=False) == plain
    assert capsys.readouterr().err == ""
