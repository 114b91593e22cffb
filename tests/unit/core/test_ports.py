"""The core's ports are gathered in core/ports.py, each saying what it does not check."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from typing import Protocol

import pytest

from valetkey.core import audit, consent_cases, jobs, models, ports
from valetkey.identity import bindings, verifier

SRC = Path(__file__).resolve().parents[3] / "src" / "valetkey"
#: Protocols that are not ports of the core: the provider plug-in contract and the clock.
ELSEWHERE = {"core/providers.py", "core/clock.py"}


def _protocols() -> list[type]:
    return [
        obj
        for obj in vars(ports).values()
        if inspect.isclass(obj)
        and obj.__module__ == ports.__name__
        and Protocol in getattr(obj, "__mro__", ())
    ]


def test_no_port_is_declared_outside_ports() -> None:
    """No module of core/ or identity/ declares a Protocol, except the plug-in contract and clock."""
    found = []
    for package in ("core", "identity"):
        for path in sorted((SRC / package).rglob("*.py")):
            where = str(path.relative_to(SRC))
            if where in ELSEWHERE or where == "core/ports.py":
                continue
            for node in ast.walk(ast.parse(path.read_text("utf-8"))):
                if isinstance(node, ast.ClassDef) and any(
                    isinstance(b, ast.Name) and b.id == "Protocol" for b in node.bases
                ):
                    found.append(f"{where}: {node.name}")
    assert found == []


@pytest.mark.parametrize("port", _protocols(), ids=lambda p: p.__name__)
def test_each_port_says_what_it_does_not_check(port: type) -> None:
    """A contract's docstring says what it leaves to its caller ("does not", "no", "not")."""
    doc = inspect.getdoc(port) or ""
    assert doc, port
    members = [
        inspect.getdoc(m) or ""
        for n, m in vars(port).items()
        if not n.startswith("_") or n == "__call__"
    ]
    text = " ".join([doc, *members]).lower().replace("*", "")
    assert any(word in text for word in (" not ", " no ", "nothing")), port


def test_the_moved_ports_keep_their_old_names() -> None:
    """Modules that declared a port re-export the one in core/ports.py, not a copy."""
    assert jobs.JobQueue is ports.JobQueue
    assert audit.AuditStore is ports.AuditStore
    assert verifier.IdentityStore is ports.IdentityStore
    assert consent_cases.ConnectorViews is ports.ConnectorViews
    assert consent_cases.ProviderLookup is ports.ProviderLookup


def test_one_list_of_binding_algorithms() -> None:
    """Binding validation and the verifier use the same list object, defined in the core."""
    assert bindings.BINDING_ALGORITHMS is models.BINDING_ALGORITHMS
    assert verifier.BINDING_ALGORITHMS is models.BINDING_ALGORITHMS
    assert bindings.TrustBinding is models.TrustBinding
    assert set(models.DEFAULT_BINDING_ALGORITHMS) <= set(models.BINDING_ALGORITHMS)
