"""The request fields of /v1/embeddings (issue 11, items 2 and 7): every field a supported client sends is
accepted, any other is a 400 naming it; Jina's normalized / embedding_type / task."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import numpy as np
import pytest
from openai import AsyncOpenAI

from tests.support import encode_image, gradient_image, running_app, vectors

pytestmark = pytest.mark.anyio

B64 = base64.b64encode(encode_image(gradient_image(), "PNG")).decode()
INPUT = ["a photo of a cat", {"image": B64}, "a rocket on the pad"]


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"foo": 1}, "foo"),
        ({"temperature": 0.2, "inputs": "x"}, "inputs, temperature"),
        ({"extra_body": {"bar": 1}}, "bar"),
    ],
)
async def test_an_unknown_field_is_a_400_naming_it(
    tiny_runtime, tmp_path: Path, extra: dict, named: str
) -> None:
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        response = await client.post("/v1/embeddings", json={"input": "x", **extra})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["message"] == f"Unrecognized request argument supplied: {named}"
    assert error["type"] == "invalid_request_error"
    assert error["param"] == named.split(",")[0]


# What each supported client puts in its body (docs/api.md lists them): none may be refused, and none may
# change the numbers.
CLIENT_BODIES = {
    "openai": {"model": "CLIP-ViT-B-32-laion2B-s34B-b79K", "input": INPUT, "encoding_format": "float",
               "dimensions": 512, "user": "u-1"},
    "infinity": {"model": "laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "input": INPUT, "encoding_format": "float", "user": None,
                 "modality": "text"},
    "jina": {"model": "CLIP-ViT-B-32-laion2B-s34B-b79K", "input": INPUT, "normalized": True, "embedding_type": "float",
             "task": "retrieval.query", "late_chunking": False, "truncate": True, "dimensions": 512},
    "litellm-extra_body": {"model": "ViT-B-32/laion2b_s34b_b79k", "input": INPUT, "encoding_format": "float", "user": "u",
                           "extra_body": {"modality": "text"}},
    "vllm": {"model": "CLIP-ViT-B-32-laion2B-s34B-b79K", "messages": [{"role": "user", "content": [
        {"type": "text", "text": INPUT[0]}, {"type": "image_url", "image_url": {"url": B64}},
        {"type": "text", "text": INPUT[2]}]}], "encoding_format": "float"},
}  # fmt: skip


async def test_every_field_a_supported_client_sends_is_accepted(tiny_runtime, tmp_path: Path) -> None:
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        plain = vectors((await client.post("/v1/embeddings", json={"input": INPUT})).json())
        for name, body in CLIENT_BODIES.items():
            response = await client.post("/v1/embeddings", json=body)
            assert response.status_code == 200, (name, response.text)
            np.testing.assert_array_equal(vectors(response.json()), plain, err_msg=name)


async def test_the_openai_client_sends_nothing_refused(tiny_runtime, tmp_path: Path) -> None:
    """The real openai client (default base64 encoding, extra_body merged by the client) through the app."""
    async with running_app(tiny_runtime, tmp_path) as (client, app):
        plain = vectors((await client.post("/v1/embeddings", json={"input": [INPUT[0], INPUT[2]]})).json())
        images = vectors(
            (await client.post("/v1/embeddings", json={"input": [B64], "modality": "image"})).json()
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://clipserve.test/v1") as http:
            openai = AsyncOpenAI(api_key="unused", base_url="http://clipserve.test/v1", http_client=http)
            texts = await openai.embeddings.create(
                model="CLIP-ViT-B-32-laion2B-s34B-b79K", input=[INPUT[0], INPUT[2]], user="u", dimensions=512
            )
            as_image = await openai.embeddings.create(
                model="CLIP-ViT-B-32-laion2B-s34B-b79K", input=[B64], extra_body={"modality": "image"}
            )
    np.testing.assert_array_equal(np.array([d.embedding for d in texts.data], dtype=np.float32), plain)
    np.testing.assert_array_equal(np.array([d.embedding for d in as_image.data], dtype=np.float32), images)


async def test_embedding_types_are_the_float_vectors_packed(tiny_runtime, tmp_path: Path) -> None:
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        answers = {
            kind: (await client.post("/v1/embeddings", json={"input": INPUT, "embedding_type": kind})).json()
            for kind in ("float", "base64", "binary", "ubinary")
        }
        task = (
            await client.post("/v1/embeddings", json={"input": INPUT, "task": "retrieval.passage"})
        ).json()
    floats = vectors(answers["float"])
    assert floats.shape == (3, 512)
    # ubinary: one bit per dimension (1 where > 0), most significant bit first, as uint8; binary: minus 128.
    ubinary = np.array([d["embedding"] for d in answers["ubinary"]["data"]])
    binary = np.array([d["embedding"] for d in answers["binary"]["data"]])
    assert ubinary.shape == binary.shape == (3, 64)
    np.testing.assert_array_equal(ubinary, np.packbits(floats > 0, axis=1).astype(np.int64))
    np.testing.assert_array_equal(binary, np.packbits(floats > 0, axis=1).astype(np.int64) - 128)
    np.testing.assert_array_equal(np.unpackbits(ubinary.astype(np.uint8), axis=1).astype(bool), floats > 0)
    decoded = [
        np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in answers["base64"]["data"]
    ]
    np.testing.assert_array_equal(np.stack(decoded), floats)
    np.testing.assert_array_equal(
        vectors(task), floats
    )  # task is accepted and changes nothing (CLIP has none)


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"normalized": False}, "normalized"),
        ({"late_chunking": True}, "late_chunking"),
        ({"encoding_format": "base64", "embedding_type": "float"}, "embedding_type"),
        ({"embedding_type": "int8"}, "embedding_type"),
    ],
)
async def test_options_that_cannot_be_honoured_are_a_400(
    tiny_runtime, tmp_path: Path, extra: dict, param: str
) -> None:
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        response = await client.post("/v1/embeddings", json={"input": "x", **extra})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param
