"""Round-robin across tenants: the queue order and the executor built on it."""

from __future__ import annotations

import asyncio
import threading

import pytest

from clipserve.runtime.fair_queue import FairExecutor, FairQueue, background_tenant, is_background


def test_pop_serves_tenants_in_turn_each_in_fifo_order() -> None:
    queue: FairQueue[str] = FairQueue()
    for i in range(4):
        queue.push("big", f"big{i}")
    queue.push("small", "small0")
    queue.push("other", "other0")
    queue.push("small", "small1")
    order = [queue.pop() for _ in range(len(queue))]
    assert order == ["big0", "small0", "other0", "big1", "small1", "big2", "big3"]
    assert not queue


def test_a_tenant_arriving_behind_a_backlog_is_served_next() -> None:
    queue: FairQueue[int] = FairQueue()
    for i in range(1000):
        queue.push("attacker", i)
    assert queue.pop() == 0
    queue.push("victim", -1)
    # a newly active tenant goes before the tenants already taking turns (FQ-CoDel's new flows): not one more
    # attacker item first
    assert [queue.pop(), queue.pop()] == [-1, 1]
    assert queue.tenant_size("attacker") == 998
    assert queue.tenant_size("victim") == 0


def test_a_new_tenant_is_first_once_then_takes_its_turn_and_must_drain_to_be_new_again() -> None:
    queue: FairQueue[str] = FairQueue()
    for i in range(6):
        queue.push("a", f"a{i}")
    assert queue.pop() == "a0"
    queue.push("b", "b0")
    queue.push("b", "b1")
    queue.push("c", "c0")
    # newcomers first, in arrival order, one item each; then the rotation, b behind a
    assert [queue.pop() for _ in range(5)] == ["b0", "c0", "a1", "b1", "a2"]
    queue.push("c", "c1")  # c had drained: new again
    queue.push("a", "a6")  # a still queued: keeps its turn
    assert [queue.pop() for _ in range(len(queue))] == ["c1", "a3", "a4", "a5", "a6"]
    assert queue.tenants == 0


def test_heads_are_each_tenants_oldest_item() -> None:
    queue: FairQueue[int] = FairQueue()
    queue.push("a", 1)
    queue.push("a", 2)
    queue.push("b", 3)
    assert sorted(queue.heads()) == [1, 3]


def test_pop_from_empty_raises() -> None:
    with pytest.raises(IndexError):
        FairQueue[int]().pop()


def test_executor_runs_a_late_tenant_before_an_earlier_backlog() -> None:
    pool = FairExecutor(1, thread_name_prefix="test")
    gate = threading.Event()
    order: list[str] = []
    first = pool.submit_for("attacker", gate.wait)  # holds the only worker
    backlog = [pool.submit_for("attacker", order.append, f"a{i}") for i in range(50)]
    victim = pool.submit_for("victim", order.append, "victim")
    gate.set()
    for future in [first, *backlog, victim]:
        future.result(timeout=10)
    assert order.index("victim") == 0  # a newcomer goes first: not after one attacker item, let alone 50
    pool.shutdown()


def test_executor_hands_exceptions_to_the_caller_and_keeps_working() -> None:
    pool = FairExecutor(2)

    def fail() -> None:
        raise ValueError("bad item")

    with pytest.raises(ValueError, match="bad item"):
        pool.submit_for("t", fail).result(timeout=10)
    assert pool.submit_for("t", lambda: 42).result(timeout=10) == 42
    pool.shutdown()


def test_executor_works_with_run_in_executor_and_drains_on_shutdown() -> None:
    pool = FairExecutor(1)

    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        return list(
            await asyncio.gather(*(loop.run_in_executor(pool.for_tenant(i % 3), abs, -i) for i in range(9)))
        )

    assert asyncio.run(main()) == list(range(9))
    pool.shutdown(wait=True)
    with pytest.raises(RuntimeError):
        pool.submit_for("t", abs, 1)


def test_a_background_tenant_is_served_only_when_no_foreground_tenant_has_items() -> None:
    queue: FairQueue[str] = FairQueue()
    batch = background_tenant("account:1")
    for i in range(3):
        queue.push(batch, f"b{i}")
    queue.push("account:2", "f0")
    queue.push("account:2", "f1")
    assert queue.tenant_size(batch) == 3
    assert queue.tenants == 2
    assert [queue.pop(), queue.pop(), queue.pop()] == ["f0", "f1", "b0"]
    queue.push("account:3", "g0")  # arrives while the batch has a backlog: goes first, every time
    assert [queue.pop(), queue.pop(), queue.pop()] == ["g0", "b1", "b2"]
    assert not queue
    assert sorted(queue.heads()) == []


def test_background_tenants_take_turns_among_themselves() -> None:
    queue: FairQueue[str] = FairQueue()
    for i in range(2):
        queue.push(background_tenant("a"), f"a{i}")
        queue.push(background_tenant("b"), f"b{i}")
    assert sorted(queue.heads()) == ["a0", "b0"]
    assert [queue.pop() for _ in range(4)] == ["a0", "b0", "a1", "b1"]
    assert is_background(background_tenant("local"))
    assert not is_background("local")


def test_executor_runs_foreground_work_before_a_background_backlog() -> None:
    pool = FairExecutor(1, thread_name_prefix="test")
    gate = threading.Event()
    order: list[str] = []
    first = pool.submit_for("account:1", gate.wait)  # holds the only worker
    backlog = [pool.submit_for(background_tenant("account:1"), order.append, f"b{i}") for i in range(5)]
    online = [pool.submit_for("account:2", order.append, f"f{i}") for i in range(3)]
    gate.set()
    for future in [first, *backlog, *online]:
        future.result(timeout=10)
    assert order == ["f0", "f1", "f2", "b0", "b1", "b2", "b3", "b4"]
    pool.shutdown()
