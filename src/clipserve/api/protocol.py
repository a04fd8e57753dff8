"""Wire models: the JSON shapes clients send and receive (OpenAI conventions). No logic here, beyond the one
check every request body gets where JSON becomes Python (RequestModel)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, model_validator

from clipserve.service.text_checks import reject_lone_surrogates


class RequestModel(BaseModel):
    """Base of every request body: a lone UTF-16 surrogate anywhere in it is a 400 naming the field.

    Fields listed in `checked_per_item` are left to their own parser, which fails only the item that holds one.
    """

    checked_per_item: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="before")
    @classmethod
    def _refuse_lone_surrogates(cls, data: Any) -> Any:
        if isinstance(data, dict) and cls.checked_per_item:
            reject_lone_surrogates({k: v for k, v in data.items() if k not in cls.checked_per_item})
        else:
            reject_lone_surrogates(data)
        return data


class EmbeddingRequest(RequestModel):
    model: str | None = Field(
        default=None, description="laion/CLIP-ViT-B-32-laion2B-s34B-b79K or CLIP-ViT-B-32-laion2B-s34B-b79K."
    )
    input: Any = Field(
        default=None,
        description=(
            "A string, or a list whose items are strings, {'text': s}, {'image': src}, "
            "{'type': 'text', 'text': s} or {'type': 'image_url', 'image_url': {'url': src}}; "
            "src is a data URI, base64, or an http(s) URL. At most 2048 items."
        ),
    )
    messages: list[Any] | None = Field(
        default=None,
        description="vLLM chat-style input instead of `input`: every content part becomes one embedding.",
    )
    encoding_format: Literal["float", "base64"] = Field(
        default="float", description="base64 is little-endian float32, as the openai client decodes it."
    )
    dimensions: int | None = Field(default=None, description="Must be 512 (or omitted): CLIP has no MRL.")
    user: str | None = None


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int
    image_count: int = Field(description="Images embedded (images have no tokens).")


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: EmbeddingUsage


class ClassifyRequest(RequestModel):
    """Jina's hosted-CLIP shape."""

    model: str | None = None
    input: Any = Field(
        default=None, description="One image item or a list of them (forms as /v1/embeddings)."
    )
    image: Any = Field(default=None, description="Shorthand for one image item.")
    labels: list[str] = Field(description="Candidate labels: any strings.")
    template: str | None = Field(
        default=None,
        description="Prompt with one '{}' (default 'a photo of a {}.'), or a named set: 'openai-imagenet' "
        "(the 80 CLIP prompts, ensembled per label) or 'simple-imagenet'.",
    )
    top_k: int | None = Field(default=None, description="Return only the best k labels per image.")
    multi_label: bool = Field(
        default=False, description="Independent cosine scores per label instead of a softmax across labels."
    )


class LabelPrediction(BaseModel):
    label: str
    score: float


class Classification(BaseModel):
    object: Literal["classification"] = "classification"
    index: int
    prediction: str
    score: float
    predictions: list[LabelPrediction]


class ClassifyUsage(BaseModel):
    prompt_tokens: int = Field(description="Label-prompt tokens the text encoder ran on for this request.")
    total_tokens: int
    cached_tokens: int = Field(description="Label-prompt tokens served from the prompt cache.")
    image_count: int


class ClassifyResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Classification]
    model: str
    usage: ClassifyUsage


class HFClassifyParameters(BaseModel):
    candidate_labels: list[str] | str
    hypothesis_template: str | None = None


class HFClassifyRequest(RequestModel):
    """The Hugging Face zero-shot-image-classification shape (inference API / InferenceClient)."""

    inputs: Any
    parameters: HFClassifyParameters


class RankRequest(RequestModel):
    model: str | None = None
    query: Any = Field(description="A string, or a text or image item (forms as /v1/embeddings).")
    documents: list[Any] = Field(description="Texts and/or images to order by relevance to the query.")
    top_n: int | None = None
    return_documents: bool = True


class RankResult(BaseModel):
    index: int
    relevance_score: float
    document: Any = None


class RankUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int
    image_count: int


class RankResponse(BaseModel):
    object: Literal["list"] = "list"
    model: str
    results: list[RankResult]
    usage: RankUsage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    aliases: list[str]
    embedding_dimensions: int
    license: str
    task: str
    tasks: list[str]
    imagenet_zero_shot_top1: float
    weights: dict[str, Any]
    card: dict[str, Any]


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class HealthResponse(BaseModel):
    status: Literal["ok", "ready", "not_ready"]
