"""A failed SQL statement's error (and so a 500's logged traceback) never shows its parameters."""

from __future__ import annotations

import traceback

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, StatementError

from valetkey.store.db import Database

SECRETS = ("sk-live-0123456789abcdef", "vk_at_" + "x" * 40, "p\u00e4ss\u2028word")


@pytest.mark.parametrize("secret", SECRETS)
async def test_a_failing_statement_keeps_its_parameters_to_itself(
    database_url: str, secret: str
) -> None:
    db = Database(database_url)
    try:
        async with db.session() as session:
            with pytest.raises((DBAPIError, StatementError)) as caught:
                await session.execute(
                    text("INSERT INTO no_such_table (value) VALUES (:value)"), {"value": secret}
                )
        rendered = "".join(traceback.format_exception(caught.value))
        assert "no_such_table" in rendered  # the statement is still there, to debug with
        assert secret not in rendered
        assert "hidden due to hide_parameters" in rendered
    finally:
        await db.engine.dispose()
