"""The official openai client against a real server socket."""

from __future__ import annotations

import numpy as np
import openai
import pytest

from tests.support import data_uri, encode_image, gradient_image
from tests.system.conftest import ServerProcess

MODEL = "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"


@pytest.fixture
def client(tiny_server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{tiny_server.base_url}/v1", api_key="unused", max_retries=0)


def test_embeddings_create_in_both_encodings(client: openai.OpenAI) -> None:
    texts = ["a photo of a cat", "a photo of a dog"]
    default = client.embeddings.create(model=MODEL, input=texts)  # the client asks for base64 by default
    as_float = client.embeddings.create(model=MODEL, input=texts, encoding_format="float")
    assert [d.index for d in default.data] == [0, 1]
    a = np.array([d.embedding for d in default.data], dtype=np.float32)
    b = np.array([d.embedding for d in as_float.data], dtype=np.float32)
    assert a.shape == (2, 512)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert default.model == MODEL
    assert default.usage.prompt_tokens == default.usage.total_tokens > 0


def test_images_through_the_client(client: openai.OpenAI) -> None:
    uri = data_uri(encode_image(gradient_image(), "PNG"))
    parts = [{"type": "image_url", "image_url": {"url": uri}}, {"type": "text", "text": "a gradient"}]
    response = client.embeddings.create(model="CLIP-ViT-B-32-laion2B-s34B-b79K", input=parts)  # type: ignore[arg-type]
    assert len(response.data) == 2
    assert response.usage.model_extra == {"image_count": 1}


def test_client_errors_are_typed(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.embeddings.create(model="text-embedding-3-small", input="x")
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as empty:
        client.embeddings.create(model=MODEL, input="")
    assert "empty" in empty.value.message
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model=MODEL, input="x", dimensions=256)


def test_models_list_through_the_client(client: openai.OpenAI) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert client.models.retrieve("CLIP-ViT-B-32-laion2B-s34B-b79K").id == MODEL
