"""What /v1/embeddings, /v1/classify and /v1/rank do once their JSON body is parsed: one code path for the online
routes and for the lines of a batch (service/batch_runner.py), so a batch line's answer is the online answer.

`prepare_*` check the request and parse its items (raising the same typed errors the routes raise) and return a
`PreparedCall`: the most it can cost (`bound`, what admission or the batch's credit check reserves) and `produce`,
the model work that gives the answer and its exact usage. Metering is the caller's business: the online routes
wrap it in api/metering.metered_response, the batch runner charges each line at the batch price.

`account` is whose data the call may read (a custom classifier's owner); `tenant` is whose turn the work waits for
in the model queues: the account itself online, its background tenant (runtime/fair_queue.background_tenant) for a
batch, so batch lines run only on capacity no online request wants.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from clipserve.api.bodies import validate_body
from clipserve.api.dependencies import AppContext, started
from clipserve.api.headers import timing_headers
from clipserve.api.metering import Answer
from clipserve.api.protocol import (
    Classification,
    ClassifyRequest,
    ClassifyResponse,
    ClassifyUsage,
    EmbeddingData,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
    HFClassifyRequest,
    LabelPrediction,
    RankRequest,
    RankResponse,
    RankResult,
    RankUsage,
)
from clipserve.errors import InvalidRequestError
from clipserve.service.batch_validation import BATCH_ENDPOINTS
from clipserve.service.classifiers import ClassifierService
from clipserve.service.classify import ClassificationService, ClassifyQuery, ClassifyResult
from clipserve.service.embedding_options import check_jina_options
from clipserve.service.embeddings import EmbeddingService
from clipserve.service.encoding import choose_encoding, encode_vector
from clipserve.service.inputs import (
    InputItem,
    InputLimits,
    parse_image_items,
    parse_item,
    parse_items,
    parse_request_items,
)
from clipserve.service.model_names import resolve_model_name
from clipserve.service.pricing import Usage, usage_bound
from clipserve.service.rank import RankService
from clipserve.service.templates import HF_DEFAULT_TEMPLATE

T = TypeVar("T")


class ParseItems(Protocol):
    """Runs a call's per-item parsing: off the event loop for a large body (api/bodies.parse_off_the_loop)."""

    def __call__(self, work: Callable[[], T], /) -> Awaitable[T]: ...


@dataclass(frozen=True)
class PreparedCall:
    """A checked request: the most it may cost, and the work that answers it."""

    bound: Usage
    produce: Callable[[], Awaitable[Answer]]


# /v1/embeddings


async def prepare_embeddings(
    body: EmbeddingRequest,
    context: AppContext,
    service: EmbeddingService,
    tenant: str,
    parse: ParseItems,
) -> PreparedCall:
    model = resolve_model_name(body.model)
    service.check_dimensions(body.dimensions)
    check_jina_options(normalized=body.normalized, late_chunking=body.late_chunking)
    encoding = choose_encoding(body.encoding_format, body.embedding_type)
    items = await parse(
        lambda: parse_request_items(body.input, body.messages, context.input_limits, body.modality)
    )

    async def produce() -> Answer:
        result = await service.embed(items, account=tenant)
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

    return PreparedCall(usage_bound(items), produce)


# /v1/classify


def classify_body_model(body: dict[str, Any]) -> type[ClassifyRequest | HFClassifyRequest]:
    """Which of classify's two shapes a body is: Hugging Face's ("inputs") or Jina's."""
    return HFClassifyRequest if "inputs" in body else ClassifyRequest


def prepare_classify(
    body: ClassifyRequest | HFClassifyRequest,
    context: AppContext,
    service: ClassificationService,
    classifiers: ClassifierService,
    account: str,
    tenant: str,
) -> PreparedCall:
    if isinstance(body, ClassifyRequest) and body.classifier is not None:
        return _prepare_classify_with(body, context.input_limits, classifiers, account, tenant)
    if isinstance(body, HFClassifyRequest):
        query = _hf_query(body, context.input_limits)
        render = _render_hf
    else:
        model = resolve_model_name(body.model)
        query = _query(body, context.input_limits)

        def render(result: ClassifyResult) -> str:
            return _render(result, model)

    async def produce() -> Answer:
        result = await service.classify(query, tenant)
        usage = Usage(
            images=result.image_count,
            tokens=result.prompt_tokens + result.cached_tokens,
            cached_tokens=result.cached_tokens,
        )
        return Answer(render(result), usage, timing_headers(result.timings))

    return PreparedCall(service.usage_bound(query), produce)


