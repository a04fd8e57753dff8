"""POST /v1/rank: order texts and/or images by relevance to a text or image query (rerank shape)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from clipserve.api.auth import CallerDep
from clipserve.api.bodies import JsonBody, parse_off_the_loop
from clipserve.api.dependencies import AppContext, get_context, get_rank_service
from clipserve.api.headers import timing_headers
from clipserve.api.metering import Answer, metered_response
from clipserve.api.protocol import ErrorResponse, RankRequest, RankResponse, RankResult, RankUsage
from clipserve.service.inputs import InputItem, parse_item, parse_items
from clipserve.service.model_names import resolve_model_name
from clipserve.service.pricing import Usage, usage_bound
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
    model = resolve_model_name(body.model)
    query, documents = await parse_query_and_documents(request, body.query, body.documents, context)

    async def produce() -> Answer:
        result = await service.rank(query, documents, body.top_n, caller.account)
        response = RankResponse(
            model=model,
            results=[
                RankResult(
                    index=r.index,
                    relevance_score=r.relevance_score,
                    document=_document(body.documents[r.index]) if body.return_documents else None,
                )
                for r in result.results
            ],
            usage=RankUsage(
                prompt_tokens=result.text_tokens,
                total_tokens=result.text_tokens,
                image_count=result.image_count,
            ),
        )
        usage = Usage(images=result.image_count, tokens=result.text_tokens)
        return Answer(response.model_dump_json(exclude_none=True), usage, timing_headers(result.timings))

    return await metered_response(request, caller, usage_bound([query, *documents]), produce)


def _document(raw: object) -> object:
    """The document as the caller sent it; a bare string becomes {"text": ...} as in Cohere's shape."""
    return {"text": raw} if isinstance(raw, str) else raw


async def parse_query_and_documents(
    request: Request, query: Any, documents: list[Any], context: AppContext
) -> tuple[InputItem, list[InputItem]]:
    """The query and documents of a rank or rerank body as input items (off the loop for a large body)."""
    return await parse_off_the_loop(
        request,
        lambda: (
            parse_item(query, "query", context.input_limits),
            parse_items(documents, "documents", context.input_limits),
        ),
    )
