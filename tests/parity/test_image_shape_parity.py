"""Preprocessing parity for every shape inside the aspect-ratio cap: our pixels are open_clip's eval transform's.

Our path (decode_image with the service's caps, then a ViT-B-32 runtime's preprocess) against open_clip's own
`create_model_and_transforms("ViT-B-32")[2]` on the image as Pillow reads it. Equal pixels mean equal
embeddings, so the full model is not needed here.
"""

from __future__ import annotations

import io

import open_clip
import pytest
from PIL import Image

from clipserve.config import Settings
from clipserve.errors import ImageAspectRatioError
from clipserve.runtime.images import decode_image
from clipserve.runtime.model import ClipRuntime
from tests.support import encode_image, gradient_image

CAP = Settings.model_fields["max_image_aspect_ratio"].default
MAX_PIXELS = Settings.model_fields["max_image_pixels"].default

# Near and at the cap, upscaled and downscaled, thin in both directions, odd sizes.
SHAPES = [(20, 1), (1, 20), (19, 1), (1, 19), (4480, 224), (224, 4480), (4479, 224), (7, 3), (3, 7),
          (1, 1), (2, 1), (40, 2), (447, 23), (1000, 50), (60, 1200), (225, 224), (3000, 150)]  # fmt: skip


@pytest.fixture(scope="module")
def reference_transform():  # type: ignore[no-untyped-def]
    return open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)[2]


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L"])
@pytest.mark.parametrize(("width", "height"), SHAPES, ids=[f"{w}x{h}" for w, h in SHAPES])
def test_preprocessing_matches_open_clip_inside_the_aspect_cap(
    vit_runtime: ClipRuntime, reference_transform, width: int, height: int, mode: str
) -> None:
    data = encode_image(gradient_image(width, height, seed=width * 7 + height).convert(mode), "PNG")
    ours = vit_runtime.preprocess(decode_image(data, max_pixels=MAX_PIXELS, max_aspect_ratio=CAP))
    reference = reference_transform(Image.open(io.BytesIO(data)))
    assert ours.shape == reference.shape == (3, 224, 224)
    assert float((ours - reference).abs().max()) <= 1e-5


@pytest.mark.parametrize(("width", "height"), [(21, 1), (1, 21), (4481, 224), (224, 4481), (3000, 1)])
def test_just_beyond_the_cap_is_refused(width: int, height: int) -> None:
    data = encode_image(gradient_image(width, height), "PNG")
    with pytest.raises(ImageAspectRatioError):
        decode_image(data, max_pixels=MAX_PIXELS, max_aspect_ratio=CAP)
