"""POST /v1/embeddings (OpenAI-compatible)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from clipserve.api.auth import CallerDep
from clipserve.api.bodies import JsonBody, parse_off_the_loop
from clipserve.api.dependencies import AppContext, get_context, get_embedding_service
from clipserve.api.endpoint_calls import prepare_embeddings
from clipserve.api.metering import metered_response
from clipserve.api.protocol import EmbeddingRequest, EmbeddingResponse, ErrorResponse
from clipserve.service.embeddings import EmbeddingService

router = APIRouter(tags=["embeddings"])

_ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 409, 413, 429, 503)
}


@router.post("/v1/embeddings", response_model=EmbeddingResponse, responses=_ERRORS)
async def create_embeddings(
    body: Annotated[EmbeddingRequest, Depends(JsonBody(EmbeddingRequest))],
    request: Request,
    caller: CallerDep,
    context: Annotated[AppContext, Depends(get_context)],
    service: Annotated[EmbeddingService, Depends(get_embedding_service)],
) -> Response:
    call = await prepare_embeddings(
        body, context, service, caller.account, lambda work: parse_off_the_loop(request, work)
    )
    return await metered_response(request, caller, call.bound, call.produce)
