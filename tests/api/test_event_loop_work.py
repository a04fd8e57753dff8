"""operations.md: "The event loop never decodes an image or runs the model". The real decode_image and the real
runtime's preprocess / encode_images / encode_texts are wrapped (each records the thread it runs on, then calls the
real function), requests that decode images and run both towers go through the app, and no call ran on the event
loop's thread: decoding ran on the decode threads, the model on the compute thread."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import clipserve.service.embeddings as embeddings_module
from tests.support import data_uri, encode_image, gradient_image, running_app

pytestmark = pytest.mark.anyio


async def test_images_decode_and_the_model_runs_off_the_event_loop(
    tiny_runtime: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, str]] = []  # (function, thread name)
    lock = threading.Lock()

    def recording(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with lock:
                calls.append((name, threading.current_thread().name))
            return real(*args, **kwargs)

        return wrapper

    images = [data_uri(encode_image(gradient_image(64, 48, seed=i))) for i in range(3)]
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        loop_thread = threading.current_thread().name  # the test's coroutine runs on the event loop's thread
        # installed after warm-up, so only the requests' calls are recorded
        monkeypatch.setattr(
            embeddings_module, "decode_image", recording("decode_image", embeddings_module.decode_image)
        )
        for method in ("preprocess", "encode_images", "encode_texts"):
            monkeypatch.setattr(tiny_runtime, method, recording(method, getattr(tiny_runtime, method)))
        response = await client.post(
            "/v1/embeddings", json={"input": [{"image": image} for image in images] + [{"text": "a cat"}]}
        )
        assert response.status_code == 200, response.text
        texts = await client.post("/v1/embeddings", json={"input": ["a dog", "a bird"]})
        assert texts.status_code == 200, texts.text
    on_loop = [call for call in calls if call[1] == loop_thread]
    assert on_loop == [], f"ran on the event loop ({loop_thread}): {on_loop}"
    counts = Counter(name for name, _ in calls)
    assert counts["decode_image"] == 3, calls
    assert counts["preprocess"] == 3, calls
    assert counts["encode_images"] >= 1, calls  # how many batches depends on timing; at least one ran
    assert counts["encode_texts"] >= 1, calls
    threads = {name: {thread.rsplit("_", 1)[0] for n, thread in calls if n == name} for name in counts}
    assert threads == {
        "decode_image": {"clipserve-decode"},
        "preprocess": {"clipserve-decode"},
        "encode_images": {"clipserve-compute"},
        "encode_texts": {"clipserve-compute"},
    }, calls