def _prepare_classify_with(
    body: ClassifyRequest, limits: InputLimits, classifiers: ClassifierService, owner: str, tenant: str
) -> PreparedCall:
    """Classify with a custom classifier (issue 15): its weights, no prompts; only the images are charged."""
    classifier_id = body.classifier
    assert classifier_id is not None
    for field, given in (("labels", body.labels is not None), ("template", body.template is not None),
                         ("multi_label", body.multi_label)):  # fmt: skip
        if given:
            raise InvalidRequestError(
                f"'{field}' cannot be used with 'classifier' (the classifier holds its labels and weights)",
                param=field,
            )
    model = resolve_model_name(body.model)
    images = _images(body, limits)
    classifiers.check_query(images, body.top_k)

    async def produce() -> Answer:
        result = await classifiers.classify(owner, classifier_id, images, body.top_k, tenant=tenant)
        return Answer(
            _render(result, model), Usage(images=result.image_count), timing_headers(result.timings)
        )

    return PreparedCall(Usage(images=len(images)), produce)


def _render(result: ClassifyResult, model: str) -> str:
    response = ClassifyResponse(
        data=[
            Classification(
                index=i,
                prediction=ranked[0].label,
                score=ranked[0].score,
                predictions=[LabelPrediction(label=p.label, score=p.score) for p in ranked],
            )
            for i, ranked in enumerate(result.predictions)
        ],
        model=model,
        usage=ClassifyUsage(
            prompt_tokens=result.prompt_tokens,
            total_tokens=result.prompt_tokens,
            cached_tokens=result.cached_tokens,
            image_count=result.image_count,
        ),
    )
    return response.model_dump_json()


def _images(request: ClassifyRequest, limits: InputLimits) -> list[InputItem]:
    if (request.input is None) == (request.image is None):
        raise InvalidRequestError("send exactly one of 'input' (images) or 'image'", param="input")
    if request.image is not None:
        return parse_image_items(request.image, "image", limits)
    return parse_items(request.input, "input", limits)


def _query(request: ClassifyRequest, limits: InputLimits) -> ClassifyQuery:
    if request.labels is None:
        raise InvalidRequestError("send 'labels' (zero-shot) or 'classifier' (a custom classifier's id)",
                                  param="labels")  # fmt: skip
    images = _images(request, limits)
    return ClassifyQuery(
        images=images,
        labels=request.labels,
        template=request.template,
        top_k=request.top_k,
        multi_label=request.multi_label,
    )


def _hf_query(request: HFClassifyRequest, limits: InputLimits) -> ClassifyQuery:
    labels = request.parameters.candidate_labels
    if isinstance(labels, str):  # the HF widget sends "cat, dog"
        labels = [label.strip() for label in labels.split(",") if label.strip()]
    return ClassifyQuery(
        images=parse_image_items(request.inputs, "inputs", limits),
        labels=labels,
        template=request.parameters.hypothesis_template,
        default_template=HF_DEFAULT_TEMPLATE,
        labels_param="parameters.candidate_labels",
        template_param="parameters.hypothesis_template",
    )


def _render_hf(result: ClassifyResult) -> str:
    ranked = [[{"label": p.label, "score": p.score} for p in image] for image in result.predictions]
    # One image (what HF clients send): a flat list, as the transformers pipeline returns; several: one list each.
    payload: object = ranked[0] if len(ranked) == 1 else ranked
    return json.dumps(payload)


# /v1/rank


async def parse_query_and_documents(
    context: AppContext, query: Any, documents: list[Any], parse: ParseItems
) -> tuple[InputItem, list[InputItem]]:
    """The query and documents of a rank or rerank body as input items."""
    return await parse(
        lambda: (
            parse_item(query, "query", context.input_limits),
            parse_items(documents, "documents", context.input_limits),
        )
    )


async def prepare_rank(
    body: RankRequest, context: AppContext, service: RankService, tenant: str, parse: ParseItems
) -> PreparedCall:
    model = resolve_model_name(body.model)
    query, documents = await parse_query_and_documents(context, body.query, body.documents, parse)

    async def produce() -> Answer:
        result = await service.rank(query, documents, body.top_n, tenant)
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

    return PreparedCall(usage_bound([query, *documents]), produce)


def _document(raw: object) -> object:
    """The document as the caller sent it; a bare string becomes {"text": ...} as in Cohere's shape."""
    return {"text": raw} if isinstance(raw, str) else raw


# a batch line


async def _in_thread(work: Callable[[], T]) -> T:
    return await asyncio.to_thread(work)


async def prepare_line(
    context: AppContext, url: str, body: dict[str, Any], account: str, tenant: str
) -> PreparedCall:
    """A batch line's request as the online route at `url` would run it, from its JSON body (already parsed and
    checked against the JSON limits when the file was validated): the same validation, errors and answer."""
    if url == "/v1/embeddings":
        embeddings = validate_body(EmbeddingRequest, body)
        return await prepare_embeddings(embeddings, context, started(context.embeddings), tenant, _in_thread)
    if url == "/v1/classify":
        classify = validate_body(classify_body_model(body), body)
        return await asyncio.to_thread(
            prepare_classify,
            classify,
            context,
            started(context.classification),
            started(context.classifiers),
            account,
            tenant,
        )
    if url == "/v1/rank":
        rank = validate_body(RankRequest, body)
        return await prepare_rank(rank, context, started(context.ranking), tenant, _in_thread)
    raise InvalidRequestError(f"batches run {', '.join(BATCH_ENDPOINTS)}, not {url}", param="url")
