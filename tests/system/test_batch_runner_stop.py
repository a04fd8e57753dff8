"""A stopping BatchRunner gives back every line it holds, even a claim that commits in the store's thread after
the runner's loop was cancelled (the race behind a SIGTERM leaving lines held until their lease ran out)."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from clipserve.service.batch_runner import BatchRunner, LineCalls, RunnerSettings
from clipserve.service.pricing import PriceTable
from clipserve.store.accounts import AccountStore
from clipserve.store.batch_records import BatchRecord, LineClaim, NewLine
from clipserve.store.batches import BatchStore
from clipserve.store.database import Database
from clipserve.store.ledger import LedgerStore

pytestmark = pytest.mark.anyio


class SlowClaims(BatchStore):
    """claim_work waits (in the store's thread) until the test lets it go on, then claims for real."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.entered = threading.Event()
        self.go = threading.Event()

    def claim_work(self, instance_id: str, lease_s: float, limit_lines: int) -> list[LineClaim] | None:
        self.entered.set()
        assert self.go.wait(30)
        return super().claim_work(instance_id, lease_s, limit_lines)


class NoFiles:
    def write_output(self, batch: BatchRecord, kind: str, chunks: Any) -> str | None:
        raise AssertionError("nothing is finalized here")


async def _never_prepared(*args: Any) -> Any:
    raise AssertionError("no line runs: the runner stops while its first claim commits")


async def test_a_claim_committing_while_the_runner_stops_is_given_back(database: Database) -> None:
    store = SlowClaims(database)
    account, key, _ = AccountStore(database).issue_key("batcher", 1_000_000)
    batch = store.create_batch(
        account.id, key.id, "file-x", "/v1/embeddings", None, 8, store.clock() + timedelta(hours=24),
        lines=[NewLine(i, f"req-{i}", '{"input": "a cat"}') for i in range(1, 9)],
    )  # fmt: skip
    pool = ThreadPoolExecutor(2)
    runner = BatchRunner(
        store, LedgerStore(database), NoFiles(),
        LineCalls(_never_prepared, lambda exc, request_id: (500, {})),
        PriceTable(Decimal("0.047"), Decimal("0")),
        RunnerSettings(Decimal("0.5"), lease_s=3600, claim_lines=4, lines_in_flight=2, poll_s=0.05, retries=0),
        "instance-stopping", pool,
    )  # fmt: skip
    try:
        runner.start()
        await asyncio.to_thread(store.entered.wait, 30)
        stopping = asyncio.create_task(runner.stop())
        await asyncio.sleep(0.2)  # the loop is cancelled while claim_work is still running in the pool
        store.go.set()
        await stopping
    finally:
        store.go.set()
        pool.shutdown(wait=True)  # the claim has committed by now, whatever stop() did
    claims = BatchStore(database).claim_work("instance-next", 30, 100)
    assert claims is not None
    assert [c.line for c in claims] == list(range(1, 9))
    assert batch.total == 8
