"""What /v1/classify means: score images against labels the caller makes up, as open_clip's zero-shot does."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from clipserve.errors import InvalidRequestError
from clipserve.service.embeddings import EmbeddingService, RequestTimings
from clipserve.service.gather import gather_or_cancel
from clipserve.service.inputs import ImageItem, InputItem
from clipserve.service.pricing import Usage, text_token_bound
from clipserve.service.prompts import PromptEncoder
from clipserve.service.templates import DEFAULT_TEMPLATE, prompts_for, template_set
from clipserve.service.text_checks import is_blank


@dataclass(frozen=True)
class ClassifyLimits:
    max_images: int
    max_labels: int
    max_prompts: int
    max_label_chars: int = 300  # labels and templates: a prompt reaches the model as 77 tokens at most


@dataclass(frozen=True)
class ClassifyQuery:
    images: list[InputItem]
    labels: list[str]
    template: str | None = None
    top_k: int | None = None
    multi_label: bool = False
    default_template: str = DEFAULT_TEMPLATE
    labels_param: str = "labels"  # field names in errors: the HF shape names them differently
    template_param: str = "template"


@dataclass(frozen=True)
class LabelScore:
    label: str
    score: float


@dataclass(frozen=True)
class ClassifyResult:
    predictions: list[list[LabelScore]]  # per image, best first
    prompt_tokens: int  # tokens encoded now
    cached_tokens: int  # tokens served from the prompt cache
    image_count: int
    timings: RequestTimings


def build_classifier(prompt_vectors: np.ndarray, n_labels: int) -> np.ndarray:
    """open_clip's build_zero_shot_classifier: normalised prompt embeddings, mean per label, renormalised."""
    per_label = prompt_vectors.reshape(n_labels, -1, prompt_vectors.shape[-1]).mean(axis=1)
    classifier: np.ndarray = per_label / np.linalg.norm(per_label, axis=1, keepdims=True)
    return classifier


def label_scores(
    image_vectors: np.ndarray, classifier: np.ndarray, logit_scale: float, multi_label: bool
) -> np.ndarray:
    """Softmax over logit_scale * cosine (the reference's probabilities), or the raw cosines for multi-label."""
    cosine: np.ndarray = image_vectors @ classifier.T
    if multi_label:
        return cosine
    logits = logit_scale * cosine.astype(np.float64)
    logits -= logits.max(axis=1, keepdims=True)
    probabilities = np.exp(logits)
    softmax: np.ndarray = (probabilities / probabilities.sum(axis=1, keepdims=True)).astype(np.float32)
    return softmax


def check_labels(labels: list[str], param: str, *, max_labels: int, max_chars: int, per: str) -> None:
    """What every list of labels must be (a zero-shot query's, a custom classifier's): at most max_labels, each
    at most max_chars and not blank (the rule texts follow, service/inputs.py), no duplicates. `param` names the
    list in errors; `per` is what the count limit is per ("request", "classifier")."""
    if len(labels) > max_labels:
        raise InvalidRequestError(f"at most {max_labels} labels per {per}", param=param)
    for i, label in enumerate(labels):
        if len(label) > max_chars:
            raise InvalidRequestError(
                f"{param}[{i}] is {len(label)} characters; the limit is {max_chars}", param=f"{param}[{i}]"
            )
        if is_blank(label):
            raise InvalidRequestError(
                f"{param}[{i}] is empty or blank (only whitespace or control characters)",
                param=f"{param}[{i}]",
                code="empty_text",
            )
    if len(set(labels)) != len(labels):
        duplicates = sorted(label for label, count in Counter(labels).items() if count > 1)
        raise InvalidRequestError(f"duplicate labels: {duplicates}", param=param)


