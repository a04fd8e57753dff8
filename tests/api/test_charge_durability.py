"""What docs/accounts.md and docs/design.md say is configured for the ledger on SQLite: a charge commits with
PRAGMA synchronous=FULL (fsync at commit, before the answer is sent) and an admission (credit hold, counters)
commits with synchronous=NORMAL (no fsync), read on the real store's own connection as each commits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support import bearer, create_key, running_app

pytestmark = pytest.mark.anyio

FULL, NORMAL = 2, 1


async def test_charges_commit_with_fsync_and_admissions_without(tiny_runtime: Any, tmp_path: Path) -> None:
    from sqlalchemy import event

    key = create_key(tmp_path, credit="1", requests_per_minute=100)
    async with running_app(tiny_runtime, tmp_path) as (client, app):
        engine = app.state.context.database.engine
        commits: list[tuple[str, int, str]] = []

        def on_statement(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            words = " ".join(statement.split()).upper()
            if words.startswith("INSERT INTO HOLDS"):
                conn.info["commit_kind"] = "admission"
            elif words.startswith("INSERT INTO LEDGER"):
                conn.info["commit_kind"] = "charge"

        def on_commit(conn: Any) -> None:
            kind = conn.info.pop("commit_kind", None)
            if kind is None:
                return
            cursor = conn.connection.dbapi_connection.cursor()
            synchronous = cursor.execute("PRAGMA synchronous").fetchone()[0]
            journal_mode = cursor.execute("PRAGMA journal_mode").fetchone()[0]
            cursor.close()
            commits.append((kind, synchronous, journal_mode))

        event.listen(engine, "before_cursor_execute", on_statement)
        event.listen(engine, "commit", on_commit)
        try:
            for text in ("a cat", "a dog"):
                response = await client.post("/v1/embeddings", json={"input": text}, headers=bearer(key))
                assert response.status_code == 200, response.text
        finally:
            event.remove(engine, "before_cursor_execute", on_statement)
            event.remove(engine, "commit", on_commit)
    assert commits == [("admission", NORMAL, "wal"), ("charge", FULL, "wal")] * 2
