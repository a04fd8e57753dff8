"""Run a request's parts concurrently so that the first failure stops the rest.

asyncio.gather leaves the other parts running when one fails: a request that already has its answer (an error)
would go on fetching, decoding and queueing images, holding queue places and decode slots nobody will read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import TypeVar

T = TypeVar("T")


async def gather_or_cancel(jobs: Sequence[Awaitable[T]]) -> list[T]:
    """Run concurrently; the results in order, or the first error once the others are cancelled and finished.

    Waiting for the cancelled parts to unwind means that whatever they hold (queue reservations, decode slots)
    is released before the caller answers. If the caller itself is cancelled, every part is cancelled too.
    """
    tasks = [asyncio.ensure_future(job) for job in jobs]
    if not tasks:
        return []
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in tasks:
            if task.done() and not task.cancelled() and (error := task.exception()) is not None:
                raise error
        return [task.result() for task in tasks]
    finally:
        unfinished = [task for task in tasks if not task.done()]
        for task in unfinished:
            task.cancel()
        if unfinished:
            await asyncio.wait(unfinished)
        for task in tasks:
            if not task.cancelled():
                task.exception()  # a second failure is retrieved here (the first one is raised), not logged
