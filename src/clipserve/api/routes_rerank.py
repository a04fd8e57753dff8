"""The rerank routes of other servers' clients: Jina's /v1/rerank, Cohere's /v2/rerank, Infinity's /rerank.

Each is /v1/rank (same service, same billing) answered in the shape its clients parse.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel

from clipserve.api.auth import CallerDep
from clipserve.api.bodies import JsonBody
from clipserve.api.dependencies import AppContext, get_context, get_rank_service
from clipserve.api.headers import timing_headers
from clipserve.api.metering import Answer, metered_response
from clipserve.api.protocol import ErrorResponse, RankUsage
from clipserve.api.protocol_rerank import (
    CohereBilledUnits,
    CohereMeta,
    CohereRerankRequest,
    CohereRerankResponse,
    InfinityRerankRequest,
    InfinityRerankResponse,
    InfinityRerankResult,
    JinaRerankRequest,
    JinaRerankResponse,
    RerankResult,
)
from clipserve.api.routes_rank import parse_query_and_documents
from clipserve.service.auth import Caller
from clipserve.service.inputs import InputItem, TextItem
from clipserve.service.model_names import resolve_model_name
from clipserve.service.pricing import Usage, usage_bound
from clipserve.service.rank import RankResult, RankService

router = APIRouter(tags=["ranking"])

_ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 409, 429, 503)
}

RerankRequest = JinaRerankRequest | CohereRerankRequest | InfinityRerankRequest
# (served model id, the parsed documents, the ranking, return_documents) -> the convention's answer
Shape = Callable[[str, list[InputItem], RankResult, bool], BaseModel]
ServiceDep = Annotated[RankService, Depends(get_rank_service)]
ContextDep = Annotated[AppContext, Depends(get_context)]


@router.post("/v1/rerank", response_model=JinaRerankResponse, responses=_ERRORS)
async def rerank_jina(
    body: Annotated[JinaRerankRequest, Depends(JsonBody(JinaRerankRequest))],
    request: Request,
    caller: CallerDep,
    context: ContextDep,
    service: ServiceDep,
) -> Response:
    """Jina's rerank shape (litellm `jina_ai/`): documents come back as {"text": ...} (or {"image": src})."""
    return await _rerank(body, request, caller, context, service, _jina)


@router.post("/v2/rerank", response_model=CohereRerankResponse, responses=_ERRORS)
async def rerank_cohere(
    body: Annotated[CohereRerankRequest, Depends(JsonBody(CohereRerankRequest))],
    request: Request,
    caller: CallerDep,
    context: ContextDep,
    service: ServiceDep,
) -> Response:
    """Cohere's v2 rerank shape (litellm `cohere/`): `id`, results, `meta.billed_units`."""
    return await _rerank(body, request, caller, context, service, _cohere)


@router.post("/rerank", response_model=InfinityRerankResponse, responses=_ERRORS)
async def rerank_infinity(
    body: Annotated[InfinityRerankRequest, Depends(JsonBody(InfinityRerankRequest))],
    request: Request,
    caller: CallerDep,
    context: ContextDep,
    service: ServiceDep,
) -> Response:
    """Infinity's rerank shape (infinity-client, litellm `infinity/`): `object: "rerank"`, string documents."""
    return await _rerank(body, request, caller, context, service, _infinity)


async def _rerank(
    body: RerankRequest,
    request: Request,
    caller: Caller,
    context: AppContext,
    service: RankService,
    shape: Shape,
) -> Response:
    model = resolve_model_name(body.model)
    query, documents = await parse_query_and_documents(request, body.query, body.documents, context)

    async def produce() -> Answer:
        result = await service.rank(query, documents, body.top_n, caller.account)
        response = shape(model, documents, result, body.return_documents)
        usage = Usage(images=result.image_count, tokens=result.text_tokens)
        return Answer(response.model_dump_json(exclude_none=True), usage, timing_headers(result.timings))

    return await metered_response(request, caller, usage_bound([query, *documents]), produce)


def _usage(result: RankResult) -> RankUsage:
    return RankUsage(
        prompt_tokens=result.text_tokens, total_tokens=result.text_tokens, image_count=result.image_count
    )


def _document_object(item: InputItem) -> dict[str, str]:
    return {"text": item.text} if isinstance(item, TextItem) else {"image": item.source}


def _results(documents: list[InputItem], result: RankResult, return_documents: bool) -> list[RerankResult]:
    return [
        RerankResult(
            index=r.index,
            relevance_score=r.relevance_score,
            document=_document_object(documents[r.index]) if return_documents else None,
        )
        for r in result.results
    ]


def _jina(model: str, documents: list[InputItem], result: RankResult, return_documents: bool) -> BaseModel:
    return JinaRerankResponse(
        model=model, results=_results(documents, result, return_documents), usage=_usage(result)
    )


def _cohere(model: str, documents: list[InputItem], result: RankResult, return_documents: bool) -> BaseModel:
    return CohereRerankResponse(
        id=str(uuid.uuid4()),
        results=_results(documents, result, return_documents),
        meta=CohereMeta(
            billed_units=CohereBilledUnits(input_tokens=result.text_tokens, images=result.image_count)
        ),
    )


def _infinity(
    model: str, documents: list[InputItem], result: RankResult, return_documents: bool
) -> BaseModel:
    def text_of(item: InputItem) -> str:
        return item.text if isinstance(item, TextItem) else item.source

    return InfinityRerankResponse(
        id=str(uuid.uuid4()),
        created=int(time.time()),
        model=model,
        results=[
            InfinityRerankResult(
                index=r.index,
                relevance_score=r.relevance_score,
                document=text_of(documents[r.index]) if return_documents else None,
            )
            for r in result.results
        ],
        usage=_usage(result),
    )
