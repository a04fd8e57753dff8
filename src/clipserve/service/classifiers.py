"""What /v1/classifiers means: linear probes trained on the CLIP embeddings of a caller's labelled examples,
optionally pulled toward the zero-shot classifier of the labels (docs/classifiers.md), and classifying with them.

Examples are embedded through the EmbeddingService and the prior's prompts through the PromptEncoder (the prompt
cache), so both are metered like /v1/embeddings and /v1/classify. Training runs on a FairExecutor by account,
never on the event loop; its CPU is bounded by the example, label and iteration limits.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from clipserve.config import Settings
from clipserve.errors import InvalidRequestError, ServiceOverloadedError
from clipserve.runtime.fair_queue import FairExecutor
from clipserve.service.classify import (
    ClassifyResult,
    LabelScore,
    bounded_prompts,
    build_classifier,
    check_labels,
)
from clipserve.service.embeddings import EmbeddingService
from clipserve.service.inputs import ImageItem, InputItem, InputLimits, TextItem, parse_item
from clipserve.service.linear_probe import FittedProbe, Prior, TrainOptions, fit, softmax
from clipserve.service.pricing import Usage, text_token_bound, usage_bound
from clipserve.service.prompts import PromptEncoder
from clipserve.service.templates import DEFAULT_TEMPLATE
from clipserve.service.text_checks import is_blank
from clipserve.service.training_budget import TrainingBudget
from clipserve.store.classifiers import (
    ClassifierRecord,
    ClassifierStore,
    Examples,
    NewClassifier,
    Trained,
    quota_error,
)

T = TypeVar("T")
NAME_CHARS = 128  # the column's size
TEMPLATE_CHARS = 300  # the column's size
MAX_C = 1e6
RECHOOSE_C_GROWTH = (
    1.25  # an add re-runs the cross-validation once the examples grew by 25% since C was chosen
)


@dataclass(frozen=True)
class ClassifierLimits:
    max_labels: int = 100
    max_examples: int = 2000
    per_account: int = 100
    max_examples_per_request: int = 2048
    max_embedded_per_request: int = 2048  # texts (or images) one request may queue: its account's share
    max_label_chars: int = 300
    max_prompts: int = 16_384
    max_images: int = 2048  # per classify request
    trainings_per_account: int = 2  # creates and adds in progress at once
    training_cpu_s_per_minute: float = 20.0  # per account, a token bucket (0 = unlimited)
    train: TrainOptions = field(default_factory=TrainOptions)

    @classmethod
    def from_settings(cls, settings: Settings) -> ClassifierLimits:
        return cls(
            max_labels=settings.classifier_max_labels,
            max_examples=settings.classifier_max_examples,
            per_account=settings.classifiers_per_account,
            max_examples_per_request=settings.max_items_per_request,
            max_embedded_per_request=settings.queue_items_per_account,
            max_label_chars=min(settings.max_label_chars, TEMPLATE_CHARS),
            max_prompts=settings.max_prompts_per_request,
            max_images=settings.max_classify_images,
            trainings_per_account=settings.classifier_trainings_per_account,
            training_cpu_s_per_minute=settings.classifier_training_cpu_s_per_minute,
            train=TrainOptions(
                max_iter=settings.classifier_max_iter,
                cv_folds=settings.classifier_cv_folds,
                default_c=settings.classifier_default_c,
                cv_max_work=settings.classifier_cv_max_work,
            ),
        )


@dataclass(frozen=True)
class PlannedExamples:
    items: list[InputItem]
    label_indices: np.ndarray  # [n] int64

    def usage_bound(self) -> Usage:
        return usage_bound(self.items)


@dataclass(frozen=True)
class CreatePlan:
    name: str
    labels: list[str]
    examples: PlannedExamples
    zero_shot_prior: bool
    template: str | None
    c: float | None
    prompts: list[str]  # the prior's prompts (labels x templates); empty without a prior

    def usage_bound(self) -> Usage:
        bound = self.examples.usage_bound()
        return Usage(
            images=bound.images, tokens=bound.tokens + sum(text_token_bound(p) for p in self.prompts)
        )


@dataclass(frozen=True)
class Outcome:
    record: ClassifierRecord
    usage: Usage


class ClassifierService:
    def __init__(
        self,
        store: ClassifierStore,
        embeddings: EmbeddingService,
        prompts: PromptEncoder,
        logit_scale: float,
        store_pool: Executor,
        train_pool: FairExecutor,
        input_limits: InputLimits,
        limits: ClassifierLimits,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._embeddings = embeddings
        self._prompts = prompts
        self._logit_scale = logit_scale
        self._store_pool = store_pool
        self.train_pool = train_pool
        self._input_limits = input_limits
        self.limits = limits
        self.trainings: Counter[str] = (
            Counter()
        )  # creates and adds in progress, per account (event loop only)
        self.training_budget = TrainingBudget(limits.training_cpu_s_per_minute, clock)

    # planning (before metering: a bad request costs nothing)

    def plan_create(
        self, name: Any, labels: Any, raw_examples: Sequence[Any], zero_shot_prior: bool | None,
        template: str | None, c: float | None,
    ) -> CreatePlan:  # fmt: skip
        if not isinstance(name, str) or is_blank(name) or len(name) > NAME_CHARS or "\x00" in name:
            raise InvalidRequestError(f"'name' must be 1-{NAME_CHARS} characters, not blank", param="name")
        checked = self._check_labels(labels)
        prior = True if zero_shot_prior is None else zero_shot_prior  # every label is a non-blank phrase
        if c is not None and not (math.isfinite(c) and 0 < c <= MAX_C):
            raise InvalidRequestError(
                f"options.C must be a number in (0, {MAX_C:g}], or null", param="options.C"
            )
        prompts: list[str] = []
        if prior:
            if template is not None and "\x00" in template:  # PostgreSQL text cannot hold it
                raise InvalidRequestError("options.template holds a NUL character", param="options.template")
            prompts = bounded_prompts(
                checked, template, "options.template", default=DEFAULT_TEMPLATE,
                max_prompts=self.limits.max_prompts, max_template_chars=self.limits.max_label_chars,
                count_param="options.template",
            )  # fmt: skip
        elif template is not None:
            raise InvalidRequestError(
                "options.template builds the zero-shot prior; it has no use with zero_shot_prior false",
                param="options.template",
            )
        examples = self.plan_examples(raw_examples, checked, held=0)
        if not prior and not examples.items:
            raise InvalidRequestError(
                "without the zero-shot prior a classifier needs examples to learn from", param="examples"
            )
        if not prior:
            _check_two_labels(examples.label_indices)
        return CreatePlan(name, checked, examples, prior, template if prior else None, c, prompts)

    def plan_add(self, record: ClassifierRecord, raw: Sequence[Any]) -> PlannedExamples:
        """An add's examples; without the prior, the stored ones and these together must cover two labels."""
        planned = self.plan_examples(raw, record.labels, held=record.examples)
        if not record.zero_shot_prior:
            stored = np.repeat(np.arange(len(record.labels)), record.examples_per_label)
            _check_two_labels(np.concatenate([stored, planned.label_indices]))
        return planned

    def plan_examples(self, raw: Sequence[Any], labels: list[str], *, held: int) -> PlannedExamples:
        """Parse [{"input", "label"}] against `labels`; `held` examples are already stored."""
        limits = self.limits
        if not isinstance(raw, list):
            raise InvalidRequestError("'examples' must be a list of {input, label}", param="examples")
        if len(raw) > limits.max_examples_per_request:
            raise InvalidRequestError(
                f"at most {limits.max_examples_per_request} examples per request", param="examples"
            )
        if held + len(raw) > limits.max_examples:
            raise InvalidRequestError(
                f"a classifier holds at most {limits.max_examples} examples ({held} stored, {len(raw)} sent)",
                param="examples",
            )
        index = {label: i for i, label in enumerate(labels)}
        items: list[InputItem] = []
        label_indices: list[int] = []
        for i, example in enumerate(raw):
            param = f"examples[{i}]"
            if not isinstance(example, dict) or set(example) != {"input", "label"}:
                raise InvalidRequestError(f"{param} must be an object {{input, label}}", param=param)
            label = example["label"]
            if not isinstance(label, str) or label not in index:
                raise InvalidRequestError(
                    f"{param}.label {label!r} is not one of the classifier's labels", param=f"{param}.label"
                )
            items.append(parse_item(example["input"], f"{param}.input", self._input_limits))
            label_indices.append(index[label])
        for kind in (TextItem, ImageItem):
            if sum(isinstance(item, kind) for item in items) > limits.max_embedded_per_request:
                raise InvalidRequestError(
                    f"at most {limits.max_embedded_per_request} {kind.__name__[:-4].lower()}s per request on this "
                    "server (its queue's share per account)",
                    param="examples",
                )
        return PlannedExamples(items, np.asarray(label_indices, dtype=np.int64))

    def _check_labels(self, labels: Any) -> list[str]:
        limits = self.limits
        if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
            raise InvalidRequestError("'labels' must be a list of strings", param="labels")
        if len(labels) < 2:
            raise InvalidRequestError("a classifier needs at least two labels", param="labels")
        check_labels(
            labels, "labels", max_labels=limits.max_labels, max_chars=limits.max_label_chars, per="classifier"
        )
        return list(labels)

    # endpoints

    @contextmanager
    def _training_slot(self, owner: str) -> Iterator[None]:
        """One of the account's `trainings_per_account` slots, taken before anything is embedded: an add costs a
        few tokens but retrains on every example, so the training queue is bounded per account."""
        self.training_budget.check(owner)  # 429 while the account's training CPU is in debt
        if self.trainings[owner] >= self.limits.trainings_per_account:
            raise ServiceOverloadedError(
                f"this account already has {self.trainings[owner]} classifier trainings in progress; retry when "
                "one has finished",
                retry_after_s=2,
            )
        self.trainings[owner] += 1
        try:
            yield
        finally:
            self.trainings[owner] -= 1
            if not self.trainings[owner]:
                del self.trainings[owner]

    async def create(self, owner: str, plan: CreatePlan) -> Outcome:
        with self._training_slot(owner):
            return await self._create(owner, plan)

    async def add(self, record: ClassifierRecord, planned: PlannedExamples) -> Outcome:
        """Embed the new examples, retrain on all of them (warm-started), store if nobody changed it meanwhile."""
        with self._training_slot(record.owner):
            return await self._add(record, planned)

    async def _create(self, owner: str, plan: CreatePlan) -> Outcome:
        held = await self._run_store(lambda: self._store.count_for(owner))
        if held >= self.limits.per_account:  # cheap early refusal, before any work; the insert checks again
            raise quota_error(held)
        examples, usage = await self._embed(owner, plan.examples)
        prior_weights: np.ndarray | None = None
        if plan.zero_shot_prior:
            encoded = await self._prompts.encode(plan.prompts, account=owner)
            classifier = build_classifier(encoded.vectors, len(plan.labels))
            prior_weights = (self._logit_scale * classifier.astype(np.float64)).astype(np.float32)
            tokens = encoded.tokens_encoded + encoded.tokens_cached
            usage = Usage(usage.images, usage.tokens + tokens, encoded.tokens_cached)
        trained = await self._train(owner, examples, len(plan.labels), prior_weights, plan.c, start=None)
        new = NewClassifier(
            owner,
            plan.name,
            plan.labels,
            plan.template,
            plan.zero_shot_prior,
            prior_weights,
            plan.c is not None,
        )
        record = await self._run_store(
            lambda: self._store.create(new, trained, examples, max_for_owner=self.limits.per_account)
        )
        return Outcome(record, usage)

    async def _add(self, record: ClassifierRecord, planned: PlannedExamples) -> Outcome:
        new, usage = await self._embed(record.owner, planned)
        stored = await self._run_store(lambda: self._store.examples(record))
        every = Examples(
            np.concatenate([stored.label_indices, new.label_indices]),
            np.concatenate([stored.vectors, new.vectors]),
        )
        n = len(every.label_indices)
        trained_on = record.trained
        rechoose = not record.c_fixed and n >= RECHOOSE_C_GROWTH * trained_on.c_examples
        trained = await self._train(
            record.owner, every, len(record.labels), record.prior_weights, None if rechoose else trained_on.c,
            start=(trained_on.weights, trained_on.bias),
        )  # fmt: skip
        if not rechoose:  # C (and the accuracy that chose it) still stand
            trained = Trained(
                trained.weights, trained.bias, trained.c, trained_on.c_examples, trained.train_accuracy,
                trained_on.cv_accuracy,
            )  # fmt: skip
        updated = await self._run_store(
            lambda: self._store.add(record, trained, new, max_examples=self.limits.max_examples)
        )
        return Outcome(updated, usage)

    async def get(self, owner: str, classifier_id: str) -> ClassifierRecord:
        return await self._run_store(lambda: self._store.get(owner, classifier_id))

    async def list_classifiers(self, owner: str) -> list[ClassifierRecord]:
        return await self._run_store(lambda: self._store.list_for(owner))

    async def delete(self, owner: str, classifier_id: str) -> None:
        await self._run_store(lambda: self._store.delete(owner, classifier_id))

    def check_query(self, images: list[InputItem], top_k: int | None) -> None:
        """Refuse a bad classify-with-a-classifier request before it is admitted (and metered)."""
        if top_k is not None and top_k < 1:
            raise InvalidRequestError("top_k must be at least 1", param="top_k")
        if not images:
            raise InvalidRequestError("at least one image is required", param="input")
        if len(images) > self.limits.max_images:
            raise InvalidRequestError(f"at most {self.limits.max_images} images per request", param="input")
        if any(not isinstance(item, ImageItem) for item in images):
            raise InvalidRequestError("classify takes images; use /v1/rank to compare texts", param="input")

    async def classify(
        self,
        owner: str,
        classifier_id: str,
        images: list[InputItem],
        top_k: int | None,
        *,
        tenant: str | None = None,
    ) -> ClassifyResult:
        """softmax(W x + b) per image, best first; only the images are encoded (and charged). `tenant` is whose
        turn in the model queues the images wait for (default the owner; a batch's background tenant)."""
        self.check_query(images, top_k)
        record = await self.get(owner, classifier_id)
        embedded = await self._embeddings.embed(images, account=tenant or owner)
        trained = record.trained
        logits = embedded.vectors.astype(np.float64) @ trained.weights.astype(np.float64).T
        scores = softmax(logits + trained.bias.astype(np.float64)).astype(np.float32)
        labels = record.labels
        k = min(top_k or len(labels), len(labels))
        predictions = []
        for row in scores:
            order = np.argsort(-row, kind="stable")[:k]
            predictions.append([LabelScore(labels[i], float(row[i])) for i in order])
        return ClassifyResult(predictions, 0, 0, embedded.image_count, embedded.timings)

    # internals

    async def _embed(self, owner: str, planned: PlannedExamples) -> tuple[Examples, Usage]:
        if not planned.items:
            return Examples(
                planned.label_indices, np.zeros((0, self._embeddings.embed_dim), np.float32)
            ), Usage()
        result = await self._embeddings.embed(planned.items, account=owner)
        return Examples(planned.label_indices, result.vectors), Usage(result.image_count, result.text_tokens)

    async def _train(
        self, owner: str, examples: Examples, n_labels: int, prior_weights: np.ndarray | None, c: float | None,
        start: tuple[np.ndarray, np.ndarray] | None,
    ) -> Trained:  # fmt: skip
        prior = None if prior_weights is None else Prior(prior_weights.astype(np.float64))

        cpu_s = [0.0]  # this training's thread CPU, debited from the account's budget once it has run

        def train() -> FittedProbe:
            began = time.thread_time()
            try:
                return fit(
                    examples.vectors, examples.label_indices, n_labels, prior=prior, C=c,
                    options=self.limits.train, start=start,
                )  # fmt: skip
            finally:
                cpu_s[0] = time.thread_time() - began

        try:
            probe = await asyncio.get_running_loop().run_in_executor(self.train_pool.for_tenant(owner), train)
        finally:
            self.training_budget.debit(owner, cpu_s[0])
        return Trained(
            probe.weights.astype(np.float32), probe.bias.astype(np.float32), probe.C,
            len(examples.label_indices), probe.train_accuracy, probe.cv_accuracy,
        )  # fmt: skip

    async def _run_store(self, call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._store_pool, call)


def _check_two_labels(label_indices: np.ndarray) -> None:
    """Without the prior a probe of one label answers that label whatever the input: a 400."""
    if len(np.unique(label_indices)) < 2:
        raise InvalidRequestError(
            "without the zero-shot prior the examples must cover at least two labels (a classifier trained on "
            "one label always answers it)",
            param="examples",
        )
