"""huggingface_hub's InferenceClient, unchanged, against /v1/classify over a real socket."""

from __future__ import annotations

import base64

import httpx
from huggingface_hub import InferenceClient

from tests.support import encode_image, gradient_image
from tests.system.conftest import ServerProcess

LABELS = ["cat", "dog", "rocket"]


def test_zero_shot_image_classification_with_the_hf_client(tiny_server: ServerProcess) -> None:
    image = encode_image(gradient_image(), "PNG")
    client = InferenceClient(model=f"{tiny_server.base_url}/v1/classify")
    outputs = client.zero_shot_image_classification(image, candidate_labels=LABELS)
    assert sorted(o.label for o in outputs) == sorted(LABELS)
    scores = [o.score for o in outputs]
    assert scores == sorted(scores, reverse=True)
    assert abs(sum(scores) - 1.0) < 1e-5
    # The same as the Jina shape with the transformers pipeline's default template.
    jina = httpx.post(
        f"{tiny_server.base_url}/v1/classify",
        json={
            "image": base64.b64encode(image).decode(),
            "labels": LABELS,
            "template": "This is a photo of {}.",
        },
    ).json()
    assert [(o.label, round(o.score, 6)) for o in outputs] == [
        (p["label"], round(p["score"], 6)) for p in jina["data"][0]["predictions"]
    ]
