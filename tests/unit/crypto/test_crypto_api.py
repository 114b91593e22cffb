"""The public surface of valetkey.crypto is exactly its __all__."""

from __future__ import annotations

import valetkey.crypto as crypto
from valetkey.errors import ValetkeyError


def test_all_names_exist_and_errors_are_valetkey_errors() -> None:
    """Every name in __all__ resolves, and every exported exception has its own stable code."""
    exported = {name: getattr(crypto, name) for name in crypto.__all__}
    errors = [
        obj for obj in exported.values() if isinstance(obj, type) and issubclass(obj, Exception)
    ]
    assert all(issubclass(err, ValetkeyError) for err in errors)
    codes = [err.code for err in errors if issubclass(err, ValetkeyError)]
    assert len(codes) == len(set(codes)) == 8


def test_no_unlisted_public_names() -> None:
    """No public class or function is re-exported without being in __all__."""
    public = {n for n, v in vars(crypto).items() if not n.startswith("_") and isinstance(v, type)}
    assert public <= set(crypto.__all__)
