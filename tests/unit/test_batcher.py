from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import pytest

from clipserve.runtime.batcher import BatcherStoppedError, DynamicBatcher, QueueFullError
from clipserve.runtime.fair_queue import background_tenant
from clipserve.runtime.foreground_gate import BackgroundLane, ForegroundGate
from clipserve.runtime.tenant_activity import TenantActivity
from tests.support import until

pytestmark = pytest.mark.anyio


class Recorder:
    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def square(self, payloads: list[int]) -> list[int]:
        if any(p < 0 for p in payloads):
            raise ValueError("negative payload")
        self.batches.append(list(payloads))
        return [p * p for p in payloads]


@asynccontextmanager
async def batcher_for(
    run: Callable[[list[int]], Sequence[int]], **kwargs: float
) -> AsyncIterator[DynamicBatcher[int, int]]:
    options = {"max_batch_size": 8, "max_wait_s": 0.05, "max_queue_size": 64} | kwargs
    with ThreadPoolExecutor(1) as pool:
        batcher: DynamicBatcher[int, int] = DynamicBatcher(
            "test",
            run,
            pool,
            max_batch_size=int(options["max_batch_size"]),
            max_wait_s=options["max_wait_s"],
            max_queue_size=int(options["max_queue_size"]),
            max_tenant_items=int(options["max_tenant_items"]) if "max_tenant_items" in options else None,
        )
        batcher.start()
        try:
            yield batcher
        finally:
            await batcher.stop()


async def submit_one(batcher: DynamicBatcher[int, int], value: int) -> int:
    with batcher.reserve(1) as slot:
        (future,) = batcher.submit(slot, [value])
    return (await future).value


async def test_concurrent_submissions_coalesce_into_one_batch() -> None:
    recorder = Recorder()
    async with batcher_for(recorder.square) as batcher:
        results = await asyncio.gather(*(submit_one(batcher, i) for i in range(6)))
    assert results == [i * i for i in range(6)]
    assert recorder.batches == [[0, 1, 2, 3, 4, 5]]


async def test_batches_never_exceed_max_batch_size() -> None:
    recorder = Recorder()
    async with batcher_for(recorder.square, max_batch_size=4) as batcher:
        with batcher.reserve(10) as slots:
            futures = batcher.submit(slots, list(range(10)))
        results = [(await f) for f in futures]
    assert [r.value for r in results] == [i * i for i in range(10)]
    assert [len(b) for b in recorder.batches] == [4, 4, 2]
    assert results[0].timing.batch_size == 4
    assert results[-1].timing.batch_size == 2
    assert all(r.timing.queue_s >= 0 and r.timing.compute_s >= 0 for r in results)


async def test_a_full_queue_refuses_at_once_and_recovers() -> None:
    async with batcher_for(Recorder().square, max_queue_size=5) as batcher:
        held = batcher.reserve(4)
        with pytest.raises(QueueFullError) as caught:
            batcher.reserve(2)
        assert caught.value.status_code == 503
        assert caught.value.headers["Retry-After"]
        assert batcher.depth == 4
        held.release()
        assert batcher.depth == 0
        assert await submit_one(batcher, 3) == 9


async def test_a_failing_item_fails_alone() -> None:
    recorder = Recorder()
    async with batcher_for(recorder.square) as batcher:
        outcomes = await asyncio.gather(
            *(submit_one(batcher, v) for v in (1, 2, -1, 3)), return_exceptions=True
        )
    assert outcomes[:2] == [1, 4]
    assert isinstance(outcomes[2], ValueError)
    assert outcomes[3] == 9


async def test_stop_drains_admitted_work_then_refuses_new_work() -> None:
    gate = threading.Event()
    recorder = Recorder()

    def slow_square(payloads: list[int]) -> list[int]:
        gate.wait(5)
        return recorder.square(payloads)

    async with batcher_for(slow_square, max_batch_size=2, max_wait_s=0.0) as batcher:
        with batcher.reserve(6) as slots:
            futures = batcher.submit(slots, list(range(6)))
        stopping = asyncio.ensure_future(batcher.stop())
        await asyncio.sleep(0)  # one turn of the loop: the stop task takes its first step (it marks stopping)
        with pytest.raises(BatcherStoppedError):
            batcher.reserve(1).release()  # (released if wrongly admitted: a failure must not hang the drain)
        # refused while the admitted work is still held by the model, not after it finished
        assert not any(f.done() for f in futures)
        assert not stopping.done()
        gate.set()
        await stopping
        assert [(await f).value for f in futures] == [i * i for i in range(6)]


