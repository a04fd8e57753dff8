"""Price, admit and charge a request exactly once: the bridge between the endpoints and the ledger."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TypeVar

from clipserve.errors import RateLimitExceededError
from clipserve.service.auth import Caller
from clipserve.service.burst_limits import BurstLimiter
from clipserve.service.pricing import PriceTable, Usage
from clipserve.service.rate_limits import LimitCheck, rate_limit_headers
from clipserve.service.refused_keys import RefusedKeys
from clipserve.store.ledger import AdmissionRequest, Admitted, Charge, LedgerStore, StoredResponse

T = TypeVar("T")
_UNLIMITED = LimitCheck(limit=None, allowed=True, remaining=0, reset_s=0.0, retry_after_s=0.0)


@dataclass(frozen=True)
class RateLimitDefaults:
    requests_per_minute: int | None
    images_per_minute: int | None
    refusal_delay_s: float = 0.0  # a key known to be over its rate gets its 429 after this (a tarpit)
    max_delayed_refusals: int = 0
    burst_requests: int = 0  # requests a key may send at once before its per-minute rate paces it (0: any)
    burst_images: int = 0  # the same for images


@dataclass
class MeteredRequest:
    """One admitted request: settle it when it succeeded, release it when it failed."""

    meter: Meter
    caller: Caller
    charge_id: str
    request_id: str
    endpoint: str
    idempotency_key: str | None
    admitted: Admitted
    done: bool = field(default=False)

    @property
    def replay(self) -> StoredResponse | None:
        return self.admitted.replay

    @property
    def headers(self) -> dict[str, str]:
        return rate_limit_headers(self.admitted.requests, self.admitted.images)

    async def settle(self, usage: Usage, response: StoredResponse) -> int:
        """Charge the exact cost (and store the answer for the Idempotency-Key); returns the cost."""
        assert self.caller.key is not None
        cost = self.meter.prices.cost_micros(usage)
        charge = Charge(
            charge_id=self.charge_id,
            request_id=self.request_id,
            account_id=self.caller.key.account_id,
            key_id=self.caller.key.id,
            endpoint=self.endpoint,
            images=usage.images,
            tokens=self.meter.prices.billable_tokens(usage),
            cost_micros=cost,
            idempotency_key=self.idempotency_key,
            response=response if self.idempotency_key is not None else None,
        )

        def charge_once() -> None:
            self.meter.ledger.settle(charge)
            self.done = True  # committed: from now on nothing may release this request's hold or key

        # Once the charge is committed the answer exists and is paid for: a cancel that arrived meanwhile (the
        # end of the shutdown grace period; uvicorn cancels a task once and still writes what it then sends)
        # must not turn it into a 503 "retry", which a client without an Idempotency-Key would pay again. So
        # the cancel is absorbed and the request goes on to deliver its answer; if the connection is gone,
        # uvicorn drops what is sent. A settle that failed still ends with the cancel.
        await self.meter.run_to_completion(charge_once, outlast_cancel=True)
        return cost

    async def release(self) -> None:
        """Free the hold and the pending Idempotency-Key of a request that failed (no-op once settled)."""
        if self.done:
            return
        assert self.caller.key is not None
        key_id = self.caller.key.id
        self.done = True
        await self.meter.run_to_completion(
            lambda: self.meter.ledger.release(self.charge_id, key_id, self.idempotency_key)
        )


class Meter:
    def __init__(
        self, ledger: LedgerStore, prices: PriceTable, limits: RateLimitDefaults, executor: Executor
    ) -> None:
        self.ledger = ledger
        self.prices = prices
        self.limits = limits
        self._executor = executor
        self._refused = RefusedKeys(limits.refusal_delay_s, limits.max_delayed_refusals)
        self._bursts = BurstLimiter()

    async def admit(
        self,
        caller: Caller,
        request_id: str,
        endpoint: str,
        bound: Usage,
        idempotency_key: str | None = None,
        fingerprint: str | None = None,
    ) -> MeteredRequest:
        """Reserve the most the request can cost and count it against the key's limits (raises if refused)."""
        key = caller.key
        assert key is not None, "local callers are not metered"
        charge_id = f"chg_{uuid.uuid4().hex}"
        admission = AdmissionRequest(
            charge_id=charge_id,
            account_id=key.account_id,
            key_id=key.id,
            estimate_micros=self.prices.cost_micros(bound),
            images=bound.images,
            requests_per_minute=effective_limit(key.requests_per_minute, self.limits.requests_per_minute),
            images_per_minute=effective_limit(key.images_per_minute, self.limits.images_per_minute),
            idempotency_key=idempotency_key,
            fingerprint=fingerprint,
        )
        await self._refused.refuse(key.id)
        self._pace(key.id, admission.requests_per_minute, admission.images_per_minute, bound.images)
        try:
            admitted = await self.run_to_completion(lambda: self.ledger.admit(admission))
        except RateLimitExceededError as exc:
            self._refused.remember(key.id, exc)
            raise
        except asyncio.CancelledError:
            # cancelled while the admission ran: it may have committed a hold and a pending Idempotency-Key
            # that nothing would ever release (the key would answer 409 until this process stops)
            await self.run_to_completion(lambda: self.ledger.release(charge_id, key.id, idempotency_key))
            raise
        return MeteredRequest(self, caller, charge_id, request_id, endpoint, idempotency_key, admitted)

    async def refuse_if_limited(self, caller: Caller) -> None:
        """Raise the 429 of a key that is over its request rate (known from an earlier refusal), at no cost
        but the tarpit's wait: routes call it before reading a body, so a refused key's flood is not read."""
        if caller.key is not None:
            await self._refused.refuse(caller.key.id)

    async def admit_free(self, caller: Caller) -> dict[str, str]:
        """Count a request that costs nothing against the key's request rate (raises if over it); returns the
        rate-limit headers for its answer."""
        key = caller.key
        assert key is not None, "local callers are not limited"
        limit = effective_limit(key.requests_per_minute, self.limits.requests_per_minute)
        if limit is None:
            return {}
        await self._refused.refuse(key.id)
        self._pace(key.id, limit, None, 0)
        try:
            requests = await self.run(lambda: self.ledger.admit_free(key.account_id, key.id, limit))
        except RateLimitExceededError as exc:
            self._refused.remember(key.id, exc)
            raise
        return rate_limit_headers(requests, _UNLIMITED)

    def _pace(
        self, key_id: int, requests_per_minute: int | None, images_per_minute: int | None, images: int
    ) -> None:
        """Refuse (429, remembered like any request-rate refusal) a key spending its per-minute allowance faster
        than its burst allows: checked in memory before the database is asked."""
        refusal = self._bursts.take(key_id, "requests", requests_per_minute, self.limits.burst_requests, 1)
        name = "requests"
        if refusal is None:
            refusal = self._bursts.take(key_id, "images", images_per_minute, self.limits.burst_images, images)
            name = "images"
        if refusal is None:
            return
        left = LimitCheck(
            limit=refusal.limit,
            allowed=False,
            remaining=int(refusal.tokens),
            reset_s=(refusal.capacity - refusal.tokens) * 60.0 / refusal.limit,
            retry_after_s=refusal.retry_after_s,
        )
        error = RateLimitExceededError(
            f"Rate limit reached for {name}: this key may send {refusal.capacity:.0f} {name} at once and then "
            f"{refusal.limit} per minute. Retry in {refusal.retry_after_s:.1f}s.",
            limit_name=name,
            retry_after_s=refusal.retry_after_s,
            limit_headers=rate_limit_headers(left, _UNLIMITED)
            if name == "requests"
            else rate_limit_headers(_UNLIMITED, left),
        )
        self._refused.remember(key_id, error)
        raise error

    async def run(self, call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def run_to_completion(self, call: Callable[[], T], *, outlast_cancel: bool = False) -> T:
        """run_to_completion on the store's threads.

        A thread cannot be stopped: a settle that is still running when its request is cancelled would
        otherwise race the release that follows, which could drop the pending Idempotency-Key before the
        settle stores the answer in it, so a retry would be charged again."""
        return await run_to_completion(self._executor, call, outlast_cancel=outlast_cancel)


async def run_to_completion(executor: Executor, call: Callable[[], T], *, outlast_cancel: bool = False) -> T:
    """Run `call` on `executor` and wait until it has finished, even if this task is cancelled meanwhile (a
    client disconnect, the end of the shutdown grace period, a stopping batch runner); the cancel is re-raised
    after, unless `outlast_cancel` and `call` succeeded: then the cancel is absorbed (Task.uncancel, as asyncio
    asks of code that suppresses one) and its result returned. For a transaction that must be known to have
    committed or not."""
    future = asyncio.get_running_loop().run_in_executor(executor, call)
    cancels = 0
    while not future.done():
        try:
            await asyncio.wait((future,))
        except asyncio.CancelledError:
            cancels += 1
    if cancels:
        succeeded = not future.cancelled() and future.exception() is None
        if not (outlast_cancel and succeeded):
            # an error, if any, is retrieved above and dropped: the cancel is what this task ends with
            raise asyncio.CancelledError
        task = asyncio.current_task()
        assert task is not None
        for _ in range(cancels):
            task.uncancel()
    return future.result()


def effective_limit(per_key: int | None, default: int | None) -> int | None:
    """A key's own limit wins; 0 (either place) means unlimited."""
    value = per_key if per_key is not None else default
    return value or None
