"""Every JSON route answers a field it does not declare with a 400 naming it (as the OpenAI API does), instead of
ignoring it: a misspelt option must not silently do nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support import data_uri, encode_image, gradient_image, running_app

pytestmark = pytest.mark.anyio

IMAGE = data_uri(encode_image(gradient_image(64, 64)))
DOCUMENTS = {"query": "a cat", "documents": ["a cat", "a dog"]}
# (path, a valid body); the test sends it as is (200), then with a made-up field (400)
ROUTES: list[tuple[str, dict[str, Any]]] = [
    ("/v1/embeddings", {"input": "a cat"}),
    ("/embeddings", {"input": "a cat"}),
    ("/v1/classify", {"input": [{"image": IMAGE}], "labels": ["cat", "dog"]}),
    ("/v1/classify", {"inputs": IMAGE, "parameters": {"candidate_labels": ["cat", "dog"]}}),  # HF's shape
    ("/v1/rank", DOCUMENTS),
    ("/v1/rerank", DOCUMENTS),
    ("/v2/rerank", DOCUMENTS),
    ("/rerank", DOCUMENTS),
    ("/embed", {"inputs": "a cat"}),
    ("/similarity", {"inputs": {"source_sentence": "a cat", "sentences": ["a dog"]}}),
    ("/v1/collections", {"name": "pets"}),
]


@pytest.mark.parametrize(("path", "body"), ROUTES, ids=[f"{path}-{sorted(body)[0]}" for path, body in ROUTES])
async def test_an_unknown_field_is_a_400_naming_it_on_every_json_route(
    tiny_runtime: Any, tmp_path: Path, path: str, body: dict[str, Any]
) -> None:
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        accepted = await client.post(path, json=body)
        refused = await client.post(
            path,
            json={**body, "name": "other"} | {"made_up_option": 1}
            if "name" in body
            else {**body, "made_up_option": 1},
        )
    assert accepted.status_code == 200, accepted.text  # the body itself is valid
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["message"] == "Unrecognized request argument supplied: made_up_option"
    assert error["param"] == "made_up_option"
    assert error["code"] == "unknown_field"
    assert error["type"] == "invalid_request_error"
