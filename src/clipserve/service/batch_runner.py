"""Runs the Batch API's lines in the background (issue 13): claim, run, answer and charge once, finalize.

Every server process runs one BatchRunner. It leases a few unanswered lines of a batch at a time
(BatchStore.claim_work: a claim is this instance's until its lease runs out, renewed while the lines run, so
replicas share a batch and a killed replica's lines go back to the others), runs each line through the same
code as the online endpoint (api/endpoint_calls.prepare_line, handed in as `LineCalls`) under the account's
background tenant, so the model queues serve it only when no online request waits (runtime/fair_queue.py),
and answers it with BatchStore.answer_line: the answer and its ledger charge (the batch price, endpoint
"batch:/v1/...") in one transaction that refuses a line answered already or a batch no longer in progress.
That transaction is what makes a line answered and charged exactly once, whatever kills a process: a line
that ran but whose answer did not commit is run again by whoever claims it next, and charged then.

Before a line runs, its account must have credit for the most it may cost (its bound at the batch price,
plus the bounds of this process's other lines of that account still running until they are charged, plus the
ledger's holds for the account's online requests in flight on every live instance); otherwise the line is
answered with `insufficient_quota` (no response, no charge) and the batch goes on, so it completes with those
lines in its error file. Batch lines running in other processes are not counted, so replicas may take an
account a few lines' worth below zero at most.

A batch whose lines are all answered, that was cancelled, or that expired is finalized by one instance
(BatchStore.claim_finalize, leased too): its answers become the output and error JSONL files
(service/batch_output.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, Protocol, TypeVar

from clipserve.errors import InsufficientQuotaError, ServiceOverloadedError
from clipserve.runtime.fair_queue import background_tenant
from clipserve.service.batch_output import OutputFiles, output_line, write_batch_files
from clipserve.service.metering import run_to_completion
from clipserve.service.pricing import PriceTable, Usage, micros_to_dollars
from clipserve.store.batch_records import LineClaim
from clipserve.store.batches import BatchStore, line_charge_id
from clipserve.store.ledger import Charge, LedgerStore

logger = logging.getLogger(__name__)
T = TypeVar("T")


class AnswerLike(Protocol):
    @property
    def body(self) -> str: ...
    @property
    def usage(self) -> Usage: ...


class PreparedLike(Protocol):
    @property
    def bound(self) -> Usage: ...
    @property
    def produce(self) -> Callable[[], Awaitable[AnswerLike]]: ...


@dataclass(frozen=True)
class LineCalls:
    """The endpoint code a line runs through (the online routes' code) and how an error becomes its body."""

    prepare: Callable[[str, dict[str, Any], str, str], Awaitable[PreparedLike]]
    render_error: Callable[[Exception, str], tuple[int, dict[str, Any]]]


@dataclass(frozen=True)
class RunnerSettings:
    discount: Decimal  # the batch price is the online price times (1 - discount)
    lease_s: float  # how long a claim is this instance's without a renewal
    claim_lines: int  # lines claimed at once
    lines_in_flight: int  # lines of this process running at once (what keeps the model's batches full)
    poll_s: float  # how often an idle runner looks for work, expiries and batches to finalize
    retries: int  # a line refused for the server's load (503, queue full) is retried this many times


# Refusals that say "not now" about the server (503: a full queue, starting up, a full disk), not "no" about the
# line: retried a few times, then left unanswered for a later claim.
_TRANSIENT = (ServiceOverloadedError,)


def batch_prices(prices: PriceTable, discount: Decimal) -> PriceTable:
    """The online prices less the batch discount (one rounding, up to the next micro-dollar, per line)."""
    keep = Decimal(1) - discount
    return replace(
        prices, per_1k_images=prices.per_1k_images * keep, per_1m_tokens=prices.per_1m_tokens * keep
    )


class BatchRunner:
    def __init__(
        self,
        store: BatchStore,
        ledger: LedgerStore,
        files: OutputFiles,
        calls: LineCalls,
        prices: PriceTable,
        settings: RunnerSettings,
        instance_id: str,
        store_pool: Executor,
    ) -> None:
        self.store = store
        self.ledger = ledger
        self.files = files
        self.calls = calls
        self.prices = batch_prices(prices, settings.discount)
        self.settings = settings
        self.instance_id = instance_id
        self._pool = store_pool
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(settings.lines_in_flight)
        self._reserved: Counter[int] = Counter()  # per account: bounds of its lines running here
        self._stopped_batches: set[str] = set()  # cancelled or expiring while its lines ran here
        self._running: set[asyncio.Task[None]] = set()
        self._claimed: dict[str, LineClaim] = {}  # a claim of each batch with lines running here
        self._claims_of: Counter[str] = Counter()  # claims running here, per batch
        self._checks: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._in_store: set[asyncio.Future[Any]] = set()  # store calls running in the pool now

    # lifecycle

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="batch-runner")

    async def stop(self) -> None:
        """Stop claiming; lines running now are cancelled (unanswered) and every line this instance holds is
        given back, once no store call of ours is still running (a claim committing in the store's thread
        after its awaiting task was cancelled would otherwise stay held until its lease ran out)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._in_store:
            await asyncio.wait(self._in_store)
        with contextlib.suppress(Exception):  # a database gone: the leases give the lines back
            released = await self._store(lambda: self.store.release(self.instance_id))
            if released:
                logger.info("batch runner: gave back %d claimed lines", released)

    def wake(self) -> None:
        """Look for work now, and stop at once the lines of a batch that was cancelled (called by the routes
        after a batch is created or cancelled; other replicas notice a cancel when they renew their claim)."""
        self._wake.set()
        if self._claimed:
            check = asyncio.get_running_loop().create_task(self._check_claimed())
            self._checks.add(check)
            check.add_done_callback(self._checks.discard)

    async def _check_claimed(self) -> None:
        for claim in list(self._claimed.values()):
            with contextlib.suppress(Exception):  # the next renewal checks again
                if await self._store(functools.partial(self._status, claim)) != "in_progress":
                    self._stop_batch(claim.batch_id)

    # the loop

    async def _loop(self) -> None:
        """Upkeep (expiries, finalizing) and claims: at most two claims at a time, one running while the next
        waits for slots, so a process never holds more lines than it is about to run."""
        tasks: set[asyncio.Task[None]] = set()
        try:
            while True:
                found = False
                claims = None
                try:
                    await self._store(self.store.expire_due)
                    found = await self._finalize_one()
                    if len(tasks) < 2:
                        claims = await self._store(
                            lambda: self.store.claim_work(
                                self.instance_id, self.settings.lease_s, self.settings.claim_lines
                            )
                        )
                except Exception:  # a database hiccup must not end the runner
                    logger.exception("batch runner: store call failed; will retry")
                if claims:
                    found = True
                    task = asyncio.create_task(self._run_claim(claims), name=f"batch-{claims[0].batch_id}")
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                if len(tasks) >= 2:
                    await asyncio.wait(
                        tasks, timeout=self.settings.poll_s, return_when=asyncio.FIRST_COMPLETED
                    )
                elif not found:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.settings.poll_s):
                            await self._wake.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _run_claim(self, claims: Sequence[LineClaim]) -> None:
        """Run a claim's lines (as many at once as lines_in_flight allows), renewing the lease meanwhile."""
        batch_id = claims[0].batch_id
        pending = {claim.line for claim in claims}
        renewing = asyncio.create_task(self._renew(claims[0], pending))
        self._claimed[batch_id] = claims[0]
        self._claims_of[batch_id] += 1
        lines: list[asyncio.Task[None]] = []
        try:
            for claim in claims:
                await self._slots.acquire()
                if batch_id in self._stopped_batches:
                    self._slots.release()
                    break
                task = asyncio.create_task(self._run_line(claim, pending), name=batch_id)
                task.add_done_callback(lambda _: self._slots.release())
                lines.append(task)
            await asyncio.gather(*lines, return_exceptions=True)
        finally:
            for task in lines:
                task.cancel()
            await asyncio.gather(*lines, return_exceptions=True)
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing
            self._claims_of[batch_id] -= 1
            if self._claims_of[batch_id] <= 0:
                del self._claims_of[batch_id]
                self._claimed.pop(batch_id, None)
            if pending:  # stopped (shutdown, cancel): give the lines back now instead of at the lease's end
                left = sorted(pending)
                with contextlib.suppress(Exception):
                    await self._store(lambda: self.store.renew(self.instance_id, batch_id, left, 0.0))
            self._wake.set()  # more lines, or a batch to finalize

    async def _renew(self, first: LineClaim, pending: set[int]) -> None:
        """Keep the claim while its lines run; stop them when the batch is no longer in progress."""
        batch_id = first.batch_id
        while pending:
            await asyncio.sleep(self.settings.lease_s / 3)
            try:
                await self._store(
                    lambda: self.store.renew(
                        self.instance_id, batch_id, sorted(pending), self.settings.lease_s
                    )
                )
                status = await self._store(lambda: self._status(first))
            except Exception:
                logger.exception("batch runner: renewing batch %s failed; will retry", batch_id)
                continue
            if status != "in_progress":
                self._stop_batch(batch_id)

    def _status(self, claim: LineClaim) -> str:
        return self.store.get_batch(claim.account_id, claim.batch_id).status

    def _stop_batch(self, batch_id: str) -> None:
        """The batch was cancelled or is expiring: its lines running here stop now (unanswered, uncharged)."""
        self._stopped_batches.add(batch_id)
        for task in list(self._running):
            if task.get_name() == batch_id:
                task.cancel()

    # one line

    async def _run_line(self, claim: LineClaim, pending: set[int]) -> None:
        """Answer one line; one that could not be answered stays in `pending`, given back when the claim ends."""
        task = asyncio.current_task()
        assert task is not None
        self._running.add(task)
        try:
            answered = await self._answer(claim)
            pending.discard(claim.line)
            if not answered:  # answered elsewhere, or the batch stopped: nothing more of it runs here
                status = await self._store(lambda: self._status(claim))
                if status != "in_progress":
                    self._stop_batch(claim.batch_id)
        except asyncio.CancelledError:
            pass
        except Exception:
            logger.exception(
                "batch %s line %d failed to run; left for a later claim", claim.batch_id, claim.line
            )
        finally:
            self._running.discard(task)

    async def _answer(self, claim: LineClaim) -> bool:
        account = "local" if claim.account_id is None else f"account:{claim.account_id}"
        request_id = f"req_{secrets.token_hex(16)}"
        metered = claim.account_id is not None and claim.key_id is not None
        reserved = 0
        try:
            for attempt in range(self.settings.retries + 1):
                try:
                    prepared = await self.calls.prepare(
                        claim.url, json.loads(claim.body_json), account, background_tenant(account)
                    )
                    if metered:
                        assert claim.account_id is not None
                        if not reserved:
                            reserved = self.prices.cost_micros(prepared.bound)
                            await self._check_credit(claim.account_id, reserved)
                            self._reserved[claim.account_id] += reserved
                    answer = await prepared.produce()
                    break
                except _TRANSIENT:
                    if attempt == self.settings.retries:
                        raise
                    await asyncio.sleep(min(2.0**attempt, self.settings.lease_s / 3))
        except InsufficientQuotaError as exc:
            error = {"code": "insufficient_quota", "message": exc.message}
            return await self._commit(claim, output_line(claim, request_id, None, None, error), None, None)
        except _TRANSIENT:
            raise  # not the line's fault: left unanswered, for a later claim
        except Exception as exc:  # noqa: BLE001 - the line gets what the online request would get
            status, body = self.calls.render_error(exc, request_id)
            return await self._commit(claim, output_line(claim, request_id, status, body), status, None)
        else:  # the reservation stands until the charge has committed (the finally below runs after)
            charge = self._charge(claim, request_id, answer.usage) if metered else None
            line = output_line(claim, request_id, 200, json.loads(answer.body))
            return await self._commit(claim, line, 200, charge)
        finally:
            if reserved:
                assert claim.account_id is not None
                self._reserved[claim.account_id] -= reserved
                if self._reserved[claim.account_id] <= 0:
                    del self._reserved[claim.account_id]

    def _charge(self, claim: LineClaim, request_id: str, usage: Usage) -> Charge:
        assert claim.account_id is not None
        assert claim.key_id is not None
        return Charge(
            charge_id=line_charge_id(claim.batch_id, claim.line),
            request_id=request_id,
            account_id=claim.account_id,
            key_id=claim.key_id,
            endpoint=f"batch:{claim.url}",
            images=usage.images,
            tokens=self.prices.billable_tokens(usage),
            cost_micros=self.prices.cost_micros(usage),
        )

    async def _check_credit(self, account_id: int, bound_micros: int) -> None:
        """The line's bound must fit in the account's balance less the credit held for its online requests in
        flight (on every live instance: the ledger's holds) and less this process's batch lines running."""
        unheld = await self._store(lambda: self.ledger.available_micros(account_id))
        available = unheld - self._reserved[account_id]
        if available <= 0 or available < bound_micros:
            raise InsufficientQuotaError(
                "You exceeded your current quota: this request may cost up to "
                f"${micros_to_dollars(bound_micros)} at the batch price and the account has "
                f"${micros_to_dollars(max(0, available))} available. Add credit to continue."
            )

    async def _commit(self, claim: LineClaim, line: str, status: int | None, charge: Charge | None) -> bool:
        """answer_line, finished even if this task is cancelled meanwhile (the answer and charge are one
        transaction: it commits or not, and a cancel must not leave us unsure which)."""
        return await run_to_completion(
            self._pool, lambda: self.store.answer_line(claim.batch_id, claim.line, line, status, charge)
        )

    # finalizing

    async def _finalize_one(self) -> bool:
        batch = await self._store(lambda: self.store.claim_finalize(self.instance_id, self.settings.lease_s))
        if batch is None:
            return False
        self._stop_batch(batch.id)
        renewing = asyncio.create_task(self._keep_finalize_lease(batch.id))
        try:
            output, errors = await self._store(lambda: write_batch_files(self.store, self.files, batch))
            finalized = await self._store(
                lambda: self.store.finalize(
                    batch.id, output, errors, batch.finalize_to or "completed", finalizer=self.instance_id
                )
            )
            logger.info("batch %s finalized (%s): %s", batch.id, batch.finalize_to, finalized)
            self._stopped_batches.discard(batch.id)  # final: no line of it is claimed again
        except Exception:  # the finalize lease runs out and it is tried again
            logger.exception("batch %s: finalizing failed; will retry", batch.id)
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing
        return True

    async def _keep_finalize_lease(self, batch_id: str) -> None:
        """Renew the finalize lease while a (large) batch's files are written, so no other instance takes the
        batch over and writes the same files meanwhile."""
        while True:
            await asyncio.sleep(self.settings.lease_s / 3)
            try:
                held = await self._store(
                    lambda: self.store.renew_finalize(self.instance_id, batch_id, self.settings.lease_s)
                )
            except Exception:
                logger.exception("batch %s: renewing the finalize lease failed; will retry", batch_id)
                continue
            if not held:
                return  # taken over (this instance stalled past its lease): finalize() will refuse us

    def _store_call_done(self, future: asyncio.Future[Any]) -> None:
        self._in_store.discard(future)
        if not future.cancelled():
            future.exception()  # retrieved: a caller cancelled meanwhile is not there to read it

    async def _store(self, call: Callable[[], T]) -> T:
        future = asyncio.get_running_loop().run_in_executor(self._pool, call)
        self._in_store.add(future)
        future.add_done_callback(self._store_call_done)
        return await asyncio.shield(future)  # a cancelled caller leaves the call running, and in _in_store
