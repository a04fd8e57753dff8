"""POST /v1/embeddings (OpenAI-compatible)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from clipserve.api.auth import CallerDep
from clipserve.api.bodies import JsonBody, parse_off_the_loop
from clipserve.api.dependencies import AppContext, get_context, get_embedding_service
from clipserve.api.headers import timing_headers
from clipserve.api.metering import Answer, metered_response
from clipserve.api.protocol import (
    EmbeddingData,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
    ErrorResponse,
)
from clipserve.service.embedding_options import check_jina_options
from clipserve.service.embeddings import EmbeddingService
from clipserve.service.encoding import choose_encoding, encode_vector
from clipserve.service.inputs import parse_request_items
from clipserve.service.model_names import resolve_model_name
from clipserve.service.pricing import Usage, usage_bound

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
    model = resolve_model_name(body.model)
    service.check_dimensions(body.dimensions)
    check_jina_options(normalized=body.normalized, late_chunking=body.late_chunking)
    encoding = choose_encoding(body.encoding_format, body.embedding_type)
    items = await parse_off_the_loop(
        request,
        lambda: parse_request_items(body.input, body.messages, context.input_limits, body.modality),
    )

    async def produce() -> Answer:
        result = await service.embed(items, account=caller.account)
        context.metrics.decode_seconds.observe(result.timings.decode_s)
        response = EmbeddingResponse(
            data=[
                EmbeddingData(index=i, embedding=encode_vector(vector, encoding))
                for i, vector in enumerate(result.vectors)
            ],
            model=model,
            usage=EmbeddingUsage(
                prompt_tokens=result.text_tokens,
                total_tokens=result.text_tokens,
                image_count=result.image_count,
            ),
        )
        usage = Usage(images=result.image_count, tokens=result.text_tokens)
        return Answer(response.model_dump_json(), usage, timing_headers(result.timings))

    return await metered_response(request, caller, usage_bound(items), produce)
