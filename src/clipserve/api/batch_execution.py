"""The Batch API's background runner in the app's lifespan: lines run through the online endpoints' code."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

from clipserve.api.dependencies import AppContext
from clipserve.api.endpoint_calls import prepare_line
from clipserve.api.errors import error_answer
from clipserve.errors import NotFoundError
from clipserve.service.batch_files import FileStorage
from clipserve.service.batch_output import output_file_id
from clipserve.service.batch_runner import BatchRunner, LineCalls, RunnerSettings
from clipserve.store.batch_records import BatchRecord
from clipserve.store.batches import BatchStore


class BatchOutputFiles:
    """A finalized batch's output and error files: bytes in the FileStorage, rows in the BatchStore. The ids
    are derived from the batch's, so a finalize redone after a crash replaces its files instead of adding."""

    def __init__(self, store: BatchStore, storage: FileStorage, retention_s: float | None) -> None:
        self.store = store
        self.storage = storage
        self.retention_s = retention_s

    def write_output(self, batch: BatchRecord, kind: str, chunks: Iterable[bytes]) -> str | None:
        file_id = output_file_id(batch.id, kind)
        size = self.storage.write_stream(file_id, chunks)
        with contextlib.suppress(NotFoundError):
            self.store.delete_file(batch.account_id, file_id)  # an earlier try's row
        if not size:
            self.storage.delete(file_id)
            return None
        self.store.create_file(
            batch.account_id,
            f"{batch.id}_{kind}.jsonl",
            "batch_output",
            size,
            file_id,
            expires_at=self.store.expiry(self.retention_s),
            file_id=file_id,
        )
        return file_id


@asynccontextmanager
async def running_batches(context: AppContext) -> AsyncIterator[None]:
    """Run batch lines in the background while the app serves (stopped before the model queues drain)."""
    settings = context.settings
    assert context.ledger is not None
    assert context.store_pool is not None
    assert context.meter is not None
    store, storage = context.batches, context.batch_files
    assert store is not None
    assert storage is not None
    runner = BatchRunner(
        store,
        context.ledger,
        BatchOutputFiles(store, storage, settings.batch_file_retention_s),
        LineCalls(functools.partial(prepare_line, context), error_answer),
        context.meter.prices,
        RunnerSettings(
            discount=settings.batch_discount,
            lease_s=settings.batch_lease_s,
            claim_lines=settings.batch_claim_lines,
            lines_in_flight=settings.batch_lines_in_flight,
            poll_s=settings.batch_poll_s,
            retries=3,
        ),
        context.ledger.instance.id,
        context.store_pool,
    )
    context.batch_runner = runner
    runner.start()
    try:
        yield
    finally:
        await runner.stop()
        context.batch_runner = None
