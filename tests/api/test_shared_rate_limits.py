"""Rate limits are shared by replicas on one database (README; accounts.md): two apps, each with its own
lifespan, pools and memory, on one database (SQLite and a real PostgreSQL). The per-minute window is rows in
that database, so a key with requests_per_minute=3 gets 3 answers in all, whichever app serves them. The burst
bucket (rate_limit_burst_requests) is per process and is turned off here (0) so only the shared window counts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.rate_window import assert_retry_after, start_early_in_a_minute
from tests.support import bearer, open_accounts, running_app

pytestmark = pytest.mark.anyio


async def test_two_apps_on_one_database_share_a_keys_request_window(
    tiny_runtime: Any, tmp_path: Path, database_url: str
) -> None:
    [(_, key)] = open_accounts(database_url, [10_000_000], requests_per_minute=3)
    options: dict[str, Any] = {
        "database_url": database_url,
        "rate_limit_burst_requests": 0,
        "rate_limited_answer_delay_s": 0,
    }
    async with (
        running_app(tiny_runtime, tmp_path / "a", **options) as (app_a, _),
        running_app(tiny_runtime, tmp_path / "b", **options) as (app_b, _),
    ):
        await start_early_in_a_minute()  # all five in one minute's window, none in the previous one
        answers = []
        for client, text in (
            (app_a, "one"),
            (app_b, "two"),
            (app_a, "three"),
            (app_b, "four"),
            (app_a, "five"),
        ):
            sent_at = time.time()
            response = await client.post("/v1/embeddings", json={"input": text}, headers=bearer(key))
            answered_at = time.time()
            answers.append((response.status_code, response.json().get("error", {}).get("code")))
            if text == "four":
                assert_retry_after(response.headers, 3, sent_at, answered_at)
    assert answers == [(200, None)] * 3 + [(429, "rate_limit_exceeded")] * 2
