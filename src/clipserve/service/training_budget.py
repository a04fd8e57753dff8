"""Per-account budget of classifier training CPU: a token bucket of CPU seconds per account, in this process.

A one-text add costs a token or two but retrains on every stored example (seconds of CPU), so trainings are
priced in CPU time: each training's thread CPU is debited after it has run, and a create or add is refused
(429) while the account's bucket is below zero. Capacity is the per-minute amount; it refills continuously.
Used from the event loop only (no lock).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from clipserve.errors import TrainingBudgetExceededError

SETTING = "classifier_training_cpu_s_per_minute"


class TrainingBudget:
    def __init__(self, cpu_s_per_minute: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = cpu_s_per_minute  # 0: unlimited
        self._per_s = cpu_s_per_minute / 60.0
        self._clock = clock
        self._levels: dict[str, tuple[float, float]] = {}  # account -> (level, when); absent = full

    def level(self, account: str) -> float:
        """The account's CPU seconds left now (negative: in debt)."""
        state = self._levels.get(account)
        if state is None:
            return self.capacity
        level, when = state
        now = self._clock()
        level = min(self.capacity, level + (now - when) * self._per_s)
        if level >= self.capacity:
            del self._levels[account]  # full again: nothing to remember
        else:
            self._levels[account] = (level, now)
        return level

    def check(self, account: str) -> None:
        """Raise the 429 while the account's bucket is below zero."""
        if not self.capacity:
            return
        level = self.level(account)
        if level < 0:
            retry_after_s = -level / self._per_s
            raise TrainingBudgetExceededError(
                f"this account has used its classifier training CPU ({SETTING}: {self.capacity:g} s per "
                f"minute); retry in {retry_after_s:.1f}s",
                limit_name="classifier_training_cpu",
                retry_after_s=retry_after_s,
            )

    def debit(self, account: str, cpu_s: float) -> None:
        if not self.capacity:
            return
        level = self.level(account) - max(0.0, cpu_s)
        if level < self.capacity:
            self._levels[account] = (level, self._clock())

    def accounts_held(self) -> list[str]:
        """Accounts whose bucket is not full (the memory this holds)."""
        return list(self._levels)
