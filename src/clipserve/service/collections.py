"""What the collection endpoints mean: named, owned sets of embedded items, searched by text, image, item or
vector, with metadata filters. Storage is a VectorStore (embedded or Milvus); the catalogue is SQL."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from clipserve.config import Settings
from clipserve.errors import ClipserveError, CollectionQuotaError, InvalidRequestError, NotFoundError
from clipserve.service.embeddings import EmbeddingService
from clipserve.service.inputs import ImageItem, InputItem, InputLimits, TextItem, parse_item
from clipserve.service.pricing import Usage, usage_bound
from clipserve.service.text_checks import has_lone_surrogate, reject_lone_surrogates
from clipserve.store.collections import (
    CollectionCatalogue,
    CollectionRecord,
    check_name,
    new_store_key,
    quota_error,
)
from clipserve.vectors.base import DIMENSIONS, Hit, StoredItem, VectorStore
from clipserve.vectors.filters import Filter
from clipserve.vectors.values import check_item_id, check_metadata

T = TypeVar("T")
logger = logging.getLogger(__name__)
PENDING_DELETE_SWEEP_S = 300.0  # how often interrupted collection deletes are retried (and once at startup)


@dataclass(frozen=True)
class CollectionLimits:
    max_items_per_request: int = 256
    max_metadata_bytes: int = 16_384
    max_top_k: int = 1000
    max_metadata_depth: int = 16
    max_collections_per_owner: int = 100
    max_items_per_owner: int = 100_000
    # texts (or images) one add may embed: an add is admitted to each encoder queue whole, so never more
    # than one account may hold there (a larger add could never be admitted: a 400, not a 503 for ever)
    max_embedded_per_request: int = 256

    @classmethod
    def from_settings(cls, settings: Settings) -> CollectionLimits:
        return cls(
            max_items_per_request=settings.max_collection_items_per_request,
            max_embedded_per_request=settings.queue_items_per_account,
            max_metadata_bytes=settings.max_metadata_bytes,
            max_metadata_depth=settings.max_metadata_depth,
            max_collections_per_owner=settings.max_collections_per_account,
            max_items_per_owner=settings.max_collection_items_per_account,
        )


@dataclass(frozen=True)
class CollectionInfo:
    record: CollectionRecord
    item_count: int


@dataclass(frozen=True)
class PlannedItem:
    """One item of an add request after parsing: what to embed (or the vector given), or why it failed."""

    index: int
    id: str
    source: InputItem | np.ndarray | None
    metadata: dict[str, Any]
    error: ClipserveError | None = None


@dataclass(frozen=True)
class ItemOutcome:
    index: int
    id: str
    error: ClipserveError | None


@dataclass(frozen=True)
class AddResult:
    outcomes: list[ItemOutcome]
    usage: Usage


@dataclass(frozen=True)
class SearchQuery:
    source: InputItem | np.ndarray | None = None  # text or image to embed, or a vector
    item_id: str | None = None  # "more like this item"
    top_k: int = 10
    where: Filter | None = None
    with_vectors: bool = False


@dataclass(frozen=True)
class SearchResult:
    hits: list[Hit]
    usage: Usage = field(default_factory=Usage)


def unit_vector(raw: Any, param: str) -> np.ndarray:
    """A caller's vector: 512 finite numbers, L2-normalised here so scores are cosines."""
    if not isinstance(raw, list) or len(raw) != DIMENSIONS:
        raise InvalidRequestError(f"a vector must be a list of {DIMENSIONS} numbers", param=param)
    if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in raw):
        raise InvalidRequestError("a vector must hold numbers only", param=param)
    try:
        wide = np.asarray(raw, dtype=np.float64)
    except OverflowError as exc:
        raise InvalidRequestError("a vector holds a number too large for float32", param=param) from exc
    if not np.isfinite(wide).all() or np.abs(wide).max() > float(np.finfo(np.float32).max):
        raise InvalidRequestError("a vector must hold finite float32 numbers", param=param)
    norm = float(np.linalg.norm(wide))
    if norm == 0.0 or not math.isfinite(norm):
        raise InvalidRequestError("a vector must not be all zeros", param=param)
    return (wide / norm).astype(np.float32)


