"""Running the text tower only to the longest real prompt gives the full run's embeddings (fp32, 1e-5)."""

from __future__ import annotations

import numpy as np
import open_clip
import torch

from clipserve.runtime.model import ClipRuntime
from clipserve.runtime.text_tower import encode_text_truncated, supports_truncation, used_length
from tests.support import TEXTS

SHORT = ["a photo of a cat.", "a dog", "x", "a photo of the large red rocket on the pad."]


def test_used_length_is_the_last_end_token_plus_one() -> None:
    ids = open_clip.get_tokenizer("ViT-B-32")(["a", "a b c"])
    assert used_length(ids) == 5  # start, a, b, c, end


def test_truncated_equals_full_for_short_long_and_mixed_batches(vit_runtime: ClipRuntime) -> None:
    model = vit_runtime._model
    assert supports_truncation(model)
    assert vit_runtime.truncates_text
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    for batch in (SHORT, TEXTS, SHORT + TEXTS, ["one"]):
        ids = tokenizer(batch)
        with torch.inference_mode():
            full = model.encode_text(ids)
            cut = encode_text_truncated(model, ids)
        assert np.abs((cut - full).numpy()).max() <= 1e-5, batch
        assert used_length(ids) <= 77


def test_the_runtime_switch_changes_speed_not_results(vit_runtime: ClipRuntime) -> None:
    ids = vit_runtime.tokenize(SHORT).ids
    truncated = vit_runtime.encode_texts(ids)
    vit_runtime.truncates_text = False
    try:
        full = vit_runtime.encode_texts(ids)
    finally:
        vit_runtime.truncates_text = True
    assert np.abs(truncated - full).max() <= 1e-5
