"""/v1/files (OpenAI's Files API, purpose "batch"): upload, list, get, content, delete. Files are their account's;
another account's file is a 404, exactly as a missing one."""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from starlette.datastructures import UploadFile

from clipserve.api.dependencies import get_context, run_store, started
from clipserve.api.metering import FreeCallerDep
from clipserve.api.protocol import ErrorResponse
from clipserve.api.protocol_batches import FileDeleted, FileList, FileObject
from clipserve.config import Settings
from clipserve.errors import InvalidRequestError, NotFoundError
from clipserve.service.auth import Caller
from clipserve.service.batch_files import FileStorage, UploadLimits, store_upload
from clipserve.store.batch_file_rows import new_file_id
from clipserve.store.batch_records import FileRecord
from clipserve.store.batches import BatchStore

router = APIRouter(
    tags=["batch"], responses={code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 429, 503)}
)
UPLOAD_PURPOSES = ("batch",)
_FORM_FIELDS = {"file", "purpose"}
_MULTIPART_OVERHEAD = 1024 * 1024  # boundaries, part headers and the purpose field around the file's bytes


def upload_body_limit(settings: Settings) -> int:
    """The body cap of POST /v1/files: the file limit plus the multipart framing (the file's own bytes are
    checked exactly while they are stored)."""
    return max(settings.max_request_bytes, settings.max_batch_file_bytes + _MULTIPART_OVERHEAD)


def account_of(caller: Caller) -> int | None:
    """Whose files and batches: the caller's account, or None in local mode (no accounts)."""
    return None if caller.key is None else caller.key.account_id


def batch_parts(request: Request) -> tuple[BatchStore, FileStorage]:
    context = get_context(request)
    return started(context.batches), started(context.batch_files)


@router.post("/v1/files", response_model=FileObject)
async def upload_file(request: Request, caller: FreeCallerDep) -> FileObject:
    store, storage = batch_parts(request)
    settings = get_context(request).settings
    async with request.form(max_files=1, max_fields=len(_FORM_FIELDS)) as form:
        unknown = sorted(set(form.keys()) - _FORM_FIELDS)
        if unknown:
            raise InvalidRequestError(
                f"Unrecognized request argument supplied: {unknown[0]}", param=unknown[0]
            )
        purpose = form.get("purpose")
        if purpose not in UPLOAD_PURPOSES:
            raise InvalidRequestError(
                f"purpose must be one of {', '.join(UPLOAD_PURPOSES)} (this server takes batch input files)",
                param="purpose",
            )
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidRequestError("send the file as the multipart field 'file'", param="file")
        filename = (upload.filename or "file.jsonl").replace("\x00", "")[:255] or "file.jsonl"
        file_id = new_file_id()
        limits = UploadLimits(settings.max_batch_file_bytes, settings.max_batch_requests)
        size, _ = await asyncio.to_thread(store_upload, storage, file_id, upload.file, limits)
    expires_at = store.expiry(settings.batch_file_retention_s)
    try:
        record = await run_store(
            request,
            lambda: store.create_file(
                account_of(caller),
                filename,
                "batch",
                size,
                file_id,
                expires_at=expires_at,
                file_id=file_id,
                max_account_bytes=settings.max_batch_storage_bytes_per_account,
            ),
        )
    except BaseException:
        await asyncio.to_thread(storage.delete, file_id)
        raise
    return FileObject.of(record)


@router.get("/v1/files", response_model=FileList)
async def list_files(
    request: Request,
    caller: FreeCallerDep,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    purpose: str | None = None,
    order: Literal["desc"] = "desc",
) -> FileList:
    store, _ = batch_parts(request)
    page = await run_store(request, lambda: store.list_files(account_of(caller), after, limit, purpose))
    return FileList.of([FileObject.of(record) for record in page.items], page.has_more)


async def _file(request: Request, caller: Caller, file_id: str) -> FileRecord:
    store, _ = batch_parts(request)
    return await run_store(request, lambda: store.get_file(account_of(caller), file_id))


@router.get("/v1/files/{file_id}", response_model=FileObject)
async def retrieve_file(request: Request, caller: FreeCallerDep, file_id: str) -> FileObject:
    return FileObject.of(await _file(request, caller, file_id))


@router.get("/v1/files/{file_id}/content", response_class=StreamingResponse)
async def file_content(request: Request, caller: FreeCallerDep, file_id: str) -> StreamingResponse:
    record = await _file(request, caller, file_id)
    _, storage = batch_parts(request)
    try:
        await asyncio.to_thread(storage.size, record.storage_key)
    except FileNotFoundError:
        raise NotFoundError(f"the bytes of file {file_id} are gone", param="file_id") from None
    return StreamingResponse(
        storage.read_chunks(record.storage_key),  # a sync iterator: Starlette reads it in a thread
        media_type="application/octet-stream",
        headers={"content-length": str(record.bytes)},
    )


@router.delete("/v1/files/{file_id}", response_model=FileDeleted)
async def delete_file(request: Request, caller: FreeCallerDep, file_id: str) -> FileDeleted:
    store, storage = batch_parts(request)
    record = await run_store(request, lambda: store.delete_file(account_of(caller), file_id))
    await asyncio.to_thread(storage.delete, record.storage_key)
    return FileDeleted(id=record.id)
