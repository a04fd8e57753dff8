"""The classifier store on SQLite and a real PostgreSQL (migration 0005): weights and examples round-trip
bit for bit, owners are isolated, adds are optimistic (a stale add is a 409, never a lost update), the quota
holds, and a delete takes the examples with it (ON DELETE CASCADE)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select

from clipserve.errors import ClassifierQuotaError, ConflictError, InvalidRequestError, NotFoundError
from clipserve.store.classifiers import ClassifierStore, Examples, NewClassifier, Trained
from clipserve.store.schema import classifier_examples

K, D = 3, 512


def _trained(seed: int, examples: int) -> Trained:
    rng = np.random.default_rng(seed)
    return Trained(
        rng.standard_normal((K, D)).astype(np.float32), rng.standard_normal(K).astype(np.float32), 0.5, examples,
        0.75, None,
    )  # fmt: skip


def _examples(seed: int, labels: list[int]) -> Examples:
    vectors = np.random.default_rng(seed).standard_normal((len(labels), D)).astype(np.float32)
    return Examples(np.asarray(labels, dtype=np.int64), vectors)


def _new(owner: str, prior: bool = True) -> NewClassifier:
    weights = np.random.default_rng(7).standard_normal((K, D)).astype(np.float32) if prior else None
    return NewClassifier(
        owner, "defects", ["ok", "scratch", "dent"], "a photo of a {}.", prior, weights, False
    )


def _example_rows(store: ClassifierStore) -> int:
    with store.db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(classifier_examples)).scalar_one())


def test_a_classifier_round_trips_exactly(database: Any) -> None:
    store = ClassifierStore(database)
    trained, examples = _trained(1, 4), _examples(2, [0, 2, 2, 1])
    record = store.create(_new("account:1"), trained, examples, max_for_owner=10)
    again = ClassifierStore(database).get("account:1", record.id)
    assert again.labels == ["ok", "scratch", "dent"]
    assert again.template == "a photo of a {}."
    assert again.version == 1
    assert again.examples_per_label == [1, 1, 2]
    np.testing.assert_array_equal(again.trained.weights, trained.weights)
    np.testing.assert_array_equal(again.trained.bias, trained.bias)
    assert again.prior_weights is not None
    np.testing.assert_array_equal(again.prior_weights, _new("x").prior_weights)
    assert (again.trained.c, again.trained.train_accuracy, again.trained.cv_accuracy) == (0.5, 0.75, None)
    stored = store.examples(again)
    np.testing.assert_array_equal(stored.label_indices, examples.label_indices)
    np.testing.assert_array_equal(stored.vectors, examples.vectors)
    without_prior = store.create(_new("account:1", prior=False), trained, examples, max_for_owner=10)
    assert store.get("account:1", without_prior.id).prior_weights is None
    assert [r.id for r in store.list_for("account:1")] == [without_prior.id, record.id]  # newest first


def test_another_owner_sees_nothing(database: Any) -> None:
    store = ClassifierStore(database)
    record = store.create(_new("account:1"), _trained(1, 0), _examples(2, []), max_for_owner=10)
    with pytest.raises(NotFoundError):
        store.get("account:2", record.id)
    with pytest.raises(NotFoundError):
        store.delete("account:2", record.id)
    with pytest.raises(NotFoundError):
        store.get("account:1", "clf_not-hex")
    assert store.list_for("account:2") == []
    assert store.get("account:1", record.id).id == record.id


def test_a_stale_add_is_refused_and_loses_nothing(database: Any) -> None:
    store = ClassifierStore(database)
    record = store.create(_new("account:1"), _trained(1, 2), _examples(2, [0, 1]), max_for_owner=10)
    first = store.add(record, _trained(3, 3), _examples(4, [2]), max_examples=100)
    assert first.version == 2
    assert first.examples_per_label == [1, 1, 1]
    with pytest.raises(ConflictError):  # trained on version 1, which is gone
        store.add(record, _trained(5, 3), _examples(6, [0]), max_examples=100)
    second = store.add(first, _trained(5, 4), _examples(6, [0]), max_examples=100)
    assert second.version == 3
    assert second.examples_per_label == [2, 1, 1]
    np.testing.assert_array_equal(second.trained.weights, _trained(5, 4).weights)
    stored = store.examples(second)
    np.testing.assert_array_equal(stored.label_indices, [0, 1, 2, 0])
    np.testing.assert_array_equal(stored.vectors[3], _examples(6, [0]).vectors[0])
    with pytest.raises(InvalidRequestError):
        store.add(second, _trained(5, 4), _examples(8, [0]), max_examples=4)


def test_quota_and_delete_cascade(database: Any) -> None:
    store = ClassifierStore(database)
    kept = store.create(_new("account:1"), _trained(1, 2), _examples(2, [0, 1]), max_for_owner=2)
    doomed = store.create(_new("account:1"), _trained(1, 3), _examples(3, [0, 1, 2]), max_for_owner=2)
    with pytest.raises(ClassifierQuotaError):
        store.create(_new("account:1"), _trained(1, 0), _examples(2, []), max_for_owner=2)
    assert _example_rows(store) == 5
    store.delete("account:1", doomed.id)
    assert _example_rows(store) == 2  # the deleted classifier's examples went with it
    with pytest.raises(NotFoundError):
        store.get("account:1", doomed.id)
    with pytest.raises(NotFoundError):
        store.delete("account:1", doomed.id)
    assert [r.id for r in store.list_for("account:1")] == [kept.id]
    store.create(_new("account:1"), _trained(1, 0), _examples(2, []), max_for_owner=2)  # room again
