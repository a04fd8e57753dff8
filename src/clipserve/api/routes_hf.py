"""Hugging Face's feature-extraction and sentence-similarity tasks: POST / (what `InferenceClient(base_url=...)` or
`model=<server URL>` posts both to, as to an Inference Endpoint), /embed and /similarity (TEI's names for them)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from clipserve.api.auth import CallerDep
from clipserve.api.bodies import JsonBody, parse_off_the_loop
from clipserve.api.dependencies import AppContext, get_context, get_embedding_service
from clipserve.api.headers import timing_headers
from clipserve.api.metering import Answer, metered_response
from clipserve.api.protocol import ErrorResponse
from clipserve.api.protocol_hf import FeatureExtractionRequest, SentenceSimilarityRequest
from clipserve.errors import InvalidRequestError
from clipserve.service.auth import Caller
from clipserve.service.embeddings import EmbeddingResult, EmbeddingService
from clipserve.service.inputs import InputItem, parse_items
from clipserve.service.pricing import Usage, usage_bound
from clipserve.service.similarity import cosine_scores

router = APIRouter(tags=["hugging face"])

_ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 409, 413, 429, 503)
}
HFRequest = FeatureExtractionRequest | SentenceSimilarityRequest
EmbeddingsDep = Annotated[EmbeddingService, Depends(get_embedding_service)]
ContextDep = Annotated[AppContext, Depends(get_context)]


def _task(body: dict[str, Any]) -> type[HFRequest]:
    inputs = body.get("inputs")
    is_pair = isinstance(inputs, dict) and "source_sentence" in inputs
    return SentenceSimilarityRequest if is_pair else FeatureExtractionRequest


@router.post("/", response_model=list[list[float]] | list[float], responses=_ERRORS)
async def hf_task(
    body: Annotated[HFRequest, Depends(JsonBody(_task, documented=(FeatureExtractionRequest,)))],
    request: Request,
    caller: CallerDep,
    context: ContextDep,
    service: EmbeddingsDep,
) -> Response:
    """feature-extraction (`inputs`: a string or list; answers a list of embeddings) or sentence-similarity
    (`inputs`: {source_sentence, sentences}; answers a list of cosines), by the shape of `inputs`."""
    if isinstance(body, SentenceSimilarityRequest):
        return await _similarity(body, request, caller, context, service)
    return await _feature_extraction(body, request, caller, context, service)


@router.post("/embed", response_model=list[list[float]], responses=_ERRORS)
async def feature_extraction(
    body: Annotated[FeatureExtractionRequest, Depends(JsonBody(FeatureExtractionRequest))],
    request: Request,
    caller: CallerDep,
    context: ContextDep,
    service: EmbeddingsDep,
) -> Response:
    return await _feature_extraction(body, request, caller, context, service)


@router.post("/similarity", response_model=list[float], responses=_ERRORS)
async def sentence_similarity(
    body: Annotated[SentenceSimilarityRequest, Depends(JsonBody(SentenceSimilarityRequest))],
    request: Request,
    caller: CallerDep,
    context: ContextDep,
    service: EmbeddingsDep,
) -> Response:
    return await _similarity(body, request, caller, context, service)


def _check_options(body: FeatureExtractionRequest, service: EmbeddingService) -> None:
    """Refuse what clipserve cannot do, rather than answer something else."""
    refusals = {
        "normalize": (body.normalize is False, "clipserve returns unit-length embeddings only"),
        "truncate": (body.truncate is False, "clipserve always cuts texts to CLIP's 77 tokens"),
        "truncation_direction": (body.truncation_direction == "left", "CLIP keeps a text's start"),
        "prompt_name": (body.prompt_name is not None, "CLIP has no named prompts"),
        "encoding_format": (
            body.encoding_format == "base64",
            "this route answers floats; /v1/embeddings answers base64",
        ),
    }
    for param, (refused, why) in refusals.items():
        if refused:
            raise InvalidRequestError(
                f"{param}={getattr(body, param)!r} is not supported: {why}", param=param
            )
    service.check_dimensions(body.dimensions)


async def _feature_extraction(
    body: FeatureExtractionRequest,
    request: Request,
    caller: Caller,
    context: AppContext,
    service: EmbeddingService,
) -> Response:
    _check_options(body, service)
    items = await parse_off_the_loop(
        request, lambda: parse_items(body.inputs, "inputs", context.input_limits)
    )

    def render(result: EmbeddingResult) -> str:
        return json.dumps(result.vectors.tolist())  # one list per input, a single string included (as TEI)

    return await _embed_and_answer(items, request, caller, context, service, render)


async def _similarity(
    body: SentenceSimilarityRequest,
    request: Request,
    caller: Caller,
    context: AppContext,
    service: EmbeddingService,
) -> Response:
    def parse() -> list[InputItem]:
        source = parse_items(body.inputs.source_sentence, "inputs.source_sentence", context.input_limits)
        if len(source) != 1:
            raise InvalidRequestError("source_sentence must be one item", param="inputs.source_sentence")
        return [*source, *parse_items(body.inputs.sentences, "inputs.sentences", context.input_limits)]

    items = await parse_off_the_loop(request, parse)

    def render(result: EmbeddingResult) -> str:
        return json.dumps(cosine_scores(result.vectors[0], result.vectors[1:]))

    return await _embed_and_answer(items, request, caller, context, service, render)


async def _embed_and_answer(
    items: list[InputItem],
    request: Request,
    caller: Caller,
    context: AppContext,
    service: EmbeddingService,
    render: Callable[[EmbeddingResult], str],
) -> Response:
    """Embed as /v1/embeddings does and bill the same (tokens and images), answering `render(result)`."""

    async def produce() -> Answer:
        result = await service.embed(items, account=caller.account)
        context.metrics.decode_seconds.observe(result.timings.decode_s)
        usage = Usage(images=result.image_count, tokens=result.text_tokens)
        return Answer(render(result), usage, timing_headers(result.timings))

    return await metered_response(request, caller, usage_bound(items), produce)