async def test_queue_fills_while_the_model_is_busy() -> None:
    gate = threading.Event()

    running_batch = threading.Event()

    def blocked(payloads: list[int]) -> list[int]:
        running_batch.set()
        gate.wait(5)
        return payloads

    async with batcher_for(blocked, max_batch_size=2, max_wait_s=0.0, max_queue_size=4) as batcher:
        with batcher.reserve(2) as first:
            running = batcher.submit(first, [1, 2])
        # the first batch is now on the (blocked) executor, out of the queue
        assert await asyncio.to_thread(running_batch.wait, 5)
        assert batcher.depth == 0
        with batcher.reserve(4) as second:
            queued = batcher.submit(second, [3, 4, 5, 6])
        with pytest.raises(QueueFullError):
            batcher.reserve(1)
        gate.set()
        assert [(await f).value for f in running + queued] == [1, 2, 3, 4, 5, 6]


async def test_the_queue_is_bounded_in_bytes_reserved_held_and_queued() -> None:
    recorder = Recorder()
    with ThreadPoolExecutor(1) as pool:
        batcher: DynamicBatcher[int, int] = DynamicBatcher(
            "test", recorder.square, pool, max_batch_size=8, max_wait_s=0.05, max_queue_size=64,
            max_queue_bytes=1000, payload_bytes=lambda payload: 100,
        )  # fmt: skip
        batcher.start()
        try:
            with pytest.raises(QueueFullError, match="queue is full"):
                batcher.reserve(1, nbytes=1001)  # one request over the cap
            held = batcher.reserve(4, nbytes=600)
            with pytest.raises(QueueFullError):
                batcher.reserve(1, nbytes=500)  # together over the cap
            held.hold_bytes(500)  # bytes learnt after admission (a fetch) count, never refuse
            assert batcher.queued_bytes == 1100
            with pytest.raises(QueueFullError):
                batcher.reserve(1)  # over the cap: even a request with no known bytes waits
            held.drop_bytes(1100)
            futures = batcher.submit(held, [1, 2])  # part of a reservation; payloads count their bytes
            assert batcher.queued_bytes == 200
            assert held.size == 2
            futures += batcher.submit(held, [3, 4])
            assert [(await f).value for f in futures] == [1, 4, 9, 16]
            held.release()
            assert batcher.queued_bytes == 0
            assert batcher.depth == 0
        finally:
            await batcher.stop()


async def test_batches_take_tenants_round_robin_so_a_backlog_cannot_starve_a_late_tenant() -> None:
    recorder = Recorder()
    gate = threading.Event()
    async with batcher_for(recorder.square, max_batch_size=4, max_wait_s=0.0) as batcher:
        blocker = asyncio.get_running_loop().run_in_executor(batcher._executor, gate.wait, 10)
        with batcher.reserve(12, tenant="attacker") as slots:
            backlog = batcher.submit(slots, list(range(100, 112)))
        with batcher.reserve(1, tenant="victim") as slot:
            (victim,) = batcher.submit(slot, [7])
        gate.set()
        await blocker
        await asyncio.gather(victim, *backlog)
    # first batch already taken while the model thread was blocked holds attacker items only; the victim's
    # item rides in the next batch, not behind all twelve
    flat = [p for batch in recorder.batches for p in batch]
    assert flat.index(7) <= 5
    assert [p for p in flat if p != 7] == list(range(100, 112))  # each tenant's own order is kept