class CollectionService:
    def __init__(
        self,
        catalogue: CollectionCatalogue,
        vectors: VectorStore,
        embeddings: EmbeddingService,
        executor: Executor,
        input_limits: InputLimits,
        limits: CollectionLimits,
    ) -> None:
        self._catalogue = catalogue
        self.vectors = vectors
        self._embeddings = embeddings
        self._executor = executor
        self._input_limits = input_limits
        self.limits = limits

    # collections

    async def create(self, owner: str, name: str, description: str | None) -> CollectionInfo:
        check_name(name)
        # A pending delete never blocks its name (its row already moved to another owner), so nothing to
        # finish here; finish_pending_deletes runs at startup and from sweep_pending_deletes.
        await self._run(lambda: self._catalogue.check_free(owner, name))
        held = await self._run(lambda: self._catalogue.count_for(owner))
        if held >= self.limits.max_collections_per_owner:  # cheap early refusal; the insert checks again
            raise quota_error(held)
        key = new_store_key()
        # The store first: a crash in between leaves an orphan store collection nobody sees, never a
        # catalogue entry without storage.
        await self._run(lambda: self.vectors.create_collection(key))
        try:
            record = await self._run(
                lambda: self._catalogue.create(
                    owner, name, description, key, max_for_owner=self.limits.max_collections_per_owner
                )
            )
        except BaseException:
            await self._run(lambda: self.vectors.drop_collection(key))
            raise
        return CollectionInfo(record, 0)

    async def get(self, owner: str, name: str) -> CollectionInfo:
        record = await self._record(owner, name)
        return CollectionInfo(record, await self._run(lambda: self.vectors.count(record.store_key)))

    async def list_collections(self, owner: str) -> list[CollectionInfo]:
        records = await self._run(lambda: self._catalogue.list_for(owner))

        def with_counts() -> list[CollectionInfo]:
            return [CollectionInfo(r, self.vectors.count(r.store_key)) for r in records]

        return await self._run(with_counts)

    async def delete(self, owner: str, name: str) -> None:
        """Hide the row (gone for callers at once), drop the store's collection, delete the row; a crash in
        between leaves a pending delete that finish_pending_deletes completes."""
        record = await self._record(owner, name)
        pending = await self._run(lambda: self._catalogue.mark_deleting(record))
        await self._finish_delete(pending)

    async def finish_pending_deletes(self) -> int:
        """Complete the deletes a crash (or a store error) interrupted; how many were finished. Each step is
        idempotent, so two replicas finishing the same one is harmless."""
        finished = 0
        for record in await self._run(self._catalogue.pending_deletes):
            try:
                await self._finish_delete(record)
                finished += 1
            except Exception:  # one collection the store cannot drop must not block every create or delete
                logger.warning("could not finish deleting collection %s; will retry", record.store_key,
                               exc_info=True)  # fmt: skip
        return finished

    async def sweep_pending_deletes(self, interval_s: float = PENDING_DELETE_SWEEP_S) -> None:
        """Run for ever: finish_pending_deletes every `interval_s` (the startup call did the first)."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.finish_pending_deletes()
            except Exception:  # the catalogue unreachable: the next sweep tries again
                logger.warning("could not list pending collection deletes; will retry", exc_info=True)

    async def _finish_delete(self, pending: CollectionRecord) -> None:
        await self._run(lambda: self.vectors.drop_collection(pending.store_key))
        await self._run(lambda: self._catalogue.delete(pending))

    # items

    def plan_items(self, raw_items: Sequence[Any]) -> list[PlannedItem]:
        """Parse each item on its own: a bad one is marked, the others go on."""
        if not raw_items:
            raise InvalidRequestError("'items' must not be empty", param="items")
        if len(raw_items) > self.limits.max_items_per_request:
            raise InvalidRequestError(
                f"at most {self.limits.max_items_per_request} items per request", param="items"
            )
        planned = [self._plan_item(i, raw) for i, raw in enumerate(raw_items)]
        for kind in (TextItem, ImageItem):
            if sum(isinstance(p.source, kind) for p in planned) > self.limits.max_embedded_per_request:
                raise InvalidRequestError(
                    f"at most {self.limits.max_embedded_per_request} {kind.__name__[:-4].lower()}s per request "
                    "on this server (its queue's share per account)",
                    param="items",
                )
        seen: dict[str, int] = {}
        for item in planned:
            if item.error is None and item.id in seen:
                planned[item.index] = PlannedItem(
                    item.index, item.id, None, {},
                    InvalidRequestError(f"id {item.id!r} is also items[{seen[item.id]}]", param=f"items[{item.index}].id"),
                )  # fmt: skip
            seen.setdefault(item.id, item.index)
        return planned

    @staticmethod
    def usage_bound(planned: Sequence[PlannedItem]) -> Usage:
        return usage_bound([p.source for p in planned if isinstance(p.source, TextItem | ImageItem)])

    async def add_items(self, owner: str, name: str, planned: list[PlannedItem]) -> AddResult:
        record = await self._record(owner, name)
        await self._check_item_quota(owner, record, [item.id for item in planned if item.error is None])
        # One admission for every text and image of the add (embed_each): a full queue refuses the whole add
        # (503) before anything is embedded, stored or charged; a bad input still fails only its own item.
        to_embed = [item for item in planned if isinstance(item.source, TextItem | ImageItem)]
        sources = [item.source for item in to_embed if isinstance(item.source, TextItem | ImageItem)]
        embedded = await self._embeddings.embed_each(sources, account=owner) if sources else None
        results: dict[int, np.ndarray | ClipserveError] = {
            item.index: outcome
            for item, outcome in zip(to_embed, embedded.outcomes if embedded else [], strict=True)
        }
        outcomes, stored = [], []
        for item in planned:
            result = item.source if isinstance(item.source, np.ndarray) else results.get(item.index)
            error = item.error or (result if isinstance(result, ClipserveError) else None)
            if error is None and isinstance(result, np.ndarray):
                stored.append(StoredItem(item.id, result, item.metadata))
            outcomes.append(ItemOutcome(item.index, item.id, error))
        await self._run(lambda: self.vectors.upsert(record.store_key, stored))  # one transaction
        usage = Usage(images=embedded.image_count, tokens=embedded.text_tokens) if embedded else Usage()
        return AddResult(outcomes, usage)

    async def get_item(self, owner: str, name: str, item_id: str) -> StoredItem:
        check_item_id(item_id, "item_id")
        record = await self._record(owner, name)
        found = await self._run(lambda: self.vectors.get(record.store_key, [item_id]))
        if not found:
            raise NotFoundError(f"no item {item_id!r} in collection {name!r}", code="item_not_found")
        return found[0]

    async def delete_item(self, owner: str, name: str, item_id: str) -> None:
        check_item_id(item_id, "item_id")
        record = await self._record(owner, name)
        if not await self._run(lambda: self.vectors.delete(record.store_key, [item_id])):
            raise NotFoundError(f"no item {item_id!r} in collection {name!r}", code="item_not_found")

    async def search(self, owner: str, name: str, query: SearchQuery) -> SearchResult:
        if not 1 <= query.top_k <= self.limits.max_top_k:
            raise InvalidRequestError(f"top_k must be 1 to {self.limits.max_top_k}", param="top_k")
        record = await self._record(owner, name)
        usage = Usage()
        if query.item_id is not None:
            found = await self._run(lambda: self.vectors.get(record.store_key, [query.item_id or ""]))
            if not found:
                raise NotFoundError(
                    f"no item {query.item_id!r} in collection {name!r}", code="item_not_found"
                )
            vector = found[0].vector
        elif isinstance(query.source, np.ndarray):
            vector = query.source
        else:
            assert query.source is not None
            result = await self._embeddings.embed([query.source], account=owner)
            vector, usage = result.vectors[0], Usage(images=result.image_count, tokens=result.text_tokens)
        hits = await self._run(
            lambda: self.vectors.search(
                record.store_key, vector, query.top_k, query.where,
                exclude_id=query.item_id, with_vectors=query.with_vectors,
            )
        )  # fmt: skip
        return SearchResult(hits, usage)

    def parse_query(self, raw: Any) -> InputItem | np.ndarray | str:
        """A search query: {"text"} | {"image"} | {"vector"} | {"id"}; an id comes back as a str."""
        if (
            not isinstance(raw, dict)
            or len(raw) != 1
            or next(iter(raw)) not in ("text", "image", "vector", "id")
        ):
            raise InvalidRequestError(
                "'query' must be an object with exactly one of 'text', 'image', 'vector' or 'id'",
                param="query",
            )
        kind, value = next(iter(raw.items()))
        if kind == "vector":
            return unit_vector(value, "query.vector")
        if kind == "id":
            return check_item_id(value, "query.id")
        return parse_item({kind: value}, "query", self._input_limits)

    # internals

    def _plan_item(self, index: int, raw: Any) -> PlannedItem:
        param = f"items[{index}]"
        item_id = raw.get("id") if isinstance(raw, dict) else None
        fallback_id = item_id if isinstance(item_id, str) and not has_lone_surrogate(item_id) else ""
        try:
            reject_lone_surrogates(raw, param)  # the wire model leaves items to this per-item check
            if not isinstance(raw, dict):
                raise InvalidRequestError(
                    "an item is an object: {id?, text | image | vector, metadata?}", param=param
                )
            unknown = set(raw) - {"id", "text", "image", "vector", "metadata"}
            if unknown:
                raise InvalidRequestError(f"unknown fields {sorted(unknown)}", param=param)
            if item_id is None:
                item_id = uuid.uuid4().hex
            check_item_id(item_id, f"{param}.id")
            sources = [key for key in ("text", "image", "vector") if key in raw]
            if len(sources) != 1:
                raise InvalidRequestError("give exactly one of 'text', 'image' or 'vector'", param=param)
            kind = sources[0]
            source: InputItem | np.ndarray = (
                unit_vector(raw[kind], f"{param}.vector") if kind == "vector"
                else parse_item({kind: raw[kind]}, param, self._input_limits)
            )  # fmt: skip
            metadata = self._metadata(raw.get("metadata"), f"{param}.metadata")
            return PlannedItem(index, item_id, source, metadata)
        except ClipserveError as error:
            return PlannedItem(index, fallback_id, None, {}, error)

    def _metadata(self, raw: Any, param: str) -> dict[str, Any]:
        if raw is None:
            return {}
        metadata = check_metadata(raw, param, self.limits.max_metadata_depth)
        size = len(json.dumps(metadata, ensure_ascii=False, allow_nan=False).encode())
        if size > self.limits.max_metadata_bytes:
            raise InvalidRequestError(
                f"metadata is {size} bytes; the limit is {self.limits.max_metadata_bytes}", param=param
            )
        return metadata

    async def _record(self, owner: str, name: str) -> CollectionRecord:
        check_name(name)  # a path parameter is held to the rules a created name was
        return await self._run(lambda: self._catalogue.get(owner, name))

    async def _check_item_quota(self, owner: str, record: CollectionRecord, ids: list[str]) -> None:
        """Refuse the whole add, before anything is embedded or charged, when its new ids would take the
        owner past its stored-item quota (concurrent adds can pass it by at most one request each)."""
        if not ids:
            return

        def stored_and_new() -> tuple[int, int]:
            stored = sum(self.vectors.count(r.store_key) for r in self._catalogue.list_for(owner))
            return stored, len(ids) - len(self.vectors.get(record.store_key, ids))

        stored, new = await self._run(stored_and_new)
        if stored + new > self.limits.max_items_per_owner:
            raise CollectionQuotaError(
                f"this account stores {stored} items and this add brings {new} new ones; its quota is "
                f"{self.limits.max_items_per_owner} (delete items or collections first)",
                param="items",
                code="item_quota_exceeded",
            )

    async def _run(self, call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)
