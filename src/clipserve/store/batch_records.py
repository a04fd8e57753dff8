"""Plain records of the Batch API store (issue 13): files, batches, line claims and answers."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

T = TypeVar("T")

# OpenAI's batch statuses. A batch is created in_progress (validation runs before the row exists) or failed.
ACTIVE = ("validating", "in_progress")
TERMINAL = ("failed", "completed", "expired", "cancelled")


@dataclass(frozen=True)
class FileRecord:
    id: str
    account_id: int | None  # None: local mode (no accounts)
    filename: str
    purpose: str  # batch | batch_output
    bytes: int
    storage_key: str
    created_at: datetime
    expires_at: datetime | None


@dataclass(frozen=True)
class LineError:
    """One reason a batch failed validation, as OpenAI's `errors.data[]` item."""

    code: str
    message: str
    param: str | None = None
    line: int | None = None  # 1-based line of the input file


@dataclass(frozen=True)
class NewLine:
    """A validated input line, copied into the batch when it is created."""

    line: int  # 1-based line of the input file
    custom_id: str
    body_json: str  # the line's `body`, as JSON text


@dataclass(frozen=True)
class BatchRecord:
    id: str
    account_id: int | None
    key_id: int | None
    input_file_id: str
    endpoint: str
    completion_window: str
    status: str
    errors: list[LineError] | None
    metadata: dict[str, Any] | None
    output_file_id: str | None
    error_file_id: str | None
    total: int
    completed: int
    failed: int
    created_at: datetime
    expires_at: datetime
    in_progress_at: datetime | None = None
    finalizing_at: datetime | None = None
    completed_at: datetime | None = None
    failed_at: datetime | None = None
    expired_at: datetime | None = None
    cancelling_at: datetime | None = None
    cancelled_at: datetime | None = None
    finalize_to: str | None = None  # completed | cancelled | expired: the status finalize will set


@dataclass(frozen=True)
class LineClaim:
    """A line this instance may run until `claimed_until` (renew to keep it longer)."""

    batch_id: str
    line: int
    custom_id: str
    url: str  # the batch's endpoint, e.g. "/v1/embeddings"
    body_json: str
    account_id: int | None
    key_id: int | None
    claimed_until: datetime


@dataclass(frozen=True)
class Answer:
    """One answered line: the output line (JSON text) and its response status (None: no response)."""

    line: int
    status_code: int | None
    result_json: str

    @property
    def succeeded(self) -> bool:
        """Output file (True) or error file (False), as OpenAI sorts them."""
        return self.status_code == 200


@dataclass(frozen=True)
class Page(Generic[T]):
    """A page of a list, newest first; `has_more` says whether a page after it exists."""

    items: list[T] = field(default_factory=list)
    has_more: bool = False
