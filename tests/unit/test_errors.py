"""The one error hierarchy: every class in the package, each code defined once; no assert."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from collections import defaultdict
from pathlib import Path

import valetkey
from valetkey.errors import ValetkeyError

_CODE = re.compile(r"^[a-z][a-z0-9_]*$")


def all_error_classes() -> list[type[ValetkeyError]]:
    """Every ValetkeyError subclass in the package, after importing every module of it."""
    for info in pkgutil.walk_packages(valetkey.__path__, "valetkey."):
        if ".migrations" in info.name or info.name.endswith("__main__"):
            continue
        importlib.import_module(info.name)
    found: list[type[ValetkeyError]] = [ValetkeyError]
    pending = [ValetkeyError]
    while pending:
        for sub in pending.pop().__subclasses__():
            if sub.__module__.startswith("valetkey.") and sub not in found:
                found.append(sub)
                pending.append(sub)
    return found


def test_each_code_is_defined_by_one_class() -> None:
    """No two classes define the same code; a subclass that keeps its parent's code is an alias."""
    classes = all_error_classes()
    assert len(classes) > 50  # the walk found the identity, crypto and CLI errors too
    definers: dict[str, list[str]] = defaultdict(list)
    for cls in classes:
        if "code" in vars(cls):
            definers[cls.code].append(f"{cls.__module__}.{cls.__qualname__}")
    twice = {code: names for code, names in definers.items() if len(names) > 1}
    assert twice == {}


def test_codes_statuses_and_messages_are_well_formed() -> None:
    """Every code is snake_case, every status an HTTP error status, every class documented."""
    for cls in all_error_classes():
        assert _CODE.match(cls.code), cls
        assert 400 <= cls.status <= 599, cls
        assert (cls.__doc__ or "").strip(), cls


def test_no_assert_in_the_package() -> None:
    """src/ uses no assert statement: checks raise typed errors, and `python -O` changes nothing."""
    root = Path(valetkey.__file__).parent
    found = [
        f"{path.relative_to(root)}:{node.lineno}"
        for path in sorted(root.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text("utf-8")))
        if isinstance(node, ast.Assert)
    ]
    assert found == []
