"""A pool of slots shared fairly between tenants: a cap per tenant, a cap in all, and when contended each freed
slot goes to the waiting tenant holding the fewest (ties round-robin).

Knows nothing of HTTP or accounts: a tenant is any string. Used for the image-URL connection pool and for the
decoded images waiting for the model, so one tenant with a thousand items waits behind its own items, not
everyone else behind it. State is kept only for tenants holding or waiting for a slot, so it cannot grow
beyond the work in flight.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress


class FairSlots:
    def __init__(self, total: int, per_tenant: int) -> None:
        if total < 1 or per_tenant < 1:
            raise ValueError("slot counts must be at least 1")
        self.total = total
        self.per_tenant = min(per_tenant, total)
        self._held: dict[str, int] = {}
        self._in_use = 0
        # Tenants with waiters, in round-robin order: the one served last goes to the back.
        self._waiting: OrderedDict[str, deque[asyncio.Future[None]]] = OrderedDict()

    @property
    def in_use(self) -> int:
        return self._in_use

    @property
    def tenants(self) -> int:
        """Tenants holding or waiting for a slot (the size of the state kept)."""
        return len(self._held.keys() | self._waiting.keys())

    def held_by(self, tenant: str) -> int:
        return self._held.get(tenant, 0)

    async def acquire(self, tenant: str) -> Callable[[], None]:
        """Wait for a slot; returns the function that gives it back (idempotent)."""
        if tenant not in self._waiting and self._fits(tenant):
            self._grant(tenant)
        else:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiting.setdefault(tenant, deque()).append(future)
            try:
                await future
            except asyncio.CancelledError:
                if future.done() and not future.cancelled():
                    self._release(tenant)  # granted just as we were cancelled: give it back
                else:
                    self._forget(tenant, future)
                raise
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._release(tenant)

        return release

    @asynccontextmanager
    async def slot(self, tenant: str) -> AsyncIterator[None]:
        release = await self.acquire(tenant)
        try:
            yield
        finally:
            release()

    def _fits(self, tenant: str) -> bool:
        return self._in_use < self.total and self._held.get(tenant, 0) < self.per_tenant

    def _grant(self, tenant: str) -> None:
        self._held[tenant] = self._held.get(tenant, 0) + 1
        self._in_use += 1

    def _release(self, tenant: str) -> None:
        left = self._held[tenant] - 1
        if left:
            self._held[tenant] = left
        else:
            del self._held[tenant]
        self._in_use -= 1
        self._dispatch()

    def _forget(self, tenant: str, future: asyncio.Future[None]) -> None:
        waiters = self._waiting.get(tenant)
        if waiters is not None:
            with suppress(ValueError):
                waiters.remove(future)
            if not waiters:
                del self._waiting[tenant]
        self._dispatch()

    def _dispatch(self) -> None:
        """Hand free slots to waiters: each to the waiting tenant holding the fewest (max-min fair), ties in
        round-robin order (the tenant just served goes to the back)."""
        while self._in_use < self.total:
            best: str | None = None
            for tenant, waiters in list(self._waiting.items()):
                while waiters and waiters[0].done():  # cancelled while waiting
                    waiters.popleft()
                if not waiters:
                    del self._waiting[tenant]
                    continue
                held = self._held.get(tenant, 0)
                if held < self.per_tenant and (best is None or held < self._held.get(best, 0)):
                    best = tenant
            if best is None:
                return
            waiters = self._waiting[best]
            self._grant(best)
            waiters.popleft().set_result(None)
            if waiters:
                self._waiting.move_to_end(best)
            else:
                del self._waiting[best]
