"""Dependencies point one way: the core imports no adapter, and providers import no store or server."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "valetkey"

#: What each package must never import (a module or any of its submodules).
FORBIDDEN = {
    "core": (
        "valetkey.providers",
        "valetkey.store",
        "valetkey.server",
        "valetkey.cli",
        "fastapi",
        "starlette",
        "sqlalchemy",
        "httpx",
        "httpx2",
    ),
    "providers": ("valetkey.store", "valetkey.server", "valetkey.cli"),
}


def _imports(path: Path, source: str | None = None) -> Iterator[tuple[int, str]]:
    """Every module ``path`` imports, wherever the import statement is (functions, TYPE_CHECKING)."""
    package = ".".join(("valetkey", *path.relative_to(SRC).parts[:-1]))
    text = path.read_text() if source is None else source
    for node in ast.walk(ast.parse(text, str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            yield node.lineno, module
            for alias in node.names:  # ``from valetkey import providers`` names a module too
                yield node.lineno, f"{module}.{alias.name}"


def _violations(package: str) -> list[str]:
    """Each import statement of ``package`` that reaches a forbidden module, once."""
    found: dict[tuple[str, int], str] = {}
    for path in sorted((SRC / package).rglob("*.py")):
        where = str(path.relative_to(SRC.parent))
        for line, module in _imports(path):
            for banned in FORBIDDEN[package]:
                if module == banned or module.startswith(banned + "."):
                    found.setdefault((where, line), f"{where}:{line} imports {module}")
    return list(found.values())


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_nothing_it_must_not(package: str) -> None:
    """valetkey.core imports no provider, store, server, CLI, web framework, ORM or HTTP client;
    valetkey.providers imports no store, server or CLI."""
    assert len(list((SRC / package).rglob("*.py"))) > 3  # the walk sees the package
    assert _violations(package) == []


def test_the_check_sees_every_form_of_import() -> None:
    """The walk finds imports inside functions, ``from`` imports of submodules and relative ones."""
    source = (
        "def f():\n    import httpx\n"
        "from valetkey import store\n"
        "from ..server.app import create_app\n"
    )
    seen = {name for _, name in _imports(SRC / "core" / "policy.py", source)}
    assert {"httpx", "valetkey.store", "valetkey.server.app"} <= seen
