"""The per-account classifier training CPU budget: a token bucket refilled continuously, on an injected clock."""

from __future__ import annotations

import pytest

from clipserve.errors import RateLimitExceededError
from clipserve.service.training_budget import TrainingBudget


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_debt_refuses_until_refilled_to_zero_and_other_accounts_are_unaffected() -> None:
    clock = Clock()
    budget = TrainingBudget(60.0, clock)  # 60 s per minute: 1 s of CPU per second (exact arithmetic)
    budget.check("a")
    budget.debit("a", 0.5)
    assert budget.level("a") == 59.5
    budget.check("a")  # below capacity but not in debt
    budget.debit("a", 70.0)
    assert budget.level("a") == -10.5
    with pytest.raises(RateLimitExceededError) as refused:
        budget.check("a")
    assert refused.value.code == "classifier_training_budget"
    assert refused.value.retry_after_s == 10.5  # 10.5 s of debt / (60 s / 60 s)
    assert refused.value.headers["Retry-After"] == "11"
    assert "classifier_training_cpu_s_per_minute" in refused.value.message
    budget.check("b")
    clock.now += 10.0
    with pytest.raises(RateLimitExceededError) as still:
        budget.check("a")
    assert still.value.retry_after_s == 0.5
    clock.now += 0.5
    budget.check("a")  # back at 0
    assert budget.level("a") == 0.0
    clock.now += 3600.0
    assert budget.level("a") == 60.0  # capped at the per-minute amount, and forgotten
    assert budget.accounts_held() == []


def test_zero_is_unlimited() -> None:
    budget = TrainingBudget(0.0, Clock())
    budget.debit("a", 1e9)
    budget.check("a")
    assert budget.accounts_held() == []
