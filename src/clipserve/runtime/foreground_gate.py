"""Background model calls step aside for online ones, between transformer steps.

Once torch runs a model call it cannot be interrupted, and on a CPU one call of a few images takes tens of
milliseconds: an online request arriving while a Batch API batch runs would wait for all of it. So background
calls run on a thread of their own and pass yield points (forward pre-hooks on every transformer block's
attention and MLP, installed by `ClipRuntime.add_yield_points`). While any online work is in the house (an item
reserved and decoding, queued, or in the model), a background call waits at its next yield point: the online
request waits for at most one attention or MLP step of the background batch, and has the cores to itself
until it is done. Outputs are unchanged: the same modules run in the same order on the same inputs; only the
pauses differ.

The queues that share the model (images, texts) share one gate: each tells it when its online work starts and
ends (`enter`/`leave`, counted, from the event loop); background calls run through `run_background`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TypeVar

R = TypeVar("R")


class ForegroundGate:
    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._busy = 0  # sources (queues) with online work in the house
        self._local = threading.local()  # .paused_s on a thread inside run_background, else absent
        self.pauses = 0  # times a background call waited at a yield point (for tests and metrics)

    @property
    def busy(self) -> bool:
        return self._busy > 0

    def enter(self) -> None:
        """Online work started: background calls stop at their next yield point."""
        with self._changed:
            self._busy += 1

    def leave(self) -> None:
        """Online work ended (one `leave` per `enter`): background calls go on when no source is busy."""
        with self._changed:
            self._busy -= 1
            if self._busy < 0:
                raise RuntimeError("ForegroundGate.leave without enter")
            if self._busy == 0:
                self._changed.notify_all()

    def run_background(self, call: Callable[[], R]) -> tuple[R, float]:
        """Run `call` as background work on this thread: it waits at yield points while online work is in the
        house. Returns its result and the seconds it spent waiting."""
        self._local.paused_s = 0.0
        try:
            result = call()
            return result, self._local.paused_s
        finally:
            del self._local.paused_s

    def yield_point(self) -> None:
        """Called between model steps: a background call waits here while online work is in the house; an
        online call (or any call outside run_background) passes at once."""
        if not self._busy or not hasattr(self._local, "paused_s"):
            return
        started = time.perf_counter()
        with self._changed:
            if not self._busy:
                return
            self.pauses += 1
            while self._busy:
                self._changed.wait()
        self._local.paused_s += time.perf_counter() - started


@dataclass(frozen=True)
class BackgroundLane:
    """Where background model calls run: on their own (single) thread, through the gate."""

    gate: ForegroundGate
    executor: Executor

    async def run(self, call: Callable[[], R]) -> tuple[R, float]:
        """`gate.run_background(call)` on the lane's thread: the result and the seconds it waited."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, self.gate.run_background, call)
