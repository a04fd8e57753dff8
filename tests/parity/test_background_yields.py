"""A background model call paused at its yield points (runtime/foreground_gate.py) while online calls run gives
exactly what an uninterrupted call gives, and open_clip's answer (full ViT-B-32, both towers, fp32 and int8)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipserve.runtime.foreground_gate import ForegroundGate
from clipserve.runtime.model import ClipRuntime, RuntimeSpec
from tests.parity.conftest import Reference
from tests.support import PHOTO_FILES, TEXTS, photo_path, wait_for

TOLERANCE = 1e-5


def _pixels(runtime: ClipRuntime, paths: list[Path]) -> torch.Tensor:
    return torch.stack([runtime.preprocess(Image.open(p)) for p in paths])


def _paused_while_online_runs(runtime: ClipRuntime, background: object, online: object) -> tuple[object, int]:
    """Run `background()` as background work; while it runs, online work holds the gate and `online()` runs on
    another thread at each pause. Returns the background result and how many times it paused."""
    gate = ForegroundGate()
    handles = runtime.add_yield_points(gate.yield_point)
    try:
        with ThreadPoolExecutor(1) as online_thread, ThreadPoolExecutor(1) as background_thread:
            gate.enter()  # online work in the house from the start: the background call pauses at once
            future = background_thread.submit(gate.run_background, background)  # type: ignore[arg-type]
            wait_for(
                lambda: gate.pauses > 0 or future.done(), "the background call waits at its first point", 120
            )
            assert not future.done(), "the background call ended without pausing"
            for _ in range(3):  # three online calls while the background one waits at its first point
                online_thread.submit(online).result()  # type: ignore[arg-type]
            gate.leave()
            result, paused_s = future.result(timeout=120)
        assert paused_s > 0
        return result, gate.pauses
    finally:
        for handle in handles:
            handle.remove()


def test_a_paused_background_call_equals_open_clip_and_an_uninterrupted_call(
    vit_runtime: ClipRuntime, reference: Reference
) -> None:
    paths = [photo_path(n) for n in PHOTO_FILES]
    pixels = _pixels(vit_runtime, paths)
    ids = vit_runtime.tokenize(TEXTS).ids
    whole_images = vit_runtime.encode_images(pixels)
    whole_texts = vit_runtime.encode_texts(ids)

    images, pauses = _paused_while_online_runs(
        vit_runtime, lambda: vit_runtime.encode_images(pixels), lambda: vit_runtime.encode_texts(ids[:2])
    )
    assert pauses == 1  # it waited at its first point, then ran through (the gate was free)
    assert np.array_equal(images, whole_images)  # type: ignore[arg-type]
    assert np.abs(images - reference.image_vectors(paths)).max() <= TOLERANCE  # type: ignore[operator]

    texts, _ = _paused_while_online_runs(
        vit_runtime, lambda: vit_runtime.encode_texts(ids), lambda: vit_runtime.encode_images(pixels[:1])
    )
    assert np.array_equal(texts, whole_texts)  # type: ignore[arg-type]
    assert np.abs(texts - reference.text_vectors(TEXTS)).max() <= TOLERANCE  # type: ignore[operator]


def test_yield_points_sit_before_every_blocks_attention_and_mlp_in_both_towers(
    vit_runtime: ClipRuntime,
) -> None:
    seen: list[str] = []
    handles = vit_runtime.add_yield_points(lambda: seen.append(threading.current_thread().name))
    try:
        assert len(handles) == 2 * (12 + 12)  # ViT-B-32: 12 blocks per tower
        vit_runtime.encode_images(torch.zeros(1, 3, 224, 224))
        assert len(seen) == 24
        vit_runtime.encode_texts(vit_runtime.tokenize(["a cat"]).ids)
        assert len(seen) == 48
    finally:
        for handle in handles:
            handle.remove()
    vit_runtime.encode_images(torch.zeros(1, 3, 224, 224))
    assert len(seen) == 48  # removed


@pytest.mark.parametrize("precision", ["int8"])
def test_a_paused_int8_call_equals_an_uninterrupted_one(precision: str, vit_b32_safetensors: Path) -> None:
    runtime = ClipRuntime.load(
        RuntimeSpec(weights=str(vit_b32_safetensors), device="cpu", precision=precision)
    )
    pixels = _pixels(runtime, [photo_path(n) for n in PHOTO_FILES])
    whole = runtime.encode_images(pixels)
    paused, pauses = _paused_while_online_runs(
        runtime, lambda: runtime.encode_images(pixels), lambda: runtime.encode_images(pixels[:1])
    )
    assert pauses == 1
    assert np.array_equal(paused, whole)  # type: ignore[arg-type]
