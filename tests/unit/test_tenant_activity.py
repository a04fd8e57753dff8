from __future__ import annotations

from clipserve.runtime.tenant_activity import TenantActivity


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def test_tenants_count_as_active_for_the_window_after_their_last_work() -> None:
    clock = Clock()
    activity = TenantActivity(2.0, clock)
    assert activity.active() == 0
    activity.saw("a")
    clock.now += 1.0
    activity.saw("b")
    activity.saw("a")  # seen again: its window starts over
    assert activity.active() == 2
    clock.now += 1.5
    assert activity.active() == 2
    clock.now += 1.0  # 2.5 s after both were last seen
    assert activity.active() == 0
    activity.saw("b")
    assert activity.active() == 1
