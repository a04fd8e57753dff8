"""Wire models of /v1/classifiers (custom classifiers, issue 15)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from clipserve.api.protocol import RequestModel


class ClassifierOptions(RequestModel):
    zero_shot_prior: bool | None = Field(
        default=None,
        description="Regularise toward the zero-shot classifier of the labels (default true): with no examples "
        "the classifier is zero-shot, and each example improves on it.",
    )
    template: str | None = Field(
        default=None,
        description="The prior's prompts, as /v1/classify's template: one '{}' template or 'openai-imagenet'.",
    )
    C: float | None = Field(
        default=None,
        description="Inverse regularisation strength; null chooses it by stratified cross-validation when every "
        "label has two examples or more (else the server's default).",
    )


class ExamplesRequest(RequestModel):
    examples: list[Any] = Field(
        description="[{input: <text or image item as /v1/embeddings takes>, label: <one of the labels>}]"
    )


class CreateClassifierRequest(RequestModel):
    name: str = Field(description="A name for people (1-128 characters).")
    labels: list[str] = Field(description="The classes: at least two distinct, non-blank strings.")
    examples: list[Any] = Field(default_factory=list, description="As in POST /v1/classifiers/{id}/examples.")
    options: ClassifierOptions | None = None


class ClassifierUsage(BaseModel):
    prompt_tokens: int = Field(description="Tokens of the text examples and of the prior's prompts.")
    total_tokens: int
    image_count: int


class Classifier(BaseModel):
    id: str
    object: Literal["classifier"] = "classifier"
    name: str
    labels: list[str]
    created_at: int
    updated_at: int
    examples: int
    examples_per_label: dict[str, int]
    zero_shot_prior: bool
    template: str | None
    C: float
    train_accuracy: float | None
    cv_accuracy: float | None
    usage: ClassifierUsage | None = Field(default=None, description="On create and add only.")


class ClassifierList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Classifier]


class DeletedClassifier(BaseModel):
    id: str
    object: Literal["classifier"] = "classifier"
    deleted: bool = True
