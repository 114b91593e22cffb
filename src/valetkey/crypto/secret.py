"""A string that does not print itself: ``Secret('********')`` in repr, str, logs and f-strings."""

from __future__ import annotations

import hmac
from typing import Any, NoReturn


class Secret:
    """Wraps a secret string. Read it with :meth:`reveal`; compare in constant time.

    Unhashable (a secret is not a dict key) and unpicklable: ``pickle`` refuses it
    rather than writing the plaintext somewhere by accident. ``copy`` returns itself.
    """

    __slots__ = ("_value",)
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("Secret wraps a str")
        self._value = value

    def reveal(self) -> str:
        """The plaintext. Call it at the last moment, where the value is used."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret cannot be pickled; reveal() it explicitly if you must")

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        self.__reduce__()

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Secret:
        return self
