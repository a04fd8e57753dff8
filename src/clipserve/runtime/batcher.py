"""Dynamic batching: coalesce items from concurrent requests into model batches.

Knows nothing of HTTP or CLIP. Items are admitted in all-or-nothing reservations against a queue bounded in
items and in bytes (so a request either gets all its slots or a QueueFullError at once), submitted all at once
or a few at a time under their reservation, collected until the batch is full or the oldest item has waited
`max_wait_s`, and run on an executor so the event loop never runs model code. A reservation may name a tenant
(the service uses the account): each tenant holds at most `max_tenant_items` and `max_tenant_bytes` of the
queue, and batches take
tenants' items round-robin, so one tenant's backlog cannot starve another.
If a batch fails, its items are retried one by one so a bad item fails alone.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import time
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from clipserve.errors import ServiceOverloadedError, ServiceUnavailableError
from clipserve.runtime.fair_queue import FairQueue, is_background
from clipserve.runtime.foreground_gate import BackgroundLane
from clipserve.runtime.tenant_activity import TenantActivity

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class QueueFullError(ServiceOverloadedError):
    """The queue cannot take the items now; retry later."""


class BatcherStoppedError(ServiceUnavailableError):
    """The batcher is draining for shutdown and takes no new work."""


@dataclass(frozen=True)
class BatchTiming:
    queue: str
    queue_s: float
    compute_s: float
    batch_size: int
    batch_id: int


@dataclass(frozen=True)
class Batched(Generic[R]):
    """One item's result and how it got there."""

    value: R
    timing: BatchTiming


class BatchObserver(Protocol):
    def batch_ran(self, queue: str, size: int, queue_waits_s: Sequence[float], compute_s: float) -> None: ...


@dataclass
class _Pending(Generic[T, R]):
    payload: T
    future: asyncio.Future[Batched[R]]
    enqueued_at: float
    nbytes: int = 0
    tenant: Hashable = None


