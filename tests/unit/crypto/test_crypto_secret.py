"""Secret: a string that never prints itself."""

from __future__ import annotations

import copy
import pickle

import pytest

from valetkey.crypto import Secret

PLAINTEXT = "xoxb-very-secret-token"


def test_repr_str_and_format_are_masked() -> None:
    """repr, str, f-strings and containers show only asterisks."""
    secret = Secret(PLAINTEXT)
    for shown in (repr(secret), str(secret), f"{secret}", repr([secret]), repr({"k": secret})):
        assert PLAINTEXT not in shown
    assert repr(secret) == "Secret('********')"
    assert str(secret) == "Secret('********')"


def test_reveal_returns_the_value() -> None:
    """reveal() gives back exactly the wrapped string."""
    assert Secret(PLAINTEXT).reveal() == PLAINTEXT


def test_equality_compares_values_not_identity() -> None:
    """Two secrets with the same value are equal; different values or a bare str are not."""
    assert Secret(PLAINTEXT) == Secret(PLAINTEXT)
    assert Secret(PLAINTEXT) != Secret(PLAINTEXT + "x")
    assert Secret(PLAINTEXT) != PLAINTEXT


def test_bool_follows_emptiness() -> None:
    """An empty secret is falsy, a non-empty one truthy."""
    assert not Secret("")
    assert Secret("x")


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_is_refused(protocol: int) -> None:
    """pickle refuses a Secret at every protocol rather than writing the plaintext."""
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(Secret(PLAINTEXT), protocol=protocol)


def test_copy_and_deepcopy_still_work() -> None:
    """copy and deepcopy (used by dataclasses.replace and friends) return an equal secret."""
    secret = Secret(PLAINTEXT)
    assert copy.copy(secret) == secret
    assert copy.deepcopy({"s": secret})["s"] == secret


def test_unhashable_and_str_only() -> None:
    """A Secret is not a dict key, and wraps only str."""
    with pytest.raises(TypeError):
        hash(Secret(PLAINTEXT))
    with pytest.raises(TypeError):
        Secret(b"bytes")  # type: ignore[arg-type]
