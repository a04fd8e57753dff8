"""Wire models: the JSON shapes clients send and receive (OpenAI conventions). No logic here, beyond the one
check every request body gets where JSON becomes Python (RequestModel)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from clipserve.errors import InvalidRequestError
from clipserve.service.text_checks import reject_lone_surrogates


class RequestModel(BaseModel):
    """Base of every request body: a lone UTF-16 surrogate anywhere in it is a 400 naming the field.

    Fields listed in `checked_per_item` are left to their own parser, which fails only the item that holds one.
    """

    checked_per_item: ClassVar[frozenset[str]] = frozenset()
    # A field the model does not declare is a 400 naming it, as the OpenAI API answers ("Unrecognized request
    # argument supplied: foo"), instead of being ignored: a misspelt option must not silently do nothing. A
    # model that must tolerate fields it does not read sets this to False and says why.
    refuse_unknown_fields: ClassVar[bool] = True

    @model_validator(mode="before")
    @classmethod
    def _refuse_unknown_fields(cls, data: Any) -> Any:
        if cls.refuse_unknown_fields and isinstance(data, dict):
            unknown = sorted(key for key in data if key not in cls.model_fields)
            if unknown:
                raise InvalidRequestError(
                    f"Unrecognized request argument supplied: {', '.join(unknown)}",
                    param=unknown[0],
                    code="unknown_field",
                )
        return data

    @model_validator(mode="before")
    @classmethod
    def _refuse_lone_surrogates(cls, data: Any) -> Any:
        if isinstance(data, dict) and cls.checked_per_item:
            reject_lone_surrogates({k: v for k, v in data.items() if k not in cls.checked_per_item})
        else:
            reject_lone_surrogates(data)
        return data


class EmbeddingRequest(RequestModel):
    """OpenAI's embeddings body, with the fields Infinity, Jina and vLLM clients add (docs/api.md).

    Any other field is a 400 naming it; an `extra_body` object (sent literally by some wrappers instead of
    merged) has its fields read as if they were top-level ones.
    """

    refuse_unknown_fields: ClassVar[bool] = True

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
    encoding_format: Literal["float", "base64"] | None = Field(
        default=None,
        description="float (default) or base64: little-endian float32, as the openai client decodes it.",
    )
    dimensions: int | None = Field(
        default=None, description="512, or 0 or omitted for full size (512): CLIP has no MRL."
    )

    @field_validator("dimensions")
    @classmethod
    def _zero_means_full_size(cls, value: int | None) -> int | None:
        return value or None  # Infinity's client always sends dimensions: 0, meaning "as trained"

    user: str | None = Field(default=None, description="Accepted and ignored.")
    modality: str | None = Field(
        default=None,
        description="Infinity's field: 'text' (every bare string in `input` is a text) or 'image' (every bare "
        "string is an image: URL, data URI or base64). Omitted: a bare string is a text, unless it is a data "
        "URI of an image (data:image/...;base64,...).",
    )
    normalized: bool = Field(
        default=True,
        description="Jina's field: embeddings are always unit vectors here; false is refused (400).",
    )
    embedding_type: Literal["float", "base64", "binary", "ubinary"] | None = Field(
        default=None,
        description="Jina's field, instead of encoding_format: float, base64 (as encoding_format), ubinary "
        "(the sign bits packed 8 per byte, most significant first, as uint8: 64 numbers for 512 dimensions) "
        "or binary (the same bytes minus 128, as int8).",
    )
    task: str | None = Field(
        default=None, description="Jina's task adapter name: accepted and ignored (CLIP has none)."
    )
    late_chunking: bool | None = Field(
        default=None, description="Jina's field: only false is accepted (CLIP embeds each item on its own)."
    )
    truncate: bool | None = Field(
        default=None,
        description="Jina's field: accepted and ignored; CLIP always reads the first 77 tokens of a text.",
    )

    @model_validator(mode="before")
    @classmethod
    def _merge_extra_body(cls, data: Any) -> Any:
        if isinstance(data, dict) and "extra_body" in data and data["extra_body"] is None:
            data = {k: v for k, v in data.items() if k != "extra_body"}
        if isinstance(data, dict) and isinstance(data.get("extra_body"), dict):
            extra = data["extra_body"]
            both = sorted(key for key in extra if key in data)
            if both:
                raise InvalidRequestError(
                    f"{', '.join(both)} given both at the top level and in 'extra_body'", param="extra_body"
                )
            data = {**{k: v for k, v in data.items() if k != "extra_body"}, **extra}
        return data


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | list[int] | str = Field(
        description="Floats; a base64 string (encoding_format/embedding_type base64); or bytes as integers "
        "(embedding_type binary: int8, ubinary: uint8)."
    )


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
    labels: list[str] | None = Field(
        default=None, description="Candidate labels: any strings (zero-shot). Give this or 'classifier'."
    )
    classifier: str | None = Field(
        default=None,
        description="A custom classifier's id (POST /v1/classifiers) instead of labels: its softmax(W x + b); "
        "only the images are encoded and charged.",
    )
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
