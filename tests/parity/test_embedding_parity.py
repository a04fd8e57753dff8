"""Through the HTTP API, clipserve's fp32 embeddings equal open_clip's on the same weights and inputs (1e-5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.support import PHOTO_FILES, TEXTS, data_uri, photo_path, running_app, vectors

pytestmark = pytest.mark.anyio

TOLERANCE = 1e-5


async def test_photo_embeddings_match_open_clip(vit_runtime, reference, tmp_path: Path) -> None:
    names = list(PHOTO_FILES)
    paths = [photo_path(n) for n in names]
    items = [{"image": data_uri(p.read_bytes())} for p in paths]
    async with running_app(vit_runtime, tmp_path, weights=str(paths[0])) as (client, _):
        batched = (await client.post("/v1/embeddings", json={"input": items})).json()
        one_by_one = [(await client.post("/v1/embeddings", json={"input": [item]})).json() for item in items]
    want = reference.image_vectors(paths)
    got = vectors(batched)
    assert got.shape == (len(names), 512)
    assert np.abs(got - want).max() <= TOLERANCE, dict(
        zip(names, np.abs(got - want).max(axis=1), strict=True)
    )
    singles = np.concatenate([vectors(b) for b in one_by_one])
    assert np.abs(singles - want).max() <= TOLERANCE


async def test_text_embeddings_match_open_clip(vit_runtime, reference, tmp_path: Path) -> None:
    async with running_app(vit_runtime, tmp_path) as (client, _):
        body = (
            await client.post("/v1/embeddings", json={"input": TEXTS, "encoding_format": "base64"})
        ).json()
    got = vectors(body)
    want = reference.text_vectors(TEXTS)
    assert np.abs(got - want).max() <= TOLERANCE
    # usage counts what the model read: start and end markers included, truncated at 77
    counts = [int((reference.tokenizer([t])[0] != 0).sum()) for t in TEXTS]
    assert body["usage"]["prompt_tokens"] == sum(counts)
    assert max(counts) == 77


def test_logit_scale_is_the_checkpoints(vit_runtime) -> None:
    assert vit_runtime.logit_scale == pytest.approx(100.0, rel=1e-5)
