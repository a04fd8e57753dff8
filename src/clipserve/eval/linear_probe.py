"""`clipserve eval linear-probe`: CLIP_benchmark's linear-probe protocol on two ImageFolder directories.

Features of the train and test images; the train set split 80/20 (stratified, seeded) into train and
validation; C chosen on the validation split over a log grid; a refit on train + validation with that C; top-1,
top-5 and per-class accuracy on the test set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from clipserve.eval.datasets import DatasetError, ZeroShotDataset
from clipserve.eval.embedders import Embedder
from clipserve.eval.metrics import per_class_recall, topk_accuracy
from clipserve.service.classify import build_classifier
from clipserve.service.linear_probe import (
    FittedProbe,
    Prior,
    TrainOptions,
    fit,
    predict_proba,
    stratified_folds,
)
from clipserve.service.templates import PromptMaker, prompts_for

VALIDATION_FOLDS = 5  # one fold of five: the 80/20 split


@dataclass(frozen=True)
class ZeroShotPrior:
    classnames: list[str]
    templates: list[PromptMaker]
    logit_scale: float


@dataclass(frozen=True)
class LinearProbeReport:
    train_samples: int
    validation_samples: int
    test_samples: int
    classes: int
    zero_shot_prior: bool
    C: float
    validation_accuracy: dict[str, float]  # per grid C (as text, for JSON)
    top1: float
    top5: float
    mean_per_class_recall: float
    test_log_loss: float  # mean -log p(true class): compares the fitted probabilities, not just the argmax
    per_class: list[dict[str, Any]]  # {class, samples, recall}

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        width = max(12, *(len(str(row["class"])) for row in self.per_class))
        lines = [f"{'class':<{width}} {'samples':>8} {'top-1':>7}"]
        lines += [
            f"{row['class']:<{width}} {row['samples']:>8} {row['recall']:>7.2%}" for row in self.per_class
        ]
        grid = "  ".join(f"C={c}: {a:.2%}" for c, a in self.validation_accuracy.items())
        lines.append(f"\nvalidation accuracy: {grid}")
        lines.append(
            f"{self.train_samples} + {self.validation_samples} train/validation images, {self.test_samples} "
            f"test images, {self.classes} classes, C={self.C:g}"
            f"{' (zero-shot prior)' if self.zero_shot_prior else ''}: top-1 {self.top1:.2%}  "
            f"top-5 {self.top5:.2%}  mean per-class recall {self.mean_per_class_recall:.2%}"
        )
        return "\n".join(lines)


def choose_c_on_validation(
    X: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    prior: Prior | None,
    options: TrainOptions,
) -> tuple[float, dict[float, float], np.ndarray]:
    """(C, validation accuracy per grid C, validation indices): one stratified fold of five held out."""
    train, validation = stratified_folds(y, VALIDATION_FOLDS, options.seed)[0]
    if len(validation) == 0 or len(train) == 0:
        raise DatasetError("the train set is too small to hold out a validation split")
    scores: dict[float, tuple[float, float]] = {}
    start: tuple[np.ndarray, np.ndarray] | None = None
    for C in sorted(options.c_grid):
        probe = fit(X[train], y[train], n_classes, prior=prior, C=C, options=options, start=start)
        start = (probe.weights, probe.bias)
        p = predict_proba(probe, X[validation])
        accuracy = float((p.argmax(axis=1) == y[validation]).mean())
        loss = float(-np.log(np.clip(p[np.arange(len(validation)), y[validation]], 1e-300, None)).mean())
        scores[C] = (accuracy, loss)
    best_accuracy = max(accuracy for accuracy, _ in scores.values())
    tied = [C for C, (accuracy, _) in scores.items() if accuracy >= best_accuracy - 1e-12]
    best = min(tied, key=lambda C: (scores[C][1], C))
    return best, {C: accuracy for C, (accuracy, _) in scores.items()}, validation


def evaluate_linear_probe(
    train: ZeroShotDataset,
    test: ZeroShotDataset,
    embedder: Embedder,
    options: TrainOptions,
    zero_shot_prior: ZeroShotPrior | None = None,
) -> LinearProbeReport:
    if train.class_keys != test.class_keys:
        raise DatasetError(
            f"train and test class folders differ: {_differ(train.class_keys, test.class_keys)}"
        )
    n_classes = len(train.class_keys)
    if n_classes < 2:
        raise DatasetError("a linear probe needs at least two classes")
    prior = None
    if zero_shot_prior is not None:
        prompts = prompts_for(zero_shot_prior.classnames, zero_shot_prior.templates)
        classifier = build_classifier(embedder.embed_texts(prompts), n_classes).astype(np.float64)
        prior = Prior(zero_shot_prior.logit_scale * classifier)
    X_train = embedder.embed_images(train.paths).astype(np.float64)
    y_train = np.asarray(train.targets, dtype=np.int64)
    X_test = embedder.embed_images(test.paths).astype(np.float64)
    y_test = np.asarray(test.targets, dtype=np.int64)

    C, validation_scores, validation = choose_c_on_validation(X_train, y_train, n_classes, prior, options)
    probe: FittedProbe = fit(X_train, y_train, n_classes, prior=prior, C=C, options=options)
    scores = predict_proba(probe, X_test)
    accuracy = topk_accuracy(scores, y_test, (1, min(5, n_classes)))
    recall = per_class_recall(scores.argmax(axis=1), y_test, n_classes)
    per_class = [
        {"class": key, "samples": int((y_test == i).sum()), "recall": float(recall[i])}
        for i, key in enumerate(test.class_keys)
    ]
    return LinearProbeReport(
        train_samples=len(y_train) - len(validation),
        validation_samples=len(validation),
        test_samples=len(y_test),
        classes=n_classes,
        zero_shot_prior=prior is not None,
        C=C,
        validation_accuracy={f"{c:g}": a for c, a in validation_scores.items()},
        top1=accuracy[1],
        top5=accuracy[min(5, n_classes)],
        mean_per_class_recall=float(np.nanmean(recall)),
        test_log_loss=float(-np.log(np.clip(scores[np.arange(len(y_test)), y_test], 1e-300, None)).mean()),
        per_class=per_class,
    )


def _differ(a: Sequence[str], b: Sequence[str]) -> str:
    only_train = sorted(set(a) - set(b))
    only_test = sorted(set(b) - set(a))
    return f"only in train {only_train[:5]}, only in test {only_test[:5]}"
