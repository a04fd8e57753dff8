"""Sign-in throttling: failed sign-ins per email and per client network within a window, shared by replicas
through the database. Checked before any password hashing, so a throttled guess costs no argon2 work."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from clipserve.errors import RateLimitExceededError
from clipserve.store.logins import FailureCounts, LoginStore


@dataclass(frozen=True)
class ThrottleLimits:
    per_account: int = 5
    per_address: int = 20
    window_s: float = 900.0


class SigninThrottle:
    def __init__(self, logins: LoginStore, limits: ThrottleLimits) -> None:
        self._logins = logins
        self.limits = limits

    def check(self, email: str, address: str) -> None:
        """Raise RateLimitExceededError (429, Retry-After: until the oldest counted failure leaves the window)
        when this email or this address failed too often. A success clears nothing (no oracle)."""
        now = self._logins.clock()
        self._refuse_over_limit(self._logins.failures_since(email, address, now - self._window), now)

    def reserve(self, email: str, address: str) -> int:
        """Count this attempt as a failure before its password is hashed, or raise the 429 of check(): so a
        burst of concurrent guesses gets at most the limit's worth of hashes. Returns the attempt's id, for
        succeeded()."""
        limits = (self.limits.per_account, self.limits.per_address)
        attempt, failures = self._logins.reserve_attempt(email, address, self.limits.window_s, limits)
        if attempt is None:
            self._refuse_over_limit(failures, self._logins.clock())
            raise AssertionError("reserve_attempt refused under the limit")  # pragma: no cover
        return attempt

    def succeeded(self, attempt: int) -> None:
        """The reserved attempt had the right password: it is not a failure."""
        self._logins.forget_attempt(attempt)

    @property
    def _window(self) -> timedelta:
        return timedelta(seconds=self.limits.window_s)

    def _refuse_over_limit(self, failures: FailureCounts, now: datetime) -> None:
        window = self._window
        for times, limit, what in (
            (failures.email, self.limits.per_account, "this account"),
            (failures.address, self.limits.per_address, "this address"),
        ):
            if len(times) >= limit:
                # the oldest failure that must leave for the count to drop below the limit
                oldest = times[len(times) - limit]
                raise RateLimitExceededError(
                    f"too many failed sign-ins for {what}; try again later",
                    limit_name="requests",
                    retry_after_s=max(1.0, _seconds(oldest + window - now)),
                )

    def record_failure(self, email: str | None, address: str) -> None:
        self._logins.record_failure(email, address, self.limits.window_s)


def _seconds(delta: timedelta) -> float:
    return delta.total_seconds()
