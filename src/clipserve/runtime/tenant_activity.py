"""Which tenants sent work lately: the batchers' sign that batches should be short.

Shared by the queues that share the model thread (images and texts), so an account sending texts makes the image
batches short too: its texts wait for the running image batch as much as its images would.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable


class TenantActivity:
    """Tenants seen within the last `window_s` seconds."""

    def __init__(self, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._window_s = window_s
        self._clock = clock
        self._last_seen: OrderedDict[Hashable, float] = OrderedDict()  # oldest first

    def saw(self, tenant: Hashable) -> None:
        self._last_seen[tenant] = self._clock()
        self._last_seen.move_to_end(tenant)

    def active(self) -> int:
        """How many tenants sent work within the window."""
        horizon = self._clock() - self._window_s
        while self._last_seen:
            tenant, seen = next(iter(self._last_seen.items()))
            if seen >= horizon:
                break
            del self._last_seen[tenant]
        return len(self._last_seen)