class Reservation:
    """Queue slots (and bytes) held for one request between admission and submission."""

    def __init__(
        self,
        adjust: Callable[[Hashable, int, int], None],
        size: int,
        nbytes: int = 0,
        tenant: Hashable = None,
    ) -> None:
        self._adjust = adjust
        self.size = size
        self.nbytes = nbytes
        self.tenant = tenant

    def hold_bytes(self, nbytes: int) -> None:
        """Count more bytes against the queue for this request (e.g. an image just fetched); never refuses."""
        self.nbytes += nbytes
        self._adjust(self.tenant, 0, nbytes)

    def drop_bytes(self, nbytes: int) -> None:
        nbytes = min(nbytes, self.nbytes)
        self.nbytes -= nbytes
        self._adjust(self.tenant, 0, -nbytes)

    def release(self) -> None:
        if self.size or self.nbytes:
            size, nbytes, self.size, self.nbytes = self.size, self.nbytes, 0, 0
            self._adjust(self.tenant, -size, -nbytes)

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class DynamicBatcher(Generic[T, R]):
    def __init__(
        self,
        name: str,
        run_batch: Callable[[list[T]], Sequence[R]],
        executor: Executor,
        *,
        max_batch_size: int,
        max_wait_s: float,
        max_queue_size: int,
        max_queue_bytes: int | None = None,
        max_tenant_items: int | None = None,
        max_tenant_bytes: int | None = None,
        max_batch_s: float | None = None,
        contended_batch_s: float | None = None,
        activity: TenantActivity | None = None,
        payload_bytes: Callable[[T], int] | None = None,
        observer: BatchObserver | None = None,
        background_idle_s: float | None = None,
        background: BackgroundLane | None = None,
    ) -> None:
        self.name = name
        self._run_batch = run_batch
        self._executor = executor
        self._max_batch_size = max_batch_size
        # With a latency target, a batch holds only as many items as the model runs in that time (from a moving
        # average of seconds per item): on a CPU, where a batch of 32 images takes seconds and batches of 4-8
        # are about as efficient, another tenant's item then waits for at most two short batches, not two long
        # ones; on a GPU, items are cheap and batches stay full.
        self._max_batch_s = max_batch_s
        # While several tenants are active (`activity`, shared with the other queue on the same model thread),
        # a tighter target: a request that arrives while another account's batch runs waits for one short batch
        # (on a 2-core CPU, one image) instead of one at the throughput target. Costs that account some
        # throughput only while it shares the model.
        self._contended_batch_s = contended_batch_s
        self._activity = activity
        # Background (Batch API) items run only on idle capacity: while no online item is reserved or queued and
        # at least this long after the last online batch ended, so an online client's next request (a round
        # trip away) finds the model free instead of behind a background batch (which, without a gate, cannot be
        # interrupted; with one, it steps aside at its next yield point).
        self._background_idle_s = background_idle_s
        self._last_foreground_done = float("-inf")
        # With a lane of their own, background batches run beside the online ones and pause at the model's
        # yield points while this queue (or another on the lane's gate) has online work in the house
        # (runtime/foreground_gate.py): an online item then waits for one transformer step of a background
        # batch, not for all of it.
        self._lane = background
        self._background: asyncio.Task[None] | None = None  # the background batch running, at most one
        self._foreground_items = 0  # online items reserved or queued
        self._item_s: float | None = None
        self._max_wait_s = max_wait_s
        self._max_queue_size = max_queue_size
        self._max_queue_bytes = max_queue_bytes
        self._max_tenant_items = max_tenant_items
        self._max_tenant_bytes = max_tenant_bytes
        self._payload_bytes = payload_bytes
        self._observer = observer
        # Batches are filled round-robin across tenants, so one tenant's backlog never delays another's items
        # by more than one item per active tenant; each tenant's own items keep their order.
        self._pending: FairQueue[_Pending[T, R]] = FairQueue()
        self._reserved = 0
        self._tenant_items: Counter[Hashable] = Counter()  # reserved + pending, per tenant
        self._tenant_bytes: Counter[Hashable] = Counter()  # the bytes of _bytes, per tenant
        self._bytes = 0  # reserved bytes plus the payloads waiting for or inside the model
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._batch_ids = itertools.count(1)

    @property
    def depth(self) -> int:
        """Items admitted and not yet handed to the model."""
        return self._reserved + len(self._pending)

    @property
    def batch_limit(self) -> int:
        """The most items the next batch may take: max_batch_size, or fewer to keep within max_batch_s (or
        contended_batch_s while more than one tenant is active)."""
        target = self._max_batch_s
        if self._contended_batch_s is not None and self._activity is not None and self._activity.active() > 1:
            target = self._contended_batch_s if target is None else min(target, self._contended_batch_s)
        if target is None or self._item_s is None:
            return self._max_batch_size
        return max(1, min(self._max_batch_size, int(target / self._item_s)))

    @property
    def queued_bytes(self) -> int:
        """Bytes counted against max_queue_bytes now."""
        return self._bytes

    def reserve(self, size: int, nbytes: int = 0, *, tenant: Hashable = None) -> Reservation:
        """Admit `size` items (`nbytes` known now) for `tenant` or raise at once: QueueFullError when over
        capacity (the queue's, or the tenant's share of it), BatcherStoppedError if stopping."""
        if self._stopping:
            raise BatcherStoppedError(f"the {self.name} queue is shutting down")
        if self.depth + size > self._max_queue_size:
            raise QueueFullError(
                f"the {self.name} queue is full ({self.depth} of {self._max_queue_size} items); retry shortly"
            )
        held = self._tenant_items[tenant]
        if size and self._max_tenant_items is not None and held + size > self._max_tenant_items:
            raise QueueFullError(
                f"your requests already hold {held} of the {self.name} queue's items (each account may hold "
                f"{self._max_tenant_items}); retry when they finish"
            )
        cap = self._max_queue_bytes
        if cap is not None and size and self._bytes + nbytes > cap:
            raise QueueFullError(
                f"the {self.name} queue is full ({self._bytes >> 20} MiB held, {nbytes >> 20} MiB more asked, "
                f"of {cap >> 20} MiB); retry shortly"
            )
        share = self._max_tenant_bytes
        if share is not None and size and self._tenant_bytes[tenant] + nbytes > share:
            raise QueueFullError(
                f"your requests already hold {self._tenant_bytes[tenant] >> 20} MiB of the {self.name} queue "
                f"and ask {nbytes >> 20} MiB more (each account may hold {share >> 20} MiB); retry when they "
                "finish"
            )
        self._reserved += size
        self._add_bytes(tenant, nbytes)
        if size:
            self._count_tenant(tenant, size)
            if self._activity is not None:
                self._activity.saw(tenant)  # before its images decode: the batch running meanwhile is short
        return Reservation(self._adjust, size, nbytes, tenant)

    def submit(self, reservation: Reservation, payloads: Sequence[T]) -> list[asyncio.Future[Batched[R]]]:
        """Queue payloads under a reservation holding at least as many slots; returns one future per payload."""
        if len(payloads) > reservation.size:
            raise ValueError(f"reservation holds {reservation.size} slots, got {len(payloads)} payloads")
        loop = asyncio.get_running_loop()
        now = time.perf_counter()
        if self._activity is not None and payloads:
            self._activity.saw(reservation.tenant)
        futures: list[asyncio.Future[Batched[R]]] = []
        for payload in payloads:
            future: asyncio.Future[Batched[R]] = loop.create_future()
            nbytes = self._payload_bytes(payload) if self._payload_bytes is not None else 0
            self._add_bytes(reservation.tenant, nbytes)
            self._pending.push(reservation.tenant, _Pending(payload, future, now, nbytes, reservation.tenant))
            futures.append(future)
        # The slots now live in _pending.
        reservation.size -= len(payloads)
        self._reserved -= len(payloads)
        self._wakeup.set()
        return futures

    def _adjust(self, tenant: Hashable, size: int, nbytes: int) -> None:
        self._reserved += size
        self._add_bytes(tenant, nbytes)
        if size:
            self._count_tenant(tenant, size)
        self._wakeup.set()

    def _add_bytes(self, tenant: Hashable, nbytes: int) -> None:
        if nbytes:
            self._bytes += nbytes
            self._tenant_bytes[tenant] += nbytes
            if self._tenant_bytes[tenant] <= 0:
                del self._tenant_bytes[tenant]

    def _count_tenant(self, tenant: Hashable, size: int) -> None:
        self._tenant_items[tenant] += size
        if self._tenant_items[tenant] <= 0:
            del self._tenant_items[tenant]
        if not is_background(tenant):
            # the gate is held while online items are reserved or queued (and, in _run, while in the model)
            before = self._foreground_items
            self._foreground_items += size
            if self._lane is not None and before == 0 < self._foreground_items:
                self._lane.gate.enter()
            elif self._lane is not None and before > 0 == self._foreground_items:
                self._lane.gate.leave()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        """Refuse new work, finish everything admitted (drain), then stop."""
        self._stopping = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            if not self._pending:
                if self._stopping and self._reserved == 0:
                    await self._background_finished()
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._wait_for_fill()
            await self._wait_for_idle_capacity()
            foreground = self._pending.foreground_size > 0
            if foreground and self._lane is not None:
                self._lane.gate.enter()  # before its items leave the count: the gate stays held
            try:
                batch = self._take_batch()
                if not batch:
                    continue
                if not foreground and self._lane is not None:
                    await self._background_finished()  # one at a time: the last one has ended
                    self._background = asyncio.create_task(self._run_background(batch))
                    continue
                try:
                    await self._execute(batch)
                finally:
                    self._batch_done(batch)
            finally:
                if foreground:
                    self._last_foreground_done = time.perf_counter()
                    if self._lane is not None:
                        self._lane.gate.leave()

    def _batch_done(self, batch: list[_Pending[T, R]]) -> None:
        for item in batch:
            self._add_bytes(item.tenant, -item.nbytes)

    async def _run_background(self, batch: list[_Pending[T, R]]) -> None:
        try:
            await self._execute(batch, background=True)
        finally:
            self._batch_done(batch)
            self._wakeup.set()  # the next background batch may go

    async def _background_finished(self) -> None:
        if self._background is not None:
            await asyncio.gather(self._background, return_exceptions=True)
            self._background = None

    async def _wait_for_fill(self) -> None:
        deadline = min(item.enqueued_at for item in self._pending.heads()) + self._max_wait_s
        while len(self._pending) < self.batch_limit and not self._stopping:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            if not await self._woken_within(remaining):
                return

    async def _wait_for_idle_capacity(self) -> None:
        """With only background items queued: wait until no background batch is running (with a gate), no
        online item is reserved or queued, and the model has been free of online batches for
        background_idle_s."""
        while self._pending and not self._pending.foreground_size:
            if self._background is not None and not self._background.done():
                # the background batch running now: wait for it (also when stopping: it may be paused for
                # online items of this queue, which must still be served)
                remaining: float | None = None
            elif self._stopping or self._background_idle_s is None:
                return
            elif self._foreground_items > 0:
                remaining = None  # an online request is decoding: wait for it
            else:
                remaining = self._last_foreground_done + self._background_idle_s - time.perf_counter()
                if remaining <= 0:
                    return
            await self._woken_within(remaining)

    async def _woken_within(self, timeout_s: float | None) -> bool:
        """Wait for the next wakeup (new items, a release, stop) for at most `timeout_s` (None: no limit);
        False when the time ran out first."""
        self._wakeup.clear()
        try:
            async with asyncio.timeout(timeout_s):
                await self._wakeup.wait()
        except TimeoutError:
            return False
        return True

    def _take_batch(self) -> list[_Pending[T, R]]:
        """The next batch: online items only, or (when none is queued) background items only."""
        batch: list[_Pending[T, R]] = []
        limit = self.batch_limit
        foreground = self._pending.foreground_size > 0
        while self._pending and len(batch) < limit and (self._pending.foreground_size > 0) == foreground:
            item = self._pending.pop()
            self._count_tenant(item.tenant, -1)
            if not item.future.done():  # skip items whose request was cancelled
                batch.append(item)
            else:
                self._add_bytes(item.tenant, -item.nbytes)
        return batch

    async def _execute(self, batch: list[_Pending[T, R]], *, background: bool = False) -> None:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        batch_id = next(self._batch_ids)
        paused_s = 0.0
        try:
            call = functools.partial(self._run_batch, [p.payload for p in batch])
            if background and self._lane is not None:
                results, paused_s = await self._lane.run(call)
            else:
                results = await loop.run_in_executor(self._executor, call)
            if len(results) != len(batch):
                raise RuntimeError(f"run_batch returned {len(results)} results for {len(batch)} items")
        except Exception as exc:  # noqa: BLE001 - any failure is isolated per item below, never lost
            if len(batch) == 1:
                self._settle_error(batch[0], exc)
                return
            logger.warning(
                "%s batch of %d failed (%s); retrying items one by one", self.name, len(batch), exc
            )
            for item in batch:
                await self._execute([item], background=background)
            return
        compute_s = (
            time.perf_counter() - started - paused_s
        )  # the model's time, not the pauses for online work
        per_item = compute_s / len(batch)
        self._item_s = per_item if self._item_s is None else 0.7 * self._item_s + 0.3 * per_item
        waits = [started - p.enqueued_at for p in batch]
        for item, value, wait in zip(batch, results, waits, strict=True):
            if not item.future.done():
                item.future.set_result(
                    Batched(value, BatchTiming(self.name, wait, compute_s, len(batch), batch_id))
                )
        if self._observer is not None:
            self._observer.batch_ran(self.name, len(batch), waits, compute_s)

    @staticmethod
    def _settle_error(item: _Pending[T, R], exc: BaseException) -> None:
        if not item.future.done():
            item.future.set_exception(exc)
