"""The scale-out vector store: Milvus through pymilvus. `CLIPSERVE_VECTOR_URL=http://milvus:19530` for a
server or cluster (several clipserve replicas share it), or a local `*.db` path for Milvus Lite."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from clipserve.vectors.base import DIMENSIONS, Hit, StoredItem
from clipserve.vectors.filters import Filter
from clipserve.vectors.milvus_expressions import ids_in, search_filter
from clipserve.vectors.values import MAX_ID_BYTES, check_items

_ID_FIELD, _VECTOR_FIELD, _METADATA_FIELD = "pk", "vector", "metadata"


class MilvusVectorStore:
    name = "milvus"

    def __init__(self, uri: str, token: str | None = None) -> None:
        from pymilvus import MilvusClient

        self._client = MilvusClient(uri=uri, token=token or "")
        self._lock = threading.Lock()  # Milvus Lite's client is not safe across threads

    def create_collection(self, key: str) -> None:
        from pymilvus import DataType

        client = self._client
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field(_ID_FIELD, DataType.VARCHAR, is_primary=True, max_length=MAX_ID_BYTES)
        schema.add_field(_VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=DIMENSIONS)
        schema.add_field(_METADATA_FIELD, DataType.JSON)
        index = client.prepare_index_params()
        # AUTOINDEX: Milvus picks the index for the deployment (HNSW-like on a server, FLAT on Lite)
        index.add_index(field_name=_VECTOR_FIELD, index_type="AUTOINDEX", metric_type="IP")
        with self._lock:
            client.create_collection(key, schema=schema, index_params=index, consistency_level="Strong")

    def drop_collection(self, key: str) -> None:
        with self._lock:
            if self._client.has_collection(key):
                self._client.drop_collection(key)

    def has_collection(self, key: str) -> bool:
        with self._lock:
            return bool(self._client.has_collection(key))

    def upsert(self, key: str, items: list[StoredItem]) -> None:
        if not items:
            return
        check_items([item.id for item in items], [item.metadata for item in items])
        rows = [
            {_ID_FIELD: item.id, _VECTOR_FIELD: np.asarray(item.vector, np.float32).tolist(),
             _METADATA_FIELD: item.metadata}
            for item in items
        ]  # fmt: skip
        with self._lock:
            self._client.upsert(key, rows)

    def get(self, key: str, ids: list[str]) -> list[StoredItem]:
        if not ids:
            return []
        # never the client's `ids=`: pymilvus writes those into the expression between bare quotes
        expression = ids_in(_ID_FIELD, ids).render()
        with self._lock:
            rows = self._client.query(
                key, filter=expression, output_fields=[_ID_FIELD, _VECTOR_FIELD, _METADATA_FIELD]
            )
        found = {
            row[_ID_FIELD]: StoredItem(row[_ID_FIELD], np.asarray(row[_VECTOR_FIELD], np.float32),
                                       dict(row[_METADATA_FIELD] or {}))
            for row in rows
        }  # fmt: skip
        return [found[item_id] for item_id in ids if item_id in found]

    def delete(self, key: str, ids: list[str]) -> int:
        if not ids:
            return 0
        existing = len(self.get(key, ids))
        if existing:
            expression = ids_in(_ID_FIELD, ids).render()
            with self._lock:
                self._client.delete(key, filter=expression)
        return existing

    def count(self, key: str) -> int:
        with self._lock:
            rows = self._client.query(key, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

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
        condition = search_filter(where, exclude_id, id_field=_ID_FIELD, metadata_field=_METADATA_FIELD)
        expression = "" if condition is None else condition.render()
        fields = [_METADATA_FIELD, _VECTOR_FIELD] if with_vectors else [_METADATA_FIELD]
        with self._lock:
            results = self._client.search(
                key, data=[np.asarray(vector, np.float32).tolist()], limit=top_k, filter=expression,
                output_fields=fields, search_params={"metric_type": "IP"},
            )  # fmt: skip
        hits = []
        for result in results[0]:
            entity: dict[str, Any] = result["entity"]
            hits.append(
                Hit(
                    id=str(result[_ID_FIELD] if _ID_FIELD in result else result["id"]),
                    score=float(result["distance"]),
                    metadata=dict(entity.get(_METADATA_FIELD) or {}),
                    vector=np.asarray(entity[_VECTOR_FIELD], np.float32) if with_vectors else None,
                )
            )
        return hits

    def close(self) -> None:
        with self._lock:
            self._client.close()
