"""Once warm, the server exempts its long-lived objects from the collector's full scans (runtime/heap.py)."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest

from clipserve.config import Settings
from tests.support import running_app

pytestmark = pytest.mark.anyio


async def test_the_objects_alive_when_warm_are_frozen_until_shutdown(
    tiny_runtime: Any, tmp_path: Path
) -> None:
    assert gc.get_freeze_count() == 0
    async with running_app(tiny_runtime, tmp_path, freeze_startup_heap=True) as (client, _):
        assert (await client.get("/ready")).status_code == 200
        frozen = gc.get_freeze_count()
        # torch, the model, the tokenizer's vocabulary and the libraries: far more than traffic leaves behind
        assert frozen > 100_000
        assert frozen > 10 * len(gc.get_objects(generation=2))
        # what the freeze is for: a full collection scans only the objects it tracks, and the frozen ones are not
        # among them (the time it saves is bench/gc_pause.py's to measure, not a test's)
        scanned_while_frozen = len(gc.get_objects())
        assert frozen > 10 * scanned_while_frozen
    assert gc.get_freeze_count() == 0  # given back at shutdown: the collector scans them again
    assert len(gc.get_objects()) > scanned_while_frozen + frozen // 2


def test_the_freeze_is_on_by_default() -> None:
    assert Settings().freeze_startup_heap is True


async def test_the_freeze_is_a_setting(tiny_runtime: Any, tmp_path: Path) -> None:
    async with running_app(tiny_runtime, tmp_path, freeze_startup_heap=False) as (client, _):
        assert (await client.get("/ready")).status_code == 200
        assert gc.get_freeze_count() == 0
