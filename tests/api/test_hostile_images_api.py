"""The hostile image corpus through POST /v1/embeddings: a 400 naming the bad item, or an embedding; never a 500.

Each hostile image goes second (as a data URI, so even zero bytes reach the decoder) in a request after a good photo: a refusal fails the whole request and names
`input[1]`; an accepted one must leave the good photo's embedding exactly as it is alone.
"""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest

from tests.api.test_errors_api import assert_openai_error
from tests.hostile_images import INVALID, hostile_images, png_solid
from tests.support import data_uri, encode_image, gradient_image, running_app, vectors

pytestmark = pytest.mark.anyio

GOOD = base64.b64encode(encode_image(gradient_image(64, 48), "PNG")).decode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def test_every_hostile_image_is_a_400_naming_it_or_an_embedding(tiny_runtime, tmp_path: Path) -> None:
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        alone = await client.post("/v1/embeddings", json={"input": [{"image": GOOD}]})
        assert alone.status_code == 200, alone.text
        failures = []
        for case in hostile_images():
            response = await client.post(
                "/v1/embeddings", json={"input": [{"image": GOOD}, {"image": data_uri(case.data)}]}
            )
            if response.status_code == 200:
                if case.expected is not None and not (case.may_embed and case.expected == INVALID):
                    failures.append(f"{case.name}: embedded, expected {case.expected}")
                elif not np.array_equal(vectors(response.json())[0], vectors(alone.json())[0]):
                    failures.append(f"{case.name}: changed the other item's embedding")
                continue
            error = response.json().get("error", {})
            if (response.status_code, error.get("param"), error.get("code")) != (
                400,
                "input[1]",
                case.expected,
            ):
                failures.append(f"{case.name}: {response.status_code} {error}")
    assert not failures, "\n".join(failures)


async def test_a_thin_image_in_the_middle_fails_the_request_naming_its_index(
    tiny_runtime, tmp_path: Path
) -> None:
    thin = b64(png_solid(3000, 1))
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        response = await client.post(
            "/v1/embeddings", json={"input": ["a cat", {"image": GOOD}, {"image": thin}, {"image": GOOD}]}
        )
        after = await client.post("/v1/embeddings", json={"input": [{"image": GOOD}]})
    assert_openai_error(response, 400, param="input[2]", code="image_aspect_ratio")
    assert "3000x1" in response.json()["error"]["message"]
    assert after.status_code == 200


async def test_the_aspect_ratio_cap_is_a_setting(tiny_runtime, tmp_path: Path) -> None:
    async with running_app(tiny_runtime, tmp_path, max_image_aspect_ratio=2.0) as (client, _):
        square_ish = await client.post("/v1/embeddings", json={"input": [{"image": b64(png_solid(20, 10))}]})
        wide = await client.post("/v1/embeddings", json={"input": [{"image": b64(png_solid(21, 10))}]})
    assert square_ish.status_code == 200, square_ish.text
    assert_openai_error(wide, 400, param="input[0]", code="image_aspect_ratio")
