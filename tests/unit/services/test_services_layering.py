"""The application layer's arrows: services use the store and the core, never the web or CLI
layer, and the management repositories hold no rules of their own (no roles, no audit)."""

from __future__ import annotations

import ast
from pathlib import Path

import valetkey

SRC = Path(valetkey.__file__).parent


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_services_never_import_the_server_or_the_cli() -> None:
    """No module of valetkey.services imports valetkey.server, valetkey.cli or a web framework."""
    for path in sorted((SRC / "services").glob("*.py")):
        bad = {
            name
            for name in _imports(path)
            if name.split(".")[0] in ("fastapi", "starlette")
            or name.startswith(("valetkey.server", "valetkey.cli"))
        }
        assert not bad, f"{path.name} imports {sorted(bad)}"


def test_management_repositories_check_no_roles_and_write_no_audit() -> None:
    """store/management.py and store/keys.py import neither the audit log, the role model,
    the invalidation bus nor the services."""
    for name in ("management.py", "keys.py"):
        imported = _imports(SRC / "store" / name)
        bad = {
            i
            for i in imported
            if i.startswith(("valetkey.core.audit", "valetkey.services", "valetkey.server"))
            or i in ("valetkey.core.models.Role", "valetkey.core.ports.Invalidation")
            or i in ("valetkey.errors.Forbidden", "valetkey.errors.LastOwner")
        }
        assert not bad, f"store/{name} imports {sorted(bad)}"


def test_consent_use_cases_stay_in_the_core() -> None:
    """The consent use cases (core/consent_cases.py) import no store, server, provider registry
    or HTTP library, and the consent routes no longer evaluate policy or publish invalidations."""
    imported = _imports(SRC / "core" / "consent_cases.py")
    bad = {
        i
        for i in imported
        if i.startswith(("valetkey.store", "valetkey.server", "valetkey.providers.registry"))
        or i.split(".")[0] in ("httpx", "httpx2", "fastapi", "sqlalchemy")
    }
    assert not bad, sorted(bad)
    routes = _imports(SRC / "server" / "consent.py")
    assert "valetkey.core.policy" not in routes
    assert "valetkey.core.ports.Invalidation" not in routes
    assert "valetkey.core.grants" not in routes