async def test_one_tenant_cannot_hold_more_than_its_share_of_the_queue() -> None:
    async with batcher_for(Recorder().square, max_queue_size=64, max_tenant_items=10) as batcher:
        held = batcher.reserve(8, tenant="a")
        with pytest.raises(QueueFullError, match="each account may hold 10"):
            batcher.reserve(3, tenant="a")
        other = batcher.reserve(10, tenant="b")  # another tenant still gets in
        held.release()
        batcher.reserve(10, tenant="a").release()  # released slots count no more
        other.release()
        assert batcher.depth == 0
        assert not batcher._tenant_items


async def test_one_tenant_cannot_hold_more_than_its_share_of_the_queue_bytes() -> None:
    with ThreadPoolExecutor(1) as pool:
        batcher: DynamicBatcher[int, int] = DynamicBatcher(
            "test", Recorder().square, pool, max_batch_size=8, max_wait_s=0.05, max_queue_size=64,
            max_queue_bytes=1000, max_tenant_bytes=600, payload_bytes=lambda payload: 100,
        )  # fmt: skip
        batcher.start()
        try:
            first = batcher.reserve(2, nbytes=500, tenant="a")
            with pytest.raises(QueueFullError, match="each account may hold 0 MiB"):
                batcher.reserve(1, nbytes=200, tenant="a")
            other = batcher.reserve(1, nbytes=400, tenant="b")  # another tenant still gets in
            first.drop_bytes(500)
            futures = batcher.submit(first, [1, 2])  # queued payloads count for their tenant
            assert batcher._tenant_bytes["a"] == 200
            assert [(await f).value for f in futures] == [1, 4]
            first.release()
            other.release()
            assert batcher.queued_bytes == 0
            assert not batcher._tenant_bytes
        finally:
            await batcher.stop()


async def test_with_a_latency_target_batches_shrink_to_what_the_model_runs_in_that_time() -> None:
    sizes: list[int] = []

    def slow(payloads: list[int]) -> list[int]:
        sizes.append(len(payloads))
        time.sleep(0.01 * len(payloads))  # 10 ms per item, like a CPU running a large model
        return payloads

    with ThreadPoolExecutor(1) as pool:
        batcher: DynamicBatcher[int, int] = DynamicBatcher(
            "test", slow, pool, max_batch_size=16, max_wait_s=0.001, max_queue_size=64, max_batch_s=0.035
        )
        batcher.start()
        try:
            assert batcher.batch_limit == 16  # nothing measured yet
            with batcher.reserve(40) as slots:
                futures = batcher.submit(slots, list(range(40)))
            assert [(await f).value for f in futures] == list(range(40))
        finally:
            await batcher.stop()
    assert sizes[0] == 16
    assert max(sizes[1:]) <= 4  # 35 ms at ~10 ms an item
    assert 1 <= batcher.batch_limit <= 3


async def test_while_another_tenant_is_active_batches_shrink_to_the_contended_target() -> None:
    sizes: list[int] = []

    def slow(payloads: list[int]) -> list[int]:
        sizes.append(len(payloads))
        time.sleep(0.01 * len(payloads))  # 10 ms per item
        return payloads

    now = [0.0]
    activity = TenantActivity(2.0, clock=lambda: now[0])
    with ThreadPoolExecutor(1) as pool:
        batcher: DynamicBatcher[int, int] = DynamicBatcher(
            "test", slow, pool, max_batch_size=16, max_wait_s=0.001, max_queue_size=128, max_batch_s=0.4,
            contended_batch_s=0.015, activity=activity,
        )  # fmt: skip
        batcher.start()
        try:
            with batcher.reserve(40, tenant="busy") as slots:
                futures = batcher.submit(slots, list(range(40)))
            await asyncio.gather(*futures)
            assert max(sizes[1:]) >= 4  # alone: up to 16 items (400 ms at ~10 ms an item)
            sizes.clear()
            batcher.reserve(1, tenant="light").release()  # another account shows up
            assert batcher.batch_limit == 1  # 15 ms holds one 10 ms item (plus overhead)
            with batcher.reserve(20, tenant="busy") as slots:
                futures = batcher.submit(slots, list(range(20)))
            await asyncio.gather(*futures)
            assert sizes == [1] * 20
            now[0] += 2.5  # the other account has been quiet for longer than the window
            assert batcher.batch_limit >= 4
        finally:
            await batcher.stop()