def bounded_prompts(
    labels: list[str],
    template: str | None,
    param: str,
    *,
    default: str,
    max_prompts: int,
    max_template_chars: int,
    count_param: str,
) -> list[str]:
    """The prompts (labels x the template or named set) a zero-shot classifier is built from: a 400 naming
    `param` (the template's field) when the template is too long, naming `count_param` when there would be
    more than max_prompts."""
    if template is not None and len(template) > max_template_chars:
        raise InvalidRequestError(
            f"{param} is {len(template)} characters; the limit is {max_template_chars}", param=param
        )
    makers = template_set(template, default=default, param=param)
    if len(makers) * len(labels) > max_prompts:
        raise InvalidRequestError(
            f"{len(labels)} labels x {len(makers)} templates = {len(labels) * len(makers)} prompts; "
            f"the limit is {max_prompts}",
            param=count_param,
        )
    return prompts_for(labels, makers)


class ClassificationService:
    def __init__(
        self, embeddings: EmbeddingService, prompts: PromptEncoder, logit_scale: float, limits: ClassifyLimits
    ) -> None:
        self._embeddings = embeddings
        self._prompts = prompts
        self._logit_scale = logit_scale
        self._limits = limits

    @property
    def prompt_encoder(self) -> PromptEncoder:
        """The prompt encoder (and its cache) the zero-shot classifiers are built with."""
        return self._prompts

    @property
    def logit_scale(self) -> float:
        return self._logit_scale

    def _validate(self, query: ClassifyQuery) -> None:
        limits = self._limits
        if not query.images:
            raise InvalidRequestError("at least one image is required", param="input")
        if len(query.images) > limits.max_images:
            raise InvalidRequestError(f"at most {limits.max_images} images per request", param="input")
        if any(not isinstance(item, ImageItem) for item in query.images):
            raise InvalidRequestError("classify takes images; use /v1/rank to compare texts", param="input")
        if len(query.labels) < (1 if query.multi_label else 2):
            raise InvalidRequestError(
                "give at least two labels (one with multi_label)", param=query.labels_param
            )
        check_labels(
            query.labels, query.labels_param, max_labels=limits.max_labels, max_chars=limits.max_label_chars,
            per="request",
        )  # fmt: skip
        if query.top_k is not None and query.top_k < 1:
            raise InvalidRequestError("top_k must be at least 1", param="top_k")

    def prompts(self, query: ClassifyQuery) -> list[str]:
        """The prompts a valid query encodes (labels x templates); raises for an invalid query."""
        self._validate(query)
        limits = self._limits
        return bounded_prompts(
            query.labels, query.template, query.template_param, default=query.default_template,
            max_prompts=limits.max_prompts, max_template_chars=limits.max_label_chars, count_param="labels",
        )  # fmt: skip

    def usage_bound(self, query: ClassifyQuery) -> Usage:
        """The most the query can cost, before any work."""
        tokens = sum(text_token_bound(prompt) for prompt in self.prompts(query))
        return Usage(images=len(query.images), tokens=tokens)

    async def classify(self, query: ClassifyQuery, account: str) -> ClassifyResult:
        prompt_texts = self.prompts(query)
        # Both are admitted at once (a full text queue refuses before any image is fetched), but the prompts
        # reach the text encoder only once every image is fetched, decoded and queued: an image that fails
        # costs no prompt encoding. The prompts' encoding then overlaps the images'. If either fails, the other
        # is cancelled.
        images_queued = asyncio.Event()
        prompt_job = asyncio.ensure_future(
            self._prompts.encode(prompt_texts, account=account, after=images_queued)
        )
        image_job = asyncio.ensure_future(
            self._embeddings.embed(query.images, account=account, images_queued=images_queued)
        )
        jobs: list[asyncio.Future[Any]] = [prompt_job, image_job]
        await gather_or_cancel(jobs)
        prompts, images = prompt_job.result(), image_job.result()
        classifier = build_classifier(prompts.vectors, len(query.labels))
        scores = label_scores(images.vectors, classifier, self._logit_scale, query.multi_label)
        top_k = min(query.top_k or len(query.labels), len(query.labels))
        predictions = []
        for row in scores:
            order = np.argsort(-row, kind="stable")[:top_k]
            predictions.append([LabelScore(query.labels[i], float(row[i])) for i in order])
        return ClassifyResult(
            predictions=predictions,
            prompt_tokens=prompts.tokens_encoded,
            cached_tokens=prompts.tokens_cached,
            image_count=images.image_count,
            timings=images.timings,
        )
