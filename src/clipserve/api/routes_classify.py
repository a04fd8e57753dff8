"""POST /v1/classify: Jina's shape, or the Hugging Face zero-shot-image-classification shape."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from clipserve.api.auth import CallerDep
from clipserve.api.bodies import JsonBody
from clipserve.api.dependencies import (
    AppContext,
    get_classification_service,
    get_classifier_service,
    get_context,
)
from clipserve.api.endpoint_calls import classify_body_model, prepare_classify
from clipserve.api.metering import metered_response
from clipserve.api.protocol import ClassifyRequest, ClassifyResponse, ErrorResponse, HFClassifyRequest
from clipserve.service.classifiers import ClassifierService
from clipserve.service.classify import ClassificationService

router = APIRouter(tags=["classification"])

ClassifyBody = JsonBody(classify_body_model, documented=(ClassifyRequest, HFClassifyRequest))


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
    call = prepare_classify(body, context, service, classifiers, caller.account, caller.account)
    return await metered_response(request, caller, call.bound, call.produce)
