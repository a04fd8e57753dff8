from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clipserve.eval.datasets import DatasetError, load_classnames, load_retrieval, load_templates
from clipserve.eval.metrics import per_class_recall, retrieval_recall, topk_accuracy
from clipserve.service.classify import build_classifier, label_scores


def test_topk_accuracy_counts_the_target_in_the_top_k() -> None:
    scores = np.array([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5], [0.1, 0.6, 0.3]])
    targets = np.array([0, 1, 2])
    assert topk_accuracy(scores, targets, (1, 2, 3)) == {1: pytest.approx(1 / 3), 2: 1.0, 3: 1.0}


def test_per_class_recall_leaves_empty_classes_out() -> None:
    recall = per_class_recall(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), 3)
    assert recall[:2].tolist() == [1.0, pytest.approx(2 / 3)]
    assert np.isnan(recall[2])


def test_retrieval_recall_counts_any_positive() -> None:
    # two images; captions 0,1 belong to image 0 and caption 2 to image 1
    images = np.eye(2)
    texts = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    recall = retrieval_recall(texts, images, np.array([0, 0, 1]), (1, 2))
    assert recall["image_retrieval_recall@1"] == pytest.approx(2 / 3)  # caption 1 finds image 1 first
    # image 0's best caption is its own; image 1 ties captions 1 and 2 and the first (not its own) wins
    assert recall["text_retrieval_recall@1"] == 0.5
    assert recall["text_retrieval_recall@2"] == 1.0
    assert recall["image_retrieval_recall@2"] == 1.0


def test_coco_and_karpathy_json_read_the_same_pairs(tmp_path: Path) -> None:
    coco = {
        "images": [{"id": 7, "file_name": "a.jpg"}, {"id": 9, "file_name": "b.jpg"}],
        "annotations": [
            {"image_id": 7, "caption": "x"},
            {"image_id": 9, "caption": "y"},
            {"image_id": 7, "caption": "z"},
        ],
    }
    karpathy = {
        "images": [
            {"filename": "a.jpg", "sentences": [{"raw": "x"}, {"raw": "z"}]},
            {"filename": "b.jpg", "sentences": [{"raw": "y"}]},
        ]
    }
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    (tmp_path / "karpathy.json").write_text(json.dumps(karpathy))
    a = load_retrieval(tmp_path / "coco.json")
    b = load_retrieval(tmp_path / "karpathy.json")
    assert [p.name for p in a.images] == [p.name for p in b.images] == ["a.jpg", "b.jpg"]
    assert sorted(zip(a.captions, a.caption_image, strict=True)) == sorted(
        zip(b.captions, b.caption_image, strict=True)
    )


def test_classnames_and_templates() -> None:
    assert load_classnames(None, ["golden_retriever", "cat"]) == ["golden retriever", "cat"]
    assert load_classnames("imagenet", [f"n{i:08d}" for i in range(1000)])[0] == "tench"
    with pytest.raises(DatasetError):
        load_classnames("imagenet", ["a", "b"])
    assert len(load_templates("openai-imagenet")) == 80
    assert load_templates("a {} photo")[0]("cat") == "a cat photo"


def test_classifier_is_the_renormalised_mean_of_normalised_prompts() -> None:
    prompts = np.array(
        [[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]], dtype=np.float32
    )  # 2 labels x 2 templates
    classifier = build_classifier(prompts, 2)
    np.testing.assert_allclose(classifier, [[2**-0.5, 2**-0.5], [1.0, 0.0]], atol=1e-7)
    probabilities = label_scores(
        np.array([[1.0, 0.0]], dtype=np.float32), classifier, 100.0, multi_label=False
    )
    assert probabilities.sum() == pytest.approx(1.0)
    assert probabilities[0, 1] > probabilities[0, 0]
    cosines = label_scores(np.array([[1.0, 0.0]], dtype=np.float32), classifier, 100.0, multi_label=True)
    np.testing.assert_allclose(cosines, [[2**-0.5, 1.0]], atol=1e-6)
