"""Wire models: the JSON shapes clients send and receive (OpenAI conventions). No logic here."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class EmbeddingRequest(BaseModel):
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
