"""docs/errors.md lists every error code the SDK and the CLI know, with its status and class."""

from __future__ import annotations

import re
from pathlib import Path

from valetkey.error_codes import ERROR_CLASSES

DOC = Path(__file__).resolve().parents[2] / "docs" / "errors.md"
ROW = re.compile(r"^\| `([a-z_]+)` \| (\d{3}) \| `([\w.]+)` \| .+ \|$", re.MULTILINE)


def test_every_code_in_the_table_is_documented_with_its_status_and_class() -> None:
    """Each code of ERROR_CLASSES has one row naming its HTTP status and its class; no row is stale."""
    rows = {code: (int(status), cls) for code, status, cls in ROW.findall(DOC.read_text())}
    assert set(rows) == set(ERROR_CLASSES)
    for code, error in ERROR_CLASSES.items():
        status, cls = rows[code]
        assert status == error.status, code
        assert cls.rsplit(".", 1)[-1] == error.__name__, code
