"""/v1/batches (OpenAI's Batch API): create (the input file is validated up front), get, list, cancel. The lines
run in the background (service/batch_runner.py); another account's batch is a 404, exactly as a missing one."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError

from clipserve.api.bodies import JsonBody
from clipserve.api.dependencies import get_context, run_store, started
from clipserve.api.endpoint_calls import prepare_line
from clipserve.api.errors import error_answer
from clipserve.api.json_limits import parse_json
from clipserve.api.metering import FreeCallerDep
from clipserve.api.protocol import ErrorResponse
from clipserve.api.protocol_batches import BatchList, BatchObject, CreateBatchRequest
from clipserve.api.routes_files import account_of, batch_parts
from clipserve.errors import ClipserveError, InvalidRequestError, NotFoundError
from clipserve.service.batch_validation import BATCH_ENDPOINTS, BatchInputLimits, validate_input
from clipserve.store.batch_records import BatchRecord, LineError, NewLine

router = APIRouter(
    tags=["batch"], responses={code: {"model": ErrorResponse} for code in (400, 401, 404, 409, 429, 503)}
)
COMPLETION_WINDOWS = ("24h",)


@router.post("/v1/batches", response_model=BatchObject)
async def create_batch(
    request: Request,
    caller: FreeCallerDep,
    body: Annotated[CreateBatchRequest, Depends(JsonBody(CreateBatchRequest))],
) -> BatchObject:
    context = get_context(request)
    settings = context.settings
    store, storage = batch_parts(request)
    if body.endpoint not in BATCH_ENDPOINTS:
        raise InvalidRequestError(
            f"endpoint must be one of {', '.join(BATCH_ENDPOINTS)}, not {body.endpoint!r}", param="endpoint"
        )
    if body.completion_window not in COMPLETION_WINDOWS:
        raise InvalidRequestError("completion_window must be '24h'", param="completion_window")
    account = account_of(caller)
    input_file = await run_store(request, lambda: store.get_file(account, body.input_file_id))
    if input_file.purpose != "batch":
        raise InvalidRequestError(
            f"file {input_file.id} has purpose {input_file.purpose!r}; a batch's input has purpose 'batch'",
            param="input_file_id",
        )
    parser = started(context.body_parser)
    request_id = str(request.state.request_id)
    inline_bytes = parser.inline_bytes

    def chunks() -> Iterator[bytes]:
        try:
            yield from storage.read_chunks(input_file.storage_key)
        except FileNotFoundError:
            raise NotFoundError(
                f"the bytes of file {input_file.id} are gone", param="input_file_id"
            ) from None

    async def check_body(line: NewLine) -> LineError | None:
        """The online endpoint's own checks of this body (prepare only: nothing runs, nothing is charged)."""
        try:
            raw = line.body_json  # a large body is parsed off the event loop, as the online route's is
            parsed = json.loads(raw) if len(raw) <= inline_bytes else await asyncio.to_thread(json.loads, raw)
            await prepare_line(context, body.endpoint, parsed, caller.account, caller.account)
        except (ClipserveError, RequestValidationError) as exc:
            error = error_answer(exc, request_id)[1]["error"]
            return LineError(
                error.get("code") or "invalid_request", error["message"], error.get("param"), line.line
            )
        return None

    limits = BatchInputLimits(
        settings.max_batch_requests, settings.max_request_bytes, settings.max_batch_errors_reported
    )
    result = await validate_input(
        chunks,
        body.endpoint,
        limits,
        lambda raw: parse_json(raw, parser.limits),
        check_body,
    )
    expires_at = store.clock() + timedelta(seconds=settings.batch_window_s)
    key_id = None if caller.key is None else caller.key.id

    def create() -> BatchRecord:
        return store.create_batch(
            account, key_id, input_file.id, body.endpoint, body.metadata, len(result.lines), expires_at,
            lines=result.lines, errors=result.errors if result.error_count else None,
            max_active=settings.max_active_batches_per_account,
        )  # fmt: skip

    record = await run_store(request, create)
    if context.batch_runner is not None and record.status == "in_progress":
        context.batch_runner.wake()
    return BatchObject.of(record)


@router.get("/v1/batches", response_model=BatchList)
async def list_batches(
    request: Request,
    caller: FreeCallerDep,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> BatchList:
    store, _ = batch_parts(request)
    page = await run_store(request, lambda: store.list_batches(account_of(caller), after, limit))
    return BatchList.of([BatchObject.of(record) for record in page.items], page.has_more)


@router.get("/v1/batches/{batch_id}", response_model=BatchObject)
async def retrieve_batch(request: Request, caller: FreeCallerDep, batch_id: str) -> BatchObject:
    store, _ = batch_parts(request)
    return BatchObject.of(await run_store(request, lambda: store.get_batch(account_of(caller), batch_id)))


@router.post("/v1/batches/{batch_id}/cancel", response_model=BatchObject)
async def cancel_batch(request: Request, caller: FreeCallerDep, batch_id: str) -> BatchObject:
    store, _ = batch_parts(request)
    record = await run_store(request, lambda: store.request_cancel(account_of(caller), batch_id))
    runner = get_context(request).batch_runner
    if runner is not None:
        runner.wake()
    return BatchObject.of(record)
