"""How fast a key may spend its per-minute allowance: a token bucket per key and limit, kept in memory.

The per-minute limits (rate_limits.py, counted in the database and shared by replicas) bound what a key does in
a minute, but not when: 600 requests a minute may all arrive in the first five seconds, and a burst of cheap
requests (collection creates and deletes, each a few milliseconds of Python under the GIL plus durable writes)
then takes most of a core from every other account for those seconds. A bucket of `burst` units refilled at the
per-minute rate lets a key send `burst` at once and then only at its rate. The bucket is per process, so each
replica allows its own burst; the minute windows in the database stay the shared bound.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

# Beyond this many buckets at once the least recently used are dropped first (a
# dropped bucket starts full: at worst one more burst for that key).
MAX_BUCKETS = 100_000


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass(frozen=True)
class BurstRefusal:
    limit: int  # the per-minute limit the bucket refills at
    capacity: float
    retry_after_s: float  # until the refused cost would fit
    tokens: float  # left now


class BurstLimiter:
    """Token buckets keyed by (key id, limit name): `take` spends `cost` or returns why it cannot.

    A bucket holds `burst` units and refills at `per_minute / 60` a second; a per-minute limit at or below the
    burst has no bucket (its window alone paces it). A cost larger than the bucket (a request with more images
    than the burst) is allowed when the bucket is full and empties it: it waits for a full bucket, never forever.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: OrderedDict[tuple[int, str], _Bucket] = OrderedDict()

    def take(
        self, key_id: int, name: str, per_minute: int | None, burst: int, cost: int
    ) -> BurstRefusal | None:
        """Spend `cost` units of the key's `name` bucket; a BurstRefusal (nothing spent) when it has too few.
        No limit (`per_minute` None or 0, `burst` 0) always passes. Units are spent by every attempt the server
        works on, including ones the database then refuses (as a failed image fetch still uses the window)."""
        if not per_minute or burst <= 0 or cost <= 0 or per_minute <= burst:
            # A limit at or below the burst is already as smooth as its window allows, and pacing it here would
            # answer a Retry-After shorter than the window's (the next try refused again).
            return None
        capacity = float(burst)
        rate = per_minute / 60.0
        now = self._clock()
        slot = (key_id, name)
        bucket = self._buckets.get(slot)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._evict()
            bucket = _Bucket(capacity, now)
            self._buckets[slot] = bucket
        else:
            self._buckets.move_to_end(slot)
            bucket.tokens = min(capacity, bucket.tokens + (now - bucket.updated) * rate)
            bucket.updated = now
        needed = min(float(cost), capacity)
        if bucket.tokens + 1e-9 < needed:
            return BurstRefusal(
                limit=per_minute,
                capacity=capacity,
                retry_after_s=(needed - bucket.tokens) / rate,
                tokens=bucket.tokens,
            )
        bucket.tokens = max(0.0, bucket.tokens - cost)
        return None

    def _evict(self) -> None:
        # Drop the least recently used until under the cap; those are the likeliest to be full again anyway.
        while len(self._buckets) >= MAX_BUCKETS:
            self._buckets.popitem(last=False)
