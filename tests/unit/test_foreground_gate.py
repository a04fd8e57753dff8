"""ForegroundGate: a background call waits at yield points while online work is in the house, nothing else does."""

from __future__ import annotations

import threading
import time

import pytest

from clipserve.runtime.foreground_gate import ForegroundGate
from tests.support import wait_for


def _background_steps(gate: ForegroundGate, log: list[str], at_point: threading.Event) -> float:
    def steps() -> str:
        log.append("step 1")
        at_point.set()
        gate.yield_point()
        log.append("step 2")
        return "done"

    result, paused_s = gate.run_background(steps)
    assert result == "done"
    return paused_s


def test_a_yield_point_outside_background_work_never_waits() -> None:
    gate = ForegroundGate()
    gate.enter()
    gate.yield_point()  # this thread is not running background work: it passes
    gate.leave()
    assert gate.pauses == 0


def test_background_work_waits_at_a_yield_point_until_every_source_has_left() -> None:
    gate = ForegroundGate()
    log: list[str] = []
    at_point = threading.Event()
    paused: list[float] = []
    gate.enter()  # two sources with online work (the image and the text queue)
    gate.enter()
    worker = threading.Thread(target=lambda: paused.append(_background_steps(gate, log, at_point)))
    worker.start()
    assert at_point.wait(10)
    wait_for(lambda: gate.pauses == 1, "the worker waits at the yield point")
    waiting_since = time.perf_counter()
    time.sleep(0.05)
    assert log == ["step 1"]
    gate.leave()
    time.sleep(0.05)
    assert log == ["step 1"]  # one source still busy
    released_at = time.perf_counter()
    gate.leave()
    worker.join(10)
    assert log == ["step 1", "step 2"]
    assert gate.pauses == 1
    assert paused[0] >= released_at - waiting_since  # the pause it reports covers the whole wait


def test_background_work_on_an_idle_gate_runs_through() -> None:
    gate = ForegroundGate()
    log: list[str] = []
    paused_s = _background_steps(gate, log, threading.Event())
    assert log == ["step 1", "step 2"]
    assert (gate.pauses, paused_s) == (0, 0.0)


def test_leave_without_enter_is_a_bug() -> None:
    with pytest.raises(RuntimeError):
        ForegroundGate().leave()
