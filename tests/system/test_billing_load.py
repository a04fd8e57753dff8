"""200 concurrent requests from 20 keys, half of them running out of credit: every balance stays exact."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.support import (
    bearer,
    data_uri,
    encode_image,
    gradient_image,
    ledger_of,
    open_accounts,
    running_app,
)

pytestmark = pytest.mark.anyio

IMAGE_COST = 47  # micro-dollars, the default $0.047 per 1,000 images


async def test_concurrent_requests_leave_every_balance_equal_to_grants_minus_charges(
    tiny_runtime: Any, tmp_path: Path, database_url: str
) -> None:
    credits = [IMAGE_COST * (10 if i % 2 == 0 else 4) + 20 for i in range(20)]  # odd accounts afford 4 of 10
    opened = open_accounts(database_url, credits)
    image = data_uri(encode_image(gradient_image(64, 48)))
    async with running_app(
        tiny_runtime, tmp_path, database_url=database_url, rate_limit_requests_per_minute=0
    ) as (client, _):

        async def call(key: str) -> int:
            response = await client.post(
                "/v1/embeddings", json={"input": [{"image": image}]}, headers=bearer(key)
            )
            if response.status_code == 429:
                assert response.json()["error"]["code"] == "insufficient_quota"
            return response.status_code

        jobs = [key for _, key in opened for _ in range(10)]
        statuses = await asyncio.gather(*(call(key) for key in jobs))
    ledger = ledger_of(database_url)
    try:
        for i, (account_id, _) in enumerate(opened):
            mine = statuses[i * 10 : (i + 1) * 10]
            assert set(mine) <= {200, 429}
            assert mine.count(200) == min(10, credits[i] // IMAGE_COST)
            audit = ledger.audit(account_id)
            assert audit.consistent, audit
            assert audit.balance_micros == credits[i] - mine.count(200) * IMAGE_COST >= 0
        assert len(ledger.charges()) == statuses.count(200)
    finally:
        ledger.db.close()
