"""Wire models of Hugging Face's feature-extraction and sentence-similarity tasks (InferenceClient, TEI)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from clipserve.api.protocol import RequestModel


class FeatureExtractionRequest(RequestModel):
    """What `InferenceClient.feature_extraction` sends: parameters at the root, as TEI's /embed takes them."""

    inputs: Any = Field(
        description="A string or a list of strings (or any input item /v1/embeddings takes, images included)."
    )
    normalize: bool | None = Field(
        default=None, description="true or omitted: clipserve returns unit-length embeddings only."
    )
    truncate: bool | None = Field(
        default=None, description="true or omitted: texts are cut to CLIP's 77 tokens, as on /v1/embeddings."
    )
    truncation_direction: Literal["left", "right"] | None = Field(
        default=None, description="'right' or omitted: CLIP keeps a text's start."
    )
    prompt_name: str | None = Field(default=None, description="Must be omitted: CLIP has no named prompts.")
    dimensions: int | None = Field(default=None, description="Must be 512 (or omitted): CLIP has no MRL.")
    encoding_format: Literal["float", "base64"] | None = Field(
        default=None, description="'float' or omitted: the answer is a JSON list of lists of floats."
    )


class SentenceSimilarityInputs(BaseModel):
    source_sentence: Any = Field(description="A string (or any input item /v1/embeddings takes).")
    sentences: list[Any] = Field(description="The strings (or items) to compare with source_sentence.")


class SentenceSimilarityRequest(RequestModel):
    """What `InferenceClient.sentence_similarity` sends (and TEI's /similarity takes)."""

    inputs: SentenceSimilarityInputs
    parameters: dict[str, Any] | None = Field(default=None, description="Ignored (the HF client sends {}).")
