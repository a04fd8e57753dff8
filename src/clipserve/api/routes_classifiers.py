"""/v1/classifiers: create (train), add examples (retrain), list, get, delete. Creates and adds are metered."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from clipserve.api.auth import CallerDep
from clipserve.api.bodies import JsonBody, parse_off_the_loop
from clipserve.api.dependencies import get_classifier_service
from clipserve.api.metering import Answer, FreeCallerDep, metered_response
from clipserve.api.protocol import ErrorResponse
from clipserve.api.protocol_classifiers import (
    Classifier,
    ClassifierList,
    ClassifierUsage,
    CreateClassifierRequest,
    DeletedClassifier,
    ExamplesRequest,
)
from clipserve.service.classifiers import ClassifierService, Outcome
from clipserve.service.pricing import Usage
from clipserve.store.classifiers import ClassifierRecord

router = APIRouter(
    tags=["classifiers"],
    responses={code: {"model": ErrorResponse} for code in (400, 401, 404, 409, 429, 503)},
)
ServiceDep = Annotated[ClassifierService, Depends(get_classifier_service)]


def classifier_object(record: ClassifierRecord, usage: Usage | None = None) -> Classifier:
    trained = record.trained
    return Classifier(
        id=record.id, name=record.name, labels=record.labels, created_at=int(record.created_at.timestamp()),
        updated_at=int(record.updated_at.timestamp()), examples=record.examples,
        examples_per_label=dict(zip(record.labels, record.examples_per_label, strict=True)),
        zero_shot_prior=record.zero_shot_prior, template=record.template, C=trained.c,
        train_accuracy=trained.train_accuracy, cv_accuracy=trained.cv_accuracy,
        usage=None if usage is None else ClassifierUsage(
            prompt_tokens=usage.tokens, total_tokens=usage.tokens, image_count=usage.images
        ),
    )  # fmt: skip


def _answer(outcome: Outcome) -> Answer:
    body = classifier_object(outcome.record, outcome.usage).model_dump_json()
    return Answer(body, outcome.usage)


@router.post("/v1/classifiers", response_model=Classifier)
async def create_classifier(
    body: Annotated[CreateClassifierRequest, Depends(JsonBody(CreateClassifierRequest))],
    request: Request,
    caller: CallerDep,
    service: ServiceDep,
) -> Response:
    options = body.options
    plan = await parse_off_the_loop(
        request,
        lambda: service.plan_create(
            body.name, body.labels, body.examples,
            options.zero_shot_prior if options else None, options.template if options else None,
            options.C if options else None,
        ),
    )  # fmt: skip
    owner = caller.account

    async def produce() -> Answer:
        return _answer(await service.create(owner, plan))

    return await metered_response(request, caller, plan.usage_bound(), produce)


@router.post("/v1/classifiers/{classifier_id}/examples", response_model=Classifier)
async def add_examples(
    classifier_id: str,
    body: Annotated[ExamplesRequest, Depends(JsonBody(ExamplesRequest))],
    request: Request,
    caller: CallerDep,
    service: ServiceDep,
) -> Response:
    record = await service.get(caller.account, classifier_id)
    planned = await parse_off_the_loop(request, lambda: service.plan_add(record, body.examples))

    async def produce() -> Answer:
        return _answer(await service.add(record, planned))

    return await metered_response(request, caller, planned.usage_bound(), produce)


@router.get("/v1/classifiers", response_model=ClassifierList)
async def list_classifiers(caller: FreeCallerDep, service: ServiceDep) -> ClassifierList:
    records = await service.list_classifiers(caller.account)
    return ClassifierList(data=[classifier_object(record) for record in records])


@router.get("/v1/classifiers/{classifier_id}", response_model=Classifier)
async def get_classifier(classifier_id: str, caller: FreeCallerDep, service: ServiceDep) -> Classifier:
    return classifier_object(await service.get(caller.account, classifier_id))


@router.delete("/v1/classifiers/{classifier_id}", response_model=DeletedClassifier)
async def delete_classifier(
    classifier_id: str, caller: FreeCallerDep, service: ServiceDep
) -> DeletedClassifier:
    await service.delete(caller.account, classifier_id)
    return DeletedClassifier(id=classifier_id)
