"""Large JPEGs under the default decode (`--jpeg-draft`): the one input where clipserve is not bit-for-bit the
reference. libjpeg decodes a JPEG of 896 px or more on its short side at 1/2, 1/4 or 1/8 scale (never below 448
px) before open_clip's transform; this holds the bound the docs state for that path, proves the path is taken
(the pixels differ), and that `--no-jpeg-draft` gives the reference's embedding within 1e-5 on the same files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support import data_uri, photo_path, running_app, vectors

pytestmark = pytest.mark.anyio

# (photo, short side after upscaling): 2x, 4x and 8x draft scales, portrait and landscape
CASES = [("chelsea", 900), ("astronaut", 1400), ("coffee", 2000), ("rocket", 3024)]
# The documented bound for the draft path (docs/performance.md, README): each embedding element within this
# of the reference's, and cosine with the reference at least COSINE.
DRAFT_TOLERANCE = 2e-3
COSINE = 0.9995
EXACT_TOLERANCE = 1e-5


def large_jpeg(name: str, short_side: int, directory: Path) -> Path:
    image = Image.open(photo_path(name)).convert("RGB")
    scale = short_side / min(image.size)
    large = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
    path = directory / f"{Path(name).stem}_{short_side}.jpg"
    buffer = io.BytesIO()
    large.save(buffer, "JPEG", quality=90)
    path.write_bytes(buffer.getvalue())
    return path


async def embed(runtime, tmp_path: Path, paths: list[Path], **settings: object) -> np.ndarray:  # type: ignore[no-untyped-def]
    items = [{"image": data_uri(p.read_bytes(), "image/jpeg")} for p in paths]
    async with running_app(runtime, tmp_path, **settings) as (client, _):
        response = await client.post("/v1/embeddings", json={"input": items})
    assert response.status_code == 200, response.text
    return vectors(response.json())


async def test_large_jpegs_stay_within_the_documented_bound_and_exact_without_draft(
    vit_runtime, reference, tmp_path: Path
) -> None:
    paths = [large_jpeg(name, side, tmp_path) for name, side in CASES]
    want = reference.image_vectors(paths)
    drafted = await embed(vit_runtime, tmp_path / "draft", paths)  # the default
    exact = await embed(vit_runtime, tmp_path / "exact", paths, jpeg_draft=False)
    draft_error = np.abs(drafted - want).max(axis=1)
    cosines = (drafted * want).sum(axis=1)
    report = {p.name: (float(e), float(c)) for p, e, c in zip(paths, draft_error, cosines, strict=True)}
    print("draft vs reference (max |diff|, cosine):", report)
    assert np.abs(exact - want).max() <= EXACT_TOLERANCE
    assert draft_error.max() <= DRAFT_TOLERANCE, report
    assert cosines.min() >= COSINE, report
    # the draft path was taken for every file: its embeddings are not the exact ones
    assert (draft_error > EXACT_TOLERANCE).all(), report


async def test_jpegs_under_896_px_are_decoded_exactly_by_default(
    vit_runtime, reference, tmp_path: Path
) -> None:
    paths = [large_jpeg("chelsea", 895, tmp_path), large_jpeg("coffee", 600, tmp_path)]
    got = await embed(vit_runtime, tmp_path / "app", paths)
    assert np.abs(got - reference.image_vectors(paths)).max() <= EXACT_TOLERANCE