async def test_a_background_tenant_fills_batches_only_with_what_no_foreground_tenant_wants() -> None:
    recorder = Recorder()
    gate = threading.Event()
    async with batcher_for(recorder.square, max_batch_size=4, max_wait_s=0.0) as batcher:
        blocker = asyncio.get_running_loop().run_in_executor(batcher._executor, gate.wait, 10)
        with batcher.reserve(12, tenant=background_tenant("account:1")) as slots:
            backlog = batcher.submit(slots, list(range(100, 112)))
        with batcher.reserve(3, tenant="account:2") as slots:
            online = batcher.submit(slots, [1, 2, 3])
        gate.set()
        await blocker
        await asyncio.gather(*online, *backlog)
    # the background backlog was queued first, yet the online items make the first batch, alone: a model batch
    # is all online or all background (a batch's item never rides in an online call); the batch's items run
    # after it, in their own order
    assert recorder.batches[0] == [1, 2, 3]
    assert all(min(batch) >= 100 for batch in recorder.batches[1:])
    assert [p for batch in recorder.batches for p in batch if p >= 100] == list(range(100, 112))


async def test_background_items_wait_for_idle_capacity_after_an_online_batch() -> None:
    """With background_idle_s, background items run while no online item is queued and the model has been
    free of online batches that long: here an hour, so the items queued after an online batch stay queued (the
    model stays free for the next online request) until the batcher stops."""
    recorder = Recorder()
    with ThreadPoolExecutor(1) as pool:
        batcher: DynamicBatcher[int, int] = DynamicBatcher(
            "test", recorder.square, pool, max_batch_size=8, max_wait_s=0.0, max_queue_size=64,
            background_idle_s=3600.0,
        )  # fmt: skip
        batcher.start()
        try:
            with batcher.reserve(2, tenant=background_tenant("account:1")) as slots:
                first = batcher.submit(slots, [100, 101])
            await asyncio.gather(*first)  # no online batch has run yet: the model is idle
            with batcher.reserve(1, tenant="account:2") as slots:
                online = batcher.submit(slots, [1])
            await asyncio.gather(*online)
            with batcher.reserve(2, tenant=background_tenant("account:1")) as slots:
                later = batcher.submit(slots, [102, 103])
            for _ in range(20):  # let the batcher loop run: it must not take the background items
                await asyncio.sleep(0.01)
            assert not any(f.done() for f in later)
            assert recorder.batches == [[100, 101], [1]]
        finally:
            await batcher.stop()
    assert recorder.batches[-1] == [102, 103]  # stopping drains the queue


class SteppedModel:
    """A model whose background calls (payloads >= 100) take two steps with a yield point between them; the
    first step waits until the test lets it reach the yield point."""

    def __init__(self, gate: ForegroundGate) -> None:
        self.gate = gate
        self.log: list[tuple[str, list[int]]] = []
        self.in_step_1 = threading.Event()
        self.to_yield_point = threading.Event()
        self.threads: set[str] = set()

    def run(self, payloads: list[int]) -> list[int]:
        self.threads.add(threading.current_thread().name)
        if min(payloads) >= 100:
            self.log.append(("background step 1", list(payloads)))
            self.in_step_1.set()
            assert self.to_yield_point.wait(10)
            self.gate.yield_point()
            self.log.append(("background step 2", list(payloads)))
        else:
            self.log.append(("online", list(payloads)))
        return [p * p for p in payloads]


@asynccontextmanager
async def preemptible_batcher(model: SteppedModel) -> AsyncIterator[DynamicBatcher[int, int]]:
    with (
        ThreadPoolExecutor(1, thread_name_prefix="online") as online,
        ThreadPoolExecutor(1, thread_name_prefix="background") as background,
    ):
        batcher: DynamicBatcher[int, int] = DynamicBatcher(
            "test", model.run, online, max_batch_size=8, max_wait_s=0.0, max_queue_size=64,
            background_idle_s=0.0, background=BackgroundLane(model.gate, background),
        )  # fmt: skip
        batcher.start()
        try:
            yield batcher
        finally:
            await batcher.stop()


