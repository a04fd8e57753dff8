"""Keys refused for their request rate, remembered until their Retry-After: a flood of requests from a key that
is over its limit is answered 429 from memory, without a database round trip each (which would make the flood
slow every other account's admissions, which share the database)."""

from __future__ import annotations

import asyncio
import time

from clipserve.errors import RateLimitExceededError

# Entries are dropped once their time is up; beyond this many at once the oldest are dropped first (the
# database still refuses them, only at its usual cost).
MAX_REMEMBERED_KEYS = 100_000


class RefusedKeys:
    """Remembered refusals, answered after `delay_s` (at most `max_delayed` at once; the rest at once).

    The delay is a tarpit: a client that floods a fixed number of connections with requests it knows will be
    refused gets its answers at the pace of the delay, not of the server's CPU, and waiting costs the server a
    sleeping coroutine, not work. A well-behaved client waits for Retry-After (at least a second) anyway.
    """

    def __init__(self, delay_s: float = 0.0, max_delayed: int = 0) -> None:
        self._until: dict[int, tuple[float, RateLimitExceededError]] = {}
        self._delay_s = delay_s
        self._max_delayed = max_delayed
        self._delayed = 0

    async def refuse(self, key_id: int) -> None:
        """Raise the key's remembered 429, after the tarpit delay, if it is still refused."""
        try:
            self.check(key_id)
        except RateLimitExceededError:
            if self._delay_s > 0 and self._delayed < self._max_delayed:
                self._delayed += 1
                try:
                    await asyncio.sleep(self._delay_s)
                finally:
                    self._delayed -= 1
            raise

    def check(self, key_id: int) -> None:
        """Raise the key's remembered 429 (with the time left as Retry-After) if it is still refused."""
        entry = self._until.get(key_id)
        if entry is None:
            return
        until, error = entry
        left = until - time.monotonic()
        if left <= 0:
            del self._until[key_id]
            return
        raise RateLimitExceededError(
            error.message, limit_name=error.error_type, retry_after_s=left, limit_headers=error.limit_headers
        )

    def remember(self, key_id: int, error: RateLimitExceededError) -> None:
        """Remember a refusal of the request rate (every request needs one, so all are refused until then)."""
        if error.error_type != "requests" or error.retry_after_s == float("inf"):
            return
        if len(self._until) >= MAX_REMEMBERED_KEYS:
            self._forget_expired()
        self._until[key_id] = (time.monotonic() + error.retry_after_s, error)

    def _forget_expired(self) -> None:
        now = time.monotonic()
        for key_id in [k for k, (until, _) in self._until.items() if until <= now]:
            del self._until[key_id]
        while len(self._until) >= MAX_REMEMBERED_KEYS:
            del self._until[next(iter(self._until))]
