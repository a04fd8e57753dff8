"""POST /v1/classify: Jina's shape, or the Hugging Face zero-shot-image-classification shape."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from clipserve.api.auth import CallerDep
from clipserve.api.bodies import JsonBody
from clipserve.api.dependencies import (
    AppContext,
    get_classification_service,
    get_classifier_service,
    get_context,
)
from clipserve.api.headers import timing_headers
from clipserve.api.metering import Answer, metered_response
from clipserve.api.protocol import (
    Classification,
    ClassifyRequest,
    ClassifyResponse,
    ClassifyUsage,
    ErrorResponse,
    HFClassifyRequest,
    LabelPrediction,
)
from clipserve.errors import InvalidRequestError
from clipserve.service.classifiers import ClassifierService
from clipserve.service.classify import ClassificationService, ClassifyQuery, ClassifyResult
from clipserve.service.inputs import InputItem, InputLimits, parse_image_items, parse_items
from clipserve.service.model_names import resolve_model_name
from clipserve.service.pricing import Usage
from clipserve.service.templates import HF_DEFAULT_TEMPLATE

router = APIRouter(tags=["classification"])


def _body_model(body: dict[str, Any]) -> type[ClassifyRequest | HFClassifyRequest]:
    return HFClassifyRequest if "inputs" in body else ClassifyRequest


ClassifyBody = JsonBody(_body_model, documented=(ClassifyRequest, HFClassifyRequest))


@router.post(
    "/v1/classify",
    response_model=ClassifyResponse,
    responses={code: {"model": ErrorResponse} for code in (400, 401, 404, 409, 429, 503)},
)
async def classify(
    body: Annotated[ClassifyRequest | HFClassifyRequest, Depends(ClassifyBody)],
    request: Request,
    caller: CallerDep,
    context: Annotated[AppContext, Depends(get_context)],
    service: Annotated[ClassificationService, Depends(get_classification_service)],
    classifiers: Annotated[ClassifierService, Depends(get_classifier_service)],
) -> Response:
    if isinstance(body, ClassifyRequest) and body.classifier is not None:
        return await _classify_with(body, request, caller, context.input_limits, classifiers)
    if isinstance(body, HFClassifyRequest):
        query = _hf_query(body, context.input_limits)
        render = _render_hf
    else:
        model = resolve_model_name(body.model)
        query = _query(body, context.input_limits)

        def render(result: ClassifyResult) -> str:
            return _render(result, model)

    async def produce() -> Answer:
        result = await service.classify(query, caller.account)
        usage = Usage(
            images=result.image_count,
            tokens=result.prompt_tokens + result.cached_tokens,
            cached_tokens=result.cached_tokens,
        )
        return Answer(render(result), usage, timing_headers(result.timings))

    return await metered_response(request, caller, service.usage_bound(query), produce)


async def _classify_with(
    body: ClassifyRequest,
    request: Request,
    caller: CallerDep,
    limits: InputLimits,
    classifiers: ClassifierService,
) -> Response:
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
    owner = caller.account

    async def produce() -> Answer:
        result = await classifiers.classify(owner, classifier_id, images, body.top_k)
        return Answer(
            _render(result, model), Usage(images=result.image_count), timing_headers(result.timings)
        )

    return await metered_response(request, caller, Usage(images=len(images)), produce)


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
