"""Round-robin across tenants: one tenant's backlog never stands in front of another tenant's next item.

A tenant is any hashable key (the service uses the account id). `FairQueue` is the data structure (used by the
batcher to build model batches); `FairExecutor` runs callables on worker threads in that order (used for image
decoding), so a request of 2,048 images from one account does not delay another account's single image by
2,048 decodes: it waits for at most one item per active tenant.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import Executor, Future
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


BACKGROUND_PREFIX = "batch:"


def background_tenant(tenant: str) -> str:
    """`tenant`'s background lane (its batch work): served only when no foreground tenant has items queued."""
    return f"{BACKGROUND_PREFIX}{tenant}"


def is_background(tenant: Hashable) -> bool:
    return isinstance(tenant, str) and tenant.startswith(BACKGROUND_PREFIX)


class _Lane(Generic[T]):
    """FIFO per tenant; `pop` serves tenants in turn (round-robin), each from the front of its own queue.

    A tenant that arrives with nothing queued is served before the tenants already taking turns (the "new flows
    first" rule of FQ-CoDel, RFC 8290): its first item waits for no one's backlog, only for the other newcomers
    ahead of it, and after that item it takes its turn at the end of the rotation like everyone else. A tenant
    gains nothing by it that it would not get from its turn: it must drain to zero to be new again.
    """

    def __init__(self) -> None:
        self.queues: dict[Hashable, deque[T]] = {}
        self._new: OrderedDict[Hashable, None] = OrderedDict()  # arrived with nothing queued, not yet served
        self._rotation: OrderedDict[Hashable, None] = OrderedDict()  # served at least once, still queued
        self.size = 0

    def push(self, tenant: Hashable, item: T) -> None:
        queue = self.queues.get(tenant)
        if queue is None:
            queue = self.queues[tenant] = deque()
            self._new[tenant] = None
        queue.append(item)
        self.size += 1

    def pop(self) -> T:
        turns = self._new if self._new else self._rotation
        tenant, _ = turns.popitem(last=False)
        queue = self.queues[tenant]
        item = queue.popleft()
        self.size -= 1
        if queue:
            self._rotation[tenant] = None  # its next item waits for every other tenant's
        else:
            del self.queues[tenant]
        return item


class FairQueue(Generic[T]):
    """Round-robin across tenants (see _Lane), in two lanes: background tenants (`background_tenant(...)`, a
    batch's lines) are served only while no foreground tenant has an item queued, so bulk work runs on idle
    capacity and an online request never waits behind it for more than the model batch already running."""

    def __init__(self) -> None:
        self._foreground: _Lane[T] = _Lane()
        self._background: _Lane[T] = _Lane()

    def __len__(self) -> int:
        return self._foreground.size + self._background.size

    def __bool__(self) -> bool:
        return len(self) > 0

    @property
    def tenants(self) -> int:
        """Tenants with items queued."""
        return len(self._foreground.queues) + len(self._background.queues)

    def _lane(self, tenant: Hashable) -> _Lane[T]:
        return self._background if is_background(tenant) else self._foreground

    def push(self, tenant: Hashable, item: T) -> None:
        self._lane(tenant).push(tenant, item)

    @property
    def foreground_size(self) -> int:
        """Items of foreground tenants (online requests) queued."""
        return self._foreground.size

    def pop(self) -> T:
        """The next item in round-robin order, foreground first; IndexError when empty."""
        if self._foreground.size:
            return self._foreground.pop()
        if self._background.size:
            return self._background.pop()
        raise IndexError("pop from an empty FairQueue")

    def heads(self) -> Iterator[T]:
        """The front item of every tenant (the oldest items of the queue are among them)."""
        for lane in (self._foreground, self._background):
            for queue in lane.queues.values():
                yield queue[0]

    def tenant_size(self, tenant: Hashable) -> int:
        queue = self._lane(tenant).queues.get(tenant)
        return len(queue) if queue is not None else 0


class FairExecutor:
    """A thread pool whose work queue is a FairQueue: `for_tenant(key)` gives an Executor for one tenant."""

    def __init__(self, workers: int, *, thread_name_prefix: str = "fair") -> None:
        self._work: FairQueue[tuple[Future[Any], Callable[[], Any]]] = FairQueue()
        self._ready = threading.Condition()
        self._shutdown = False
        self._threads = [
            threading.Thread(target=self._worker, name=f"{thread_name_prefix}_{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def for_tenant(self, tenant: Hashable) -> Executor:
        return _TenantExecutor(self, tenant)

    def submit_for(self, tenant: Hashable, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> Future[R]:
        future: Future[R] = Future()
        with self._ready:
            if self._shutdown:
                raise RuntimeError("cannot schedule new work after shutdown")
            self._work.push(tenant, (future, lambda: fn(*args, **kwargs)))
            self._ready.notify()
        return future

    @property
    def backlog(self) -> int:
        with self._ready:
            return len(self._work)

    def shutdown(self, wait: bool = True) -> None:
        """Finish what was submitted, then stop the workers."""
        with self._ready:
            self._shutdown = True
            self._ready.notify_all()
        if wait:
            for thread in self._threads:
                thread.join()

    def _worker(self) -> None:
        while True:
            with self._ready:
                while not self._work and not self._shutdown:
                    self._ready.wait()
                if not self._work:
                    return  # shut down and drained
                future, call = self._work.pop()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = call()
            except BaseException as exc:  # noqa: BLE001 - handed to whoever awaits the future
                future.set_exception(exc)
            else:
                future.set_result(result)


class _TenantExecutor(Executor):
    """One tenant's view of a FairExecutor, for `loop.run_in_executor`."""

    def __init__(self, pool: FairExecutor, tenant: Hashable) -> None:
        self._pool = pool
        self._tenant = tenant

    def submit(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> Future[R]:
        return self._pool.submit_for(self._tenant, fn, *args, **kwargs)
