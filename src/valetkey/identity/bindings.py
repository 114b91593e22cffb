"""Trust bindings: which verified external OIDC tokens map to which project and environment.

A binding names an issuer, the audience its tokens must carry, and claim
conditions — each an exact value or a glob (``*`` any run of characters, ``?``
one character; case-sensitive; no ``[...]`` classes). Every condition must hold.
A binding with no condition is refused at creation: "no condition" never means
"allow all" (DESIGN §5). Prefer numeric ids (GitHub's ``repository_id``,
``repository_owner_id``) to names, which can be re-registered by someone else.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

from valetkey.core.models import BINDING_ALGORITHMS, DEFAULT_BINDING_ALGORITHMS, TrustBinding
from valetkey.errors import InvalidRequest
from valetkey.identity.errors import AmbiguousBinding

__all__ = [
    "BINDING_ALGORITHMS",
    "DEFAULT_BINDING_ALGORITHMS",
    "TrustBinding",
    "claim_text",
    "matches",
    "select_binding",
    "specificity",
    "validate_algorithms",
    "validate_conditions",
]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,99}$")
_MAX_VALUE = 512
_MAX_CONDITIONS = 32
_WILDCARDS = frozenset("*?")
#: Claims that change with every token: a condition on them is a mistake.
_VOLATILE = frozenset({"exp", "iat", "nbf", "jti"})


def validate_algorithms(algorithms: Iterable[str]) -> tuple[str, ...]:
    """Return the algorithms as a tuple, or raise ``invalid_request`` naming one not allowed."""
    checked = tuple(algorithms)
    for alg in checked:
        if alg not in BINDING_ALGORITHMS:
            raise InvalidRequest(
                f"algorithm {alg!r} is not allowed; use {', '.join(BINDING_ALGORITHMS)}",
                field="algorithms",
            )
    return checked


def validate_conditions(conditions: Mapping[str, str]) -> dict[str, str]:
    """Return the conditions as a plain dict, or raise ``invalid_request`` naming the bad one."""
    if not isinstance(conditions, Mapping) or not conditions:
        raise InvalidRequest(
            "a trust binding needs at least one claim condition; none would trust every token",
            field="conditions",
        )
    if len(conditions) > _MAX_CONDITIONS:
        raise InvalidRequest(f"at most {_MAX_CONDITIONS} claim conditions", field="conditions")
    checked: dict[str, str] = {}
    for name, value in conditions.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise InvalidRequest(f"claim name {name!r} is not valid", field="conditions")
        if name in _VOLATILE:
            raise InvalidRequest(f"claim {name!r} changes with every token", field="conditions")
        if not isinstance(value, str) or not value or len(value) > _MAX_VALUE:
            raise InvalidRequest(
                f"the condition on {name!r} must be 1-{_MAX_VALUE} characters", field="conditions"
            )
        if any(ch in value for ch in "[]") or any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
            raise InvalidRequest(
                f"the condition on {name!r} has a character not allowed ('[', ']' or a control)",
                field="conditions",
            )
        if set(value) <= _WILDCARDS:
            raise InvalidRequest(
                f"the condition on {name!r} matches anything; give a literal part",
                field="conditions",
            )
        checked[name] = value
    return checked


def _is_glob(pattern: str) -> bool:
    return any(ch in _WILDCARDS for ch in pattern)


@lru_cache(maxsize=4096)
def _compiled(pattern: str) -> re.Pattern[str]:
    parts = [".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern]
    return re.compile("".join(parts), re.DOTALL)


def claim_text(value: Any) -> str | None:
    """A claim as the text conditions compare against; None when it cannot be compared."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return None  # lists, objects, null: never matched


def matches(binding: TrustBinding, claims: Mapping[str, Any]) -> bool:
    """True when every condition of ``binding`` holds (a binding without conditions never does)."""
    if not binding.conditions:
        return False
    for name, pattern in binding.conditions.items():
        text = claim_text(claims.get(name))
        if text is None:
            return False
        if _is_glob(pattern):
            if _compiled(pattern).fullmatch(text) is None:
                return False
        elif text != pattern:
            return False
    return True


def specificity(binding: TrustBinding) -> tuple[int, int, int]:
    """(conditions, exact conditions, literal prefix of the globs): larger is more specific."""
    globs = [p for p in binding.conditions.values() if _is_glob(p)]
    prefix = sum(len(re.split(r"[*?]", p, maxsplit=1)[0]) for p in globs)
    return (len(binding.conditions), len(binding.conditions) - len(globs), prefix)


def _audiences(claims: Mapping[str, Any]) -> list[Any]:
    aud = claims.get("aud")
    return aud if isinstance(aud, list) else [aud]


def select_binding(
    claims: Mapping[str, Any], bindings: Iterable[TrustBinding]
) -> TrustBinding | None:
    """The most specific binding whose issuer, audience and conditions match ``claims``.

    Equally specific matches that lead to different (project, environment) pairs
    are refused with ``ambiguous_binding``; None when nothing matches.
    """
    audiences = _audiences(claims)
    candidates = [
        b
        for b in bindings
        if b.issuer == claims.get("iss") and b.audience in audiences and matches(b, claims)
    ]
    if not candidates:
        return None
    best = max(specificity(b) for b in candidates)
    top = sorted((b for b in candidates if specificity(b) == best), key=lambda b: b.id)
    targets = {(b.project_id, b.environment) for b in top}
    if len(targets) > 1:
        raise AmbiguousBinding(
            "several equally specific trust bindings match this token, for different "
            "projects or environments",
            bindings=[b.id for b in top],
        )
    return top[0]
