"""The embedded vector store: rows in the SQL database (SQLite in the data dir by default) are the truth,
an in-memory index per collection answers searches. A write is one transaction: acknowledged means on disk,
and a crash mid-write leaves nothing of it. Indexes load lazily and reload when another process (the CLI
importer, another replica on Postgres) has changed the collection: every write bumps its version."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import Connection, delete, func, insert, select, update

from clipserve.errors import NotFoundError
from clipserve.store.database import Database
from clipserve.store.schema import collection_items, vector_collections
from clipserve.vectors.base import DIMENSIONS, Hit, StoredItem
from clipserve.vectors.filters import Filter, matches
from clipserve.vectors.memory_index import AnnSettings, MemoryIndex
from clipserve.vectors.values import check_items

_UPSERT_CHUNK = 500


class _Loaded:
    def __init__(self, index: MemoryIndex, version: int) -> None:
        self.index = index
        self.version = version
        self.lock = threading.Lock()


class EmbeddedVectorStore:
    name = "embedded"

    def __init__(self, db: Database, ann: AnnSettings | None = None) -> None:
        self._db = db
        self._ann = ann or AnnSettings()
        self._loaded: dict[str, _Loaded] = {}
        self._loading = threading.Lock()

    def create_collection(self, key: str) -> None:
        with self._db.write() as conn:
            conn.execute(insert(vector_collections).values(key=key, version=0))

    def drop_collection(self, key: str) -> None:
        with self._db.write() as conn:
            conn.execute(delete(collection_items).where(collection_items.c.collection_key == key))
            conn.execute(delete(vector_collections).where(vector_collections.c.key == key))
        self._loaded.pop(key, None)

    def has_collection(self, key: str) -> bool:
        return self._version(key) is not None

    def upsert(self, key: str, items: list[StoredItem]) -> None:
        if not items:
            return
        ids = [item.id for item in items]
        check_items(ids, [item.metadata for item in items])
        now = datetime.now(UTC)
        with self._db.write() as conn:
            self._lock(conn, key)
            self._delete_rows(conn, key, ids)
            rows = [
                {
                    "collection_key": key,
                    "item_id": item.id,
                    "vector": np.asarray(item.vector, dtype="<f4").tobytes(),
                    "metadata_json": json.dumps(
                        item.metadata, ensure_ascii=False, separators=(",", ":"), allow_nan=False
                    ),
                    "updated_at": now,
                }
                for item in items
            ]
            for start in range(0, len(rows), _UPSERT_CHUNK):
                conn.execute(insert(collection_items), rows[start : start + _UPSERT_CHUNK])
            version = self._bump(conn, key)
        vectors = np.stack([np.asarray(item.vector, dtype=np.float32) for item in items])
        self._apply(key, version, lambda index: index.upsert(ids, vectors, [item.metadata for item in items]))

    def get(self, key: str, ids: list[str]) -> list[StoredItem]:
        with self._db.read() as conn:
            rows = conn.execute(
                select(
                    collection_items.c.item_id, collection_items.c.vector, collection_items.c.metadata_json
                ).where(collection_items.c.collection_key == key, collection_items.c.item_id.in_(ids))
            ).all()
        found = {row[0]: StoredItem(row[0], _vector(row[1]), json.loads(row[2])) for row in rows}
        return [found[item_id] for item_id in ids if item_id in found]

    def delete(self, key: str, ids: list[str]) -> int:
        with self._db.write() as conn:
            self._lock(conn, key)
            deleted = self._delete_rows(conn, key, ids)
            if not deleted:
                return 0
            version = self._bump(conn, key)
        self._apply(key, version, lambda index: index.delete(ids))
        return deleted

    def count(self, key: str) -> int:
        with self._db.read() as conn:
            return int(
                conn.execute(
                    select(func.count())
                    .select_from(collection_items)
                    .where(collection_items.c.collection_key == key)
                ).scalar_one()
            )

    def search(
        self,
        key: str,
        vector: np.ndarray,
        top_k: int,
        where: Filter | None = None,
        *,
        exclude_id: str | None = None,
        with_vectors: bool = False,
    ) -> list[Hit]:
        loaded = self._current(key)
        with loaded.lock:
            index = loaded.index
            excluded = index.row_of(exclude_id) if exclude_id is not None else None

            def accept(row: int) -> bool:
                return row != excluded and matches(where, index.row(row)[2])

            needs_check = where is not None or excluded is not None
            found = index.search(np.asarray(vector, dtype=np.float32), top_k, accept if needs_check else None)
            hits = []
            for row, score in found:
                item_id, row_vector, metadata = index.row(row)
                hits.append(Hit(item_id, score, dict(metadata), row_vector.copy() if with_vectors else None))
        return hits

    def uses_ann(self, key: str) -> bool:
        return self._current(key).index.uses_ann

    def close(self) -> None:
        self._loaded.clear()

    # internals

    @staticmethod
    def _lock(conn: Connection, key: str) -> None:
        """Serialize writers of one collection (Postgres: the row lock; SQLite: already one writer), so two
        upserts of one id never both insert it; a missing collection is a 404."""
        found = conn.execute(
            select(vector_collections.c.key).where(vector_collections.c.key == key).with_for_update()
        ).first()
        if found is None:
            raise NotFoundError("this collection no longer exists", code="collection_not_found")

    def _delete_rows(self, conn: Connection, key: str, ids: list[str]) -> int:
        deleted = 0
        for start in range(0, len(ids), _UPSERT_CHUNK):
            result = conn.execute(
                delete(collection_items).where(
                    collection_items.c.collection_key == key,
                    collection_items.c.item_id.in_(ids[start : start + _UPSERT_CHUNK]),
                )
            )
            deleted += result.rowcount
        return deleted

    def _bump(self, conn: Connection, key: str) -> int:
        conn.execute(
            update(vector_collections)
            .where(vector_collections.c.key == key)
            .values(version=vector_collections.c.version + 1)
        )
        return int(
            conn.execute(
                select(vector_collections.c.version).where(vector_collections.c.key == key)
            ).scalar_one()
        )

    def _apply(self, key: str, version: int, change: Any) -> None:
        """Apply our own committed write to the loaded index, unless someone else wrote in between."""
        loaded = self._loaded.get(key)
        if loaded is None:
            return
        with loaded.lock:
            if loaded.version == version - 1:
                change(loaded.index)
                loaded.version = version
            else:
                self._loaded.pop(key, None)  # stale: reload on next search

    def _version(self, key: str) -> int | None:
        with self._db.read() as conn:
            value = conn.execute(
                select(vector_collections.c.version).where(vector_collections.c.key == key)
            ).scalar_one_or_none()
        return None if value is None else int(value)

    def _current(self, key: str) -> _Loaded:
        """The loaded index of the collection, (re)loaded if missing or stale."""
        version = self._version(key)
        if version is None:
            raise NotFoundError("this collection no longer exists", code="collection_not_found")
        loaded = self._loaded.get(key)
        if loaded is not None and loaded.version == version:
            return loaded
        with self._loading:
            loaded = self._loaded.get(key)
            if loaded is not None and loaded.version == version:
                return loaded
            loaded = self._load(key)
            self._loaded[key] = loaded
            return loaded

    def _load(self, key: str) -> _Loaded:
        index = MemoryIndex(self._ann)
        with self._db.read() as conn:
            version = int(
                conn.execute(
                    select(vector_collections.c.version).where(vector_collections.c.key == key)
                ).scalar_one()
            )
            result = conn.execute(
                select(
                    collection_items.c.item_id, collection_items.c.vector, collection_items.c.metadata_json
                )
                .where(collection_items.c.collection_key == key)
                .execution_options(yield_per=10_000)
            )
            for chunk in result.partitions(10_000):
                ids = [row[0] for row in chunk]
                vectors = np.frombuffer(b"".join(row[1] for row in chunk), dtype="<f4").reshape(
                    -1, DIMENSIONS
                )
                index.upsert(
                    ids, vectors.astype(np.float32), [json.loads(row[2]) for row in chunk], maintain=False
                )
        index.maintain()
        return _Loaded(index, version)


def _vector(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f4").astype(np.float32)
