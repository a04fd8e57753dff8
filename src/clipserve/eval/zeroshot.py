"""`clipserve eval zeroshot`: top-1/top-5 accuracy and per-class recall, CLIP_benchmark's protocol."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from clipserve.eval.datasets import ZeroShotDataset
from clipserve.eval.embedders import Embedder
from clipserve.eval.metrics import per_class_recall, topk_accuracy
from clipserve.service.classify import build_classifier
from clipserve.service.templates import PromptMaker, prompts_for


@dataclass(frozen=True)
class ZeroShotReport:
    samples: int
    classes: int
    templates: int
    top1: float
    top5: float
    mean_per_class_recall: float
    per_class: list[dict[str, Any]]  # {class, name, samples, recall}

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        width = max(12, *(len(str(row["name"])) for row in self.per_class))
        lines = [f"{'class':<{width}} {'samples':>8} {'top-1':>7}"]
        lines += [
            f"{row['name']:<{width}} {row['samples']:>8} {row['recall']:>7.2%}" for row in self.per_class
        ]
        lines.append(
            f"\n{self.samples} images, {self.classes} classes, {self.templates} templates: "
            f"top-1 {self.top1:.2%}  top-5 {self.top5:.2%}  mean per-class recall {self.mean_per_class_recall:.2%}"
        )
        return "\n".join(lines)


def evaluate_zeroshot(
    dataset: ZeroShotDataset, classnames: list[str], templates: list[PromptMaker], embedder: Embedder
) -> ZeroShotReport:
    prompts = prompts_for(classnames, templates)
    classifier = build_classifier(embedder.embed_texts(prompts), len(classnames))
    images = embedder.embed_images(dataset.paths)
    scores = images @ classifier.T
    targets = np.asarray(dataset.targets)
    accuracy = topk_accuracy(scores, targets, (1, min(5, len(classnames))))
    recall = per_class_recall(scores.argmax(axis=1), targets, len(classnames))
    per_class = [
        {"class": key, "name": name, "samples": int((targets == i).sum()), "recall": float(recall[i])}
        for i, (key, name) in enumerate(zip(dataset.class_keys, classnames, strict=True))
    ]
    return ZeroShotReport(
        samples=len(targets),
        classes=len(classnames),
        templates=len(templates),
        top1=accuracy[1],
        top5=accuracy[min(5, len(classnames))],
        mean_per_class_recall=float(np.nanmean(recall)),
        per_class=per_class,
    )