async def test_a_background_batch_pauses_at_a_yield_point_while_an_online_item_is_decoding_and_runs() -> None:
    """An online item reserved while a background batch is inside the model: the background call stops at its
    next yield point, the online item runs (on the online thread) while it waits, even during its decoding
    (reserved, not yet submitted), and the background call then finishes with its own results."""
    model = SteppedModel(ForegroundGate())
    async with preemptible_batcher(model) as batcher:
        with batcher.reserve(2, tenant=background_tenant("account:1")) as slots:
            backlog = batcher.submit(slots, [100, 101])
        assert await asyncio.to_thread(model.in_step_1.wait, 10)
        with batcher.reserve(1, tenant="account:2") as slot:  # the online item is "decoding" from here
            model.to_yield_point.set()
            await until(lambda: model.gate.pauses > 0, "the background call waits at its yield point")
            assert model.log == [("background step 1", [100, 101])]  # paused at the yield point
            assert model.gate.pauses == 1
            (online,) = batcher.submit(slot, [3])
        assert (await online).value == 9
        assert [(await f).value for f in backlog] == [10_000, 10_201]
    assert model.log == [
        ("background step 1", [100, 101]),
        ("online", [3]),
        ("background step 2", [100, 101]),
    ]
    assert model.threads == {"online_0", "background_0"}
    assert not model.gate.busy


async def test_background_batches_run_one_at_a_time_and_whole_on_an_idle_server() -> None:
    model = SteppedModel(ForegroundGate())
    model.to_yield_point.set()
    async with preemptible_batcher(model) as batcher:
        with batcher.reserve(20, tenant=background_tenant("account:1")) as slots:
            backlog = batcher.submit(slots, list(range(100, 120)))
        assert [(await f).value for f in backlog] == [p * p for p in range(100, 120)]
    steps = [entry for entry in model.log if entry[0].startswith("background")]
    # each batch's two steps are adjacent: no two background batches overlapped
    assert all(steps[i][1] == steps[i + 1][1] for i in range(0, len(steps), 2))
    assert [p for name, batch in steps if name.endswith("1") for p in batch] == list(range(100, 120))
    assert model.gate.pauses == 0


async def test_an_online_request_that_gives_up_before_submitting_lets_the_paused_batch_go_on() -> None:
    model = SteppedModel(ForegroundGate())
    async with preemptible_batcher(model) as batcher:
        with batcher.reserve(1, tenant=background_tenant("account:1")) as slots:
            (item,) = batcher.submit(slots, [100])
        assert await asyncio.to_thread(model.in_step_1.wait, 10)
        slot = batcher.reserve(1, tenant="account:2")
        model.to_yield_point.set()
        await asyncio.sleep(0.05)
        slot.release()  # the online request gave up before submitting: the gate opens
    assert (await item).value == 10_000
    assert not model.gate.busy


async def test_stopping_while_a_paused_background_batch_waits_for_online_work_still_serves_it() -> None:
    """stop() while a background batch is paused for an online request that is still decoding, with more
    background items queued: the online item is served when it comes, then everything drains (the batcher
    must not wait for the paused batch before serving the item that it is paused for)."""
    model = SteppedModel(ForegroundGate())
    async with preemptible_batcher(model) as batcher:
        with batcher.reserve(1, tenant=background_tenant("account:1")) as slots:
            (first,) = batcher.submit(slots, [100])
        assert await asyncio.to_thread(model.in_step_1.wait, 10)
        with batcher.reserve(1, tenant="account:2") as slot:
            model.to_yield_point.set()
            with batcher.reserve(1, tenant=background_tenant("account:1")) as slots:
                (second,) = batcher.submit(slots, [101])
            stopping = asyncio.create_task(batcher.stop())
            await asyncio.sleep(0.05)
            (online,) = batcher.submit(slot, [3])
        assert (await asyncio.wait_for(online, 10)).value == 9
        await asyncio.wait_for(stopping, 10)
        assert [(await first).value, (await second).value] == [10_000, 10_201]
