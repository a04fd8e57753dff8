"""Wire models of /v1/files and /v1/batches, in OpenAI's shapes (so `client.files.*` and `client.batches.*` work)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Literal, Self

from pydantic import BaseModel, Field, StringConstraints

from clipserve.api.protocol import RequestModel
from clipserve.store.batch_records import BatchRecord, FileRecord

# OpenAI's metadata limits: 16 pairs, keys up to 64 characters, values up to 512.
MetadataKey = Annotated[str, StringConstraints(min_length=1, max_length=64)]
MetadataValue = Annotated[str, StringConstraints(max_length=512)]


def unix(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp())


class _ListOf(BaseModel):
    """`of(data, has_more)` for OpenAI's cursor lists: first_id and last_id are the page's ends."""

    @classmethod
    def of(cls, data: Sequence[FileObject] | Sequence[BatchObject], has_more: bool) -> Self:
        first, last = (data[0].id, data[-1].id) if data else (None, None)
        return cls.model_validate({"data": data, "first_id": first, "last_id": last, "has_more": has_more})


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["processed"] = "processed"
    expires_at: int | None = None
    status_details: str | None = None

    @classmethod
    def of(cls, record: FileRecord) -> FileObject:
        return cls(
            id=record.id, bytes=record.bytes, created_at=int(record.created_at.timestamp()),
            filename=record.filename, purpose=record.purpose, expires_at=unix(record.expires_at),
        )  # fmt: skip


class FileList(_ListOf):
    object: Literal["list"] = "list"
    data: list[FileObject]
    first_id: str | None
    last_id: str | None
    has_more: bool


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True


class CreateBatchRequest(RequestModel):
    input_file_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    endpoint: str
    completion_window: str
    metadata: Annotated[dict[MetadataKey, MetadataValue], Field(max_length=16)] | None = None


class BatchError(BaseModel):
    code: str
    message: str
    param: str | None = None
    line: int | None = None


class BatchErrors(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchError]


class BatchRequestCounts(BaseModel):
    total: int
    completed: int
    failed: int


class BatchObject(BaseModel):
    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    errors: BatchErrors | None
    input_file_id: str
    completion_window: str
    status: str
    output_file_id: str | None
    error_file_id: str | None
    created_at: int
    in_progress_at: int | None
    expires_at: int | None
    finalizing_at: int | None
    completed_at: int | None
    failed_at: int | None
    expired_at: int | None
    cancelling_at: int | None
    cancelled_at: int | None
    request_counts: BatchRequestCounts
    metadata: dict[str, str] | None

    @classmethod
    def of(cls, record: BatchRecord) -> BatchObject:
        errors = None
        if record.errors is not None:
            errors = BatchErrors(data=[BatchError(**e.__dict__) for e in record.errors])
        return cls(
            id=record.id, endpoint=record.endpoint, errors=errors, input_file_id=record.input_file_id,
            completion_window=record.completion_window, status=record.status,
            output_file_id=record.output_file_id, error_file_id=record.error_file_id,
            created_at=int(record.created_at.timestamp()), in_progress_at=unix(record.in_progress_at),
            expires_at=unix(record.expires_at), finalizing_at=unix(record.finalizing_at),
            completed_at=unix(record.completed_at), failed_at=unix(record.failed_at),
            expired_at=unix(record.expired_at), cancelling_at=unix(record.cancelling_at),
            cancelled_at=unix(record.cancelled_at),
            request_counts=BatchRequestCounts(total=record.total, completed=record.completed, failed=record.failed),
            metadata=record.metadata,
        )  # fmt: skip


class BatchList(_ListOf):
    object: Literal["list"] = "list"
    data: list[BatchObject]
    first_id: str | None
    last_id: str | None
    has_more: bool
