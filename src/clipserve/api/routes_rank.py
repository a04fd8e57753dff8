"""POST /v1/rank: order texts and/or images by relevance to a text or image query (rerank shape)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from clipserve.api import endpoint_calls
from clipserve.api.auth import CallerDep
from clipserve.api.bodies import JsonBody, parse_off_the_loop
from clipserve.api.dependencies import AppContext, get_context, get_rank_service
from clipserve.api.endpoint_calls import prepare_rank
from clipserve.api.metering import metered_response
from clipserve.api.protocol import ErrorResponse, RankRequest, RankResponse
from clipserve.service.inputs import InputItem
from clipserve.service.rank import RankService

router = APIRouter(tags=["ranking"])


@router.post(
    "/v1/rank",
    response_model=RankResponse,
    responses={code: {"model": ErrorResponse} for code in (400, 401, 404, 409, 429, 503)},
)
async def rank(
    body: Annotated[RankRequest, Depends(JsonBody(RankRequest))],
    request: Request,
    caller: CallerDep,
    context: Annotated[AppContext, Depends(get_context)],
    service: Annotated[RankService, Depends(get_rank_service)],
) -> Response:
    call = await prepare_rank(
        body, context, service, caller.account, lambda work: parse_off_the_loop(request, work)
    )
    return await metered_response(request, caller, call.bound, call.produce)


async def parse_query_and_documents(
    request: Request, query: Any, documents: list[Any], context: AppContext
) -> tuple[InputItem, list[InputItem]]:
    """The query and documents of a rank or rerank body as input items (off the loop for a large body)."""
    return await endpoint_calls.parse_query_and_documents(
        context, query, documents, lambda work: parse_off_the_loop(request, work)
    )
