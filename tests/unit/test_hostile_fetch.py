"""FairSlots (issue 10, item 4): the image-URL pool and the decode-ahead slots are shared per account, with a
cap per account, a cap in all, round-robin hand-out when contended, and no state left for idle accounts."""

from __future__ import annotations

import asyncio

import pytest

from clipserve.runtime.fair_slots import FairSlots

pytestmark = pytest.mark.anyio


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_one_tenant_never_holds_more_than_its_share() -> None:
    slots = FairSlots(total=8, per_tenant=3)
    most = 0

    async def work() -> None:
        nonlocal most
        async with slots.slot("a"):
            most = max(most, slots.held_by("a"))
            await asyncio.sleep(0.001)

    await asyncio.gather(*(work() for _ in range(50)))
    assert most == 3
    assert slots.in_use == 0
    assert slots.tenants == 0


async def test_a_newcomer_gets_the_next_free_slot_before_a_tenant_with_a_backlog() -> None:
    slots = FairSlots(total=2, per_tenant=2)
    held = [await slots.acquire("attacker"), await slots.acquire("attacker")]
    order: list[str] = []

    async def wait_turn(tenant: str) -> None:
        release = await slots.acquire(tenant)
        order.append(tenant)
        release()

    backlog = [asyncio.ensure_future(wait_turn("attacker")) for _ in range(100)]
    await _settle()
    victim = asyncio.ensure_future(wait_turn("victim"))
    await _settle()
    held[0]()  # one slot frees: the victim holds none and the attacker one, so the victim is next
    await _settle()
    assert order[0] == "victim"
    held[1]()
    await asyncio.gather(victim, *backlog)
    assert order.count("attacker") == 100
    assert slots.in_use == 0
    assert slots.tenants == 0


async def test_the_pool_is_shared_round_robin_between_waiting_tenants() -> None:
    slots = FairSlots(total=1, per_tenant=1)
    release = await slots.acquire("x")
    order: list[str] = []

    async def wait_turn(tenant: str) -> None:
        got = await slots.acquire(tenant)
        order.append(tenant)
        await asyncio.sleep(0)
        got()

    waiters = [asyncio.ensure_future(wait_turn("a")) for _ in range(3)]
    await _settle()
    waiters += [asyncio.ensure_future(wait_turn("b")) for _ in range(3)]
    await _settle()
    release()
    await asyncio.gather(*waiters)
    assert order == ["a", "b", "a", "b", "a", "b"]


async def test_cancelled_waiters_leave_no_state_and_give_back_granted_slots() -> None:
    slots = FairSlots(total=1, per_tenant=1)
    release = await slots.acquire("a")
    waiters = [asyncio.ensure_future(slots.acquire(f"t{i}")) for i in range(1000)]
    await _settle()
    assert slots.tenants == 1001
    for waiter in waiters:
        waiter.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    assert slots.tenants == 1
    # A waiter granted its slot in the same tick it is cancelled hands the slot back.
    granted = asyncio.ensure_future(slots.acquire("b"))
    await _settle()
    release()  # grants "b"...
    granted.cancel()  # ...which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await granted
    assert slots.in_use == 0
    assert slots.tenants == 0
    async with slots.slot("c"):
        assert slots.held_by("c") == 1


async def test_release_is_idempotent() -> None:
    slots = FairSlots(total=2, per_tenant=1)
    release = await slots.acquire("a")
    release()
    release()
    assert slots.in_use == 0
    other = await slots.acquire("b")
    other()
    assert slots.in_use == 0
    assert slots.tenants == 0
