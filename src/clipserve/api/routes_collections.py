"""/v1/collections: create, list, delete; add, get, delete items; search. Adds and searches are metered."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, Request, Response

from clipserve.api.auth import CallerDep
from clipserve.api.bodies import JsonBody, parse_off_the_loop
from clipserve.api.dependencies import get_collection_service
from clipserve.api.metering import Answer, FreeCallerDep, metered_response
from clipserve.api.protocol import ErrorDetail, ErrorResponse
from clipserve.api.protocol_collections import (
    AddItemsRequest,
    AddItemsResponse,
    Collection,
    CollectionList,
    CollectionUsage,
    CreateCollectionRequest,
    Deleted,
    Item,
    ItemStatus,
    SearchHit,
    SearchRequest,
    SearchResponse,
)
from clipserve.service.collections import CollectionInfo, CollectionService, SearchQuery
from clipserve.service.pricing import Usage, usage_bound
from clipserve.vectors.filters import parse_filter

router = APIRouter(
    tags=["collections"],
    responses={code: {"model": ErrorResponse} for code in (400, 401, 404, 409, 429, 503)},
)
ServiceDep = Annotated[CollectionService, Depends(get_collection_service)]


def _collection(info: CollectionInfo, backend: str) -> Collection:
    record = info.record
    return Collection(
        name=record.name, description=record.description, created_at=int(record.created_at.timestamp()),
        item_count=info.item_count, backend=backend,
    )  # fmt: skip


def _usage(usage: Usage) -> CollectionUsage:
    return CollectionUsage(prompt_tokens=usage.tokens, total_tokens=usage.tokens, image_count=usage.images)


@router.post("/v1/collections", response_model=Collection)
async def create_collection(
    caller: FreeCallerDep,
    body: Annotated[CreateCollectionRequest, Depends(JsonBody(CreateCollectionRequest))],
    service: ServiceDep,
) -> Collection:
    info = await service.create(caller.account, body.name, body.description)
    return _collection(info, service.vectors.name)


@router.get("/v1/collections", response_model=CollectionList)
async def list_collections(caller: FreeCallerDep, service: ServiceDep) -> CollectionList:
    infos = await service.list_collections(caller.account)
    return CollectionList(data=[_collection(info, service.vectors.name) for info in infos])


@router.get("/v1/collections/{name}", response_model=Collection)
async def get_collection(name: str, caller: FreeCallerDep, service: ServiceDep) -> Collection:
    return _collection(await service.get(caller.account, name), service.vectors.name)


@router.delete("/v1/collections/{name}", response_model=Deleted)
async def delete_collection(name: str, caller: FreeCallerDep, service: ServiceDep) -> Deleted:
    await service.delete(caller.account, name)
    return Deleted(id=name, object="collection")


@router.post("/v1/collections/{name}/items", response_model=AddItemsResponse)
async def add_items(
    name: str,
    body: Annotated[AddItemsRequest, Depends(JsonBody(AddItemsRequest))],
    request: Request,
    caller: CallerDep,
    service: ServiceDep,
) -> Response:
    owner = caller.account
    planned = await parse_off_the_loop(request, lambda: service.plan_items(body.items))

    async def produce() -> Answer:
        result = await service.add_items(owner, name, planned)
        statuses = [
            ItemStatus(
                index=o.index, id=o.id, status="ok" if o.error is None else "error",
                error=None if o.error is None else ErrorDetail(
                    message=o.error.message, type=o.error.error_type, param=o.error.param, code=o.error.code
                ),
            )
            for o in result.outcomes
        ]  # fmt: skip
        response = AddItemsResponse(
            errors=any(s.status == "error" for s in statuses), data=statuses, usage=_usage(result.usage)
        )
        return Answer(response.model_dump_json(exclude_none=True), result.usage)

    return await metered_response(request, caller, service.usage_bound(planned), produce)


@router.get("/v1/collections/{name}/items/{item_id:path}", response_model=Item)
async def get_item(
    name: str, item_id: str, caller: FreeCallerDep, service: ServiceDep, include_vector: bool = False
) -> Item:
    item = await service.get_item(caller.account, name, item_id)
    return Item(id=item.id, metadata=item.metadata, vector=item.vector.tolist() if include_vector else None)


@router.delete("/v1/collections/{name}/items/{item_id:path}", response_model=Deleted)
async def delete_item(name: str, item_id: str, caller: FreeCallerDep, service: ServiceDep) -> Deleted:
    await service.delete_item(caller.account, name, item_id)
    return Deleted(id=item_id, object="collection.item")


@router.post("/v1/collections/{name}/search", response_model=SearchResponse)
async def search(  # type: ignore[no-untyped-def]
    name: str,
    body: Annotated[SearchRequest, Depends(JsonBody(SearchRequest))],
    request: Request,
    caller: CallerDep,
    service: ServiceDep,
):
    parsed = service.parse_query(body.query)
    query = SearchQuery(
        source=None if isinstance(parsed, str) else parsed,
        item_id=parsed if isinstance(parsed, str) else None,
        top_k=body.top_k,
        where=parse_filter(body.filter),
        with_vectors=body.include_vectors,
    )
    bound = Usage() if isinstance(parsed, str | np.ndarray) else usage_bound([parsed])
    owner = caller.account

    async def produce() -> Answer:
        result = await service.search(owner, name, query)
        response = SearchResponse(
            results=[
                SearchHit(
                    id=hit.id, score=hit.score, metadata=hit.metadata,
                    vector=hit.vector.tolist() if hit.vector is not None else None,
                )
                for hit in result.hits
            ],
            usage=_usage(result.usage),
        )  # fmt: skip
        return Answer(response.model_dump_json(exclude_none=True), result.usage)

    return await metered_response(request, caller, bound, produce)
