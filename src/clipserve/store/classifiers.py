"""Custom classifiers' storage: weights, prior and examples, on SQLite or PostgreSQL.

The rows are the only state: any replica (or the same one after a restart) classifies with what is stored. An add
is optimistic: it trains on the state it read at `version`, then writes only if the row is still at that
version (else ConflictError, 409), so two concurrent adds never lose each other's examples.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from sqlalchemy import Connection, delete, func, insert, select, text, update

from clipserve.errors import ClassifierQuotaError, ConflictError, InvalidRequestError, NotFoundError
from clipserve.store.database import Database
from clipserve.store.schema import classifier_examples, classifiers

_ID = re.compile(r"clf_[0-9a-f]{32}")
_F32 = np.dtype("<f4")


def new_classifier_id() -> str:
    return f"clf_{uuid.uuid4().hex}"


def not_found(classifier_id: str) -> NotFoundError:
    return NotFoundError(f"no classifier {classifier_id!r}", code="classifier_not_found")


def quota_error(held: int) -> ClassifierQuotaError:
    return ClassifierQuotaError(
        f"this account holds {held} classifiers, its quota; delete one first", param="name"
    )


@dataclass(frozen=True)
class Trained:
    """What a training produced: the parameters and how they were chosen."""

    weights: np.ndarray  # [K, dim] float32
    bias: np.ndarray  # [K] float32
    c: float
    c_examples: int  # examples when C was chosen
    train_accuracy: float | None
    cv_accuracy: float | None


@dataclass(frozen=True)
class ClassifierRecord:
    id: str
    owner: str
    name: str
    labels: list[str]
    template: str | None
    zero_shot_prior: bool
    prior_weights: np.ndarray | None
    trained: Trained
    c_fixed: bool
    created_at: datetime
    updated_at: datetime
    version: int
    examples_per_label: list[int]  # per label index

    @property
    def examples(self) -> int:
        return sum(self.examples_per_label)


@dataclass(frozen=True)
class NewClassifier:
    owner: str
    name: str
    labels: list[str]
    template: str | None
    zero_shot_prior: bool
    prior_weights: np.ndarray | None
    c_fixed: bool


@dataclass(frozen=True)
class Examples:
    label_indices: np.ndarray  # [n] int
    vectors: np.ndarray  # [n, dim] float32


def _blob(array: np.ndarray) -> bytes:
    return np.ascontiguousarray(array, dtype=_F32).tobytes()


def _array(blob: bytes, rows: int | None = None) -> np.ndarray:
    flat = np.frombuffer(blob, dtype=_F32).astype(np.float32)
    return flat if rows is None else flat.reshape(rows, -1)


class ClassifierStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(
        self, new: NewClassifier, trained: Trained, examples: Examples, *, max_for_owner: int
    ) -> ClassifierRecord:
        """Insert the classifier and its examples in one transaction; the per-owner quota is checked in it."""
        classifier_id = new_classifier_id()
        now = datetime.now(UTC)
        with self.db.write() as conn:
            if not self.db.is_sqlite:  # SQLite's BEGIN IMMEDIATE already serializes writers
                conn.execute(
                    text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"classifiers:{new.owner}"}
                )
            held = self._count(conn, new.owner)
            if held >= max_for_owner:
                raise quota_error(held)
            conn.execute(
                insert(classifiers).values(
                    id=classifier_id, owner=new.owner, name=new.name, labels_json=json.dumps(new.labels),
                    template=new.template, zero_shot_prior=new.zero_shot_prior,
                    prior_weights=None if new.prior_weights is None else _blob(new.prior_weights),
                    weights=_blob(trained.weights), bias=_blob(trained.bias), c=trained.c, c_fixed=new.c_fixed,
                    c_examples=trained.c_examples, train_accuracy=trained.train_accuracy,
                    cv_accuracy=trained.cv_accuracy, created_at=now, updated_at=now, version=1,
                )
            )  # fmt: skip
            self._insert_examples(conn, classifier_id, 0, examples)
        return self.get(new.owner, classifier_id)

    def add(
        self, record: ClassifierRecord, trained: Trained, examples: Examples, *, max_examples: int
    ) -> ClassifierRecord:
        """Store an add trained on `record`'s state: only if nobody changed it since (ConflictError otherwise)."""
        with self.db.write() as conn:
            stored = self._example_count(conn, record.id)
            if stored + len(examples.label_indices) > max_examples:
                raise InvalidRequestError(
                    f"the classifier holds {stored} examples; with {len(examples.label_indices)} more it would "
                    f"pass the limit of {max_examples}",
                    param="examples",
                )
            changed = conn.execute(
                update(classifiers)
                .where(
                    classifiers.c.id == record.id,
                    classifiers.c.owner == record.owner,
                    classifiers.c.version == record.version,
                )
                .values(
                    weights=_blob(trained.weights), bias=_blob(trained.bias), c=trained.c,
                    c_examples=trained.c_examples, train_accuracy=trained.train_accuracy,
                    cv_accuracy=trained.cv_accuracy, updated_at=datetime.now(UTC), version=record.version + 1,
                )
            ).rowcount  # fmt: skip
            if not changed:
                raise ConflictError(
                    f"classifier {record.id!r} changed (or was deleted) while this add trained; send it again",
                    param="examples",
                    code="classifier_changed",
                )
            self._insert_examples(conn, record.id, stored, examples)
        return self.get(record.owner, record.id)

    def get(self, owner: str, classifier_id: str) -> ClassifierRecord:
        """The caller's classifier; another owner's, or a malformed id, is reported exactly as a missing one."""
        if not isinstance(classifier_id, str) or not _ID.fullmatch(classifier_id):
            raise not_found(str(classifier_id)[:64])
        with self.db.read(snapshot=True) as conn:
            row = (
                conn.execute(
                    select(classifiers).where(classifiers.c.id == classifier_id, classifiers.c.owner == owner)
                )
                .mappings()
                .first()
            )
            if row is None:
                raise not_found(classifier_id)
            counts = self._counts(conn, [classifier_id]).get(classifier_id, {})
        return _record(row, counts)

    def list_for(self, owner: str) -> list[ClassifierRecord]:
        """Newest first."""
        with self.db.read(snapshot=True) as conn:
            rows = list(
                conn.execute(
                    select(classifiers)
                    .where(classifiers.c.owner == owner)
                    .order_by(classifiers.c.created_at.desc(), classifiers.c.id.desc())
                ).mappings()
            )
            counts = self._counts(conn, [row["id"] for row in rows])
        return [_record(row, counts.get(row["id"], {})) for row in rows]

    def examples(self, record: ClassifierRecord) -> Examples:
        """The examples stored with `record` (in the order they were added)."""
        with self.db.read() as conn:
            rows = conn.execute(
                select(classifier_examples.c.label_index, classifier_examples.c.vector)
                .where(classifier_examples.c.classifier_id == record.id)
                .order_by(classifier_examples.c.seq)
            ).all()
        dim = record.trained.weights.shape[1]
        if not rows:
            return Examples(np.zeros(0, dtype=np.int64), np.zeros((0, dim), dtype=np.float32))
        return Examples(
            np.array([row.label_index for row in rows], dtype=np.int64),
            np.stack([_array(row.vector) for row in rows]),
        )

    def delete(self, owner: str, classifier_id: str) -> None:
        """Delete the classifier and (cascade) its examples; NotFoundError when it is not the owner's."""
        if not _ID.fullmatch(classifier_id):
            raise not_found(classifier_id[:64])
        with self.db.write() as conn:  # the examples go with it (ON DELETE CASCADE)
            deleted = conn.execute(
                delete(classifiers).where(classifiers.c.id == classifier_id, classifiers.c.owner == owner)
            ).rowcount
        if not deleted:
            raise not_found(classifier_id)

    def count_for(self, owner: str) -> int:
        with self.db.read() as conn:
            return self._count(conn, owner)

    @staticmethod
    def _count(conn: Connection, owner: str) -> int:
        return int(
            conn.execute(
                select(func.count()).select_from(classifiers).where(classifiers.c.owner == owner)
            ).scalar_one()
        )

    @staticmethod
    def _example_count(conn: Connection, classifier_id: str) -> int:
        return int(
            conn.execute(
                select(func.count())
                .select_from(classifier_examples)
                .where(classifier_examples.c.classifier_id == classifier_id)
            ).scalar_one()
        )

    @staticmethod
    def _counts(conn: Connection, ids: list[str]) -> dict[str, dict[int, int]]:
        if not ids:
            return {}
        rows = conn.execute(
            select(classifier_examples.c.classifier_id, classifier_examples.c.label_index, func.count())
            .where(classifier_examples.c.classifier_id.in_(ids))
            .group_by(classifier_examples.c.classifier_id, classifier_examples.c.label_index)
        ).all()
        counts: dict[str, dict[int, int]] = {}
        for classifier_id, label_index, count in rows:
            counts.setdefault(classifier_id, {})[int(label_index)] = int(count)
        return counts

    @staticmethod
    def _insert_examples(conn: Connection, classifier_id: str, first_seq: int, examples: Examples) -> None:
        if not len(examples.label_indices):
            return
        conn.execute(
            insert(classifier_examples),
            [
                {
                    "classifier_id": classifier_id,
                    "seq": first_seq + i,
                    "label_index": int(label),
                    "vector": _blob(vector),
                }
                for i, (label, vector) in enumerate(
                    zip(examples.label_indices, examples.vectors, strict=True)
                )
            ],
        )


def _record(row: object, counts: dict[int, int]) -> ClassifierRecord:
    r = dict(row)  # type: ignore[call-overload]
    labels: list[str] = json.loads(r["labels_json"])
    k = len(labels)
    prior = r["prior_weights"]
    return ClassifierRecord(
        id=r["id"], owner=r["owner"], name=r["name"], labels=labels, template=r["template"],
        zero_shot_prior=bool(r["zero_shot_prior"]),
        prior_weights=None if prior is None else _array(prior, k),
        trained=Trained(
            weights=_array(r["weights"], k), bias=_array(r["bias"]), c=float(r["c"]),
            c_examples=int(r["c_examples"]), train_accuracy=r["train_accuracy"], cv_accuracy=r["cv_accuracy"],
        ),
        c_fixed=bool(r["c_fixed"]), created_at=r["created_at"], updated_at=r["updated_at"],
        version=int(r["version"]), examples_per_label=[counts.get(i, 0) for i in range(k)],
    )  # fmt: skip
