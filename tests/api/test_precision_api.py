"""Every precision mode loads and serves through the app."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clipserve.runtime.model import ClipRuntime, RuntimeSpec
from tests.support import TINY_CONFIG, data_uri, encode_image, gradient_image, running_app, vectors

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8", "auto"])
async def test_each_precision_serves_embeddings_and_classification(precision: str, tmp_path: Path) -> None:
    runtime = ClipRuntime.load(
        RuntimeSpec(weights="random", architecture=str(TINY_CONFIG), device="cpu", precision=precision)  # type: ignore[arg-type]
    )
    image = {"image": data_uri(encode_image(gradient_image(), "PNG"))}
    async with running_app(runtime, tmp_path) as (client, _):
        embedded = await client.post("/v1/embeddings", json={"input": ["a cat", image]})
        classified = await client.post("/v1/classify", json={"input": [image], "labels": ["cat", "dog"]})
    assert embedded.status_code == 200
    assert np.allclose(np.linalg.norm(vectors(embedded.json()), axis=1), 1.0, atol=1e-3)
    assert classified.status_code == 200
