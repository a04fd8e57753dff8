"""Wire models of the collection routes."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, Field

from clipserve.api.protocol import ErrorDetail, RequestModel
from clipserve.api.protocol_accounts import _no_nul


class CreateCollectionRequest(RequestModel):
    name: str
    description: Annotated[str, Field(max_length=1000), AfterValidator(_no_nul)] | None = None


class Collection(BaseModel):
    object: Literal["collection"] = "collection"
    name: str
    description: str | None
    created_at: int
    item_count: int
    backend: str


class CollectionList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Collection]


class Deleted(BaseModel):
    id: str
    object: str
    deleted: bool = True


class AddItemsRequest(RequestModel):
    checked_per_item: ClassVar[frozenset[str]] = frozenset({"items"})  # a bad item fails alone

    items: list[Any] = Field(description="Each {id?, text | image | vector, metadata?}.")


class ItemStatus(BaseModel):
    index: int
    id: str
    status: Literal["ok", "error"]
    error: ErrorDetail | None = None


class CollectionUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int
    image_count: int


class AddItemsResponse(BaseModel):
    object: Literal["list"] = "list"
    errors: bool
    data: list[ItemStatus]
    usage: CollectionUsage


class Item(BaseModel):
    object: Literal["collection.item"] = "collection.item"
    id: str
    metadata: dict[str, Any]
    vector: list[float] | None = None


class SearchRequest(RequestModel):
    query: dict[str, Any] = Field(description='Exactly one of {"text"}, {"image"}, {"id"}, {"vector"}.')
    top_k: int = 10
    filter: dict[str, Any] | None = None
    include_vectors: bool = False


class SearchHit(BaseModel):
    id: str
    score: float
    metadata: dict[str, Any]
    vector: list[float] | None = None


class SearchResponse(BaseModel):
    object: Literal["list"] = "list"
    results: list[SearchHit]
    usage: CollectionUsage
