"""Where the Batch API's file bytes live: a directory (default DATA_DIR/files) or any fsspec URL.

A local file is written under a temporary name, fsynced, then renamed into place (and the directory fsynced),
so a reader never sees half a file and a crash leaves at most a stray temporary. A URL (`s3://bucket/prefix`
with s3fs installed, `gs://...`) goes through fsspec: written under a temporary key, then moved into place.
Replicas must share the location: a shared path, or an object store URL.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, BinaryIO

from clipserve.errors import InvalidRequestError, NotFoundError, RequestTooLargeError
from clipserve.service.batch_validation import RequestLineCounter
from clipserve.store.batches import BatchStore

if TYPE_CHECKING:
    from clipserve.config import Settings

logger = logging.getLogger(__name__)
_KEY = re.compile(r"[A-Za-z0-9_.\-]{1,200}")
READ_CHUNK = 1024 * 1024


class FileStorage:
    """Bytes of files by key (a file id): write, read in chunks, delete. A plain path needs nothing more; a URL
    needs fsspec (the `batch` extra) and its filesystem's package."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.local = "://" not in root or root.startswith("file://")
        self.fs: Any = None
        if self.local:
            self.path = root.removeprefix("file://").rstrip("/") or "/"
            os.makedirs(self.path, exist_ok=True)
            return
        try:
            import fsspec
        except ImportError as exc:
            raise RuntimeError(
                f"batch_files_dir {root!r} is a URL: install fsspec (pip install 'clipserve[batch]') and the "
                "package of its filesystem (s3fs for s3://, gcsfs for gs://, adlfs for az://)"
            ) from exc
        self.fs, path = fsspec.core.url_to_fs(root)
        self.path = str(path).rstrip("/")

    @classmethod
    def from_settings(cls, settings: Settings) -> FileStorage:
        return cls(settings.resolved_batch_files_dir)

    def _where(self, key: str) -> str:
        if not _KEY.fullmatch(key) or key.startswith("."):
            raise ValueError(f"not a storage key: {key!r}")
        return f"{self.path}/{key}"

    def write_bytes(self, key: str, data: bytes) -> str:
        """Store `data` under `key` (replacing any earlier bytes); returns the key."""
        self.write_stream(key, [data])
        return key

    def write_stream(self, key: str, chunks: Iterable[bytes]) -> int:
        """Store the chunks under `key`, all or nothing (an exception from `chunks` leaves the key as it was);
        returns the bytes written."""
        target = self._where(key)
        temporary = f"{self.path}/.{key}.{secrets.token_hex(4)}.tmp"
        try:
            if self.local:
                with open(temporary, "wb") as out:
                    size = _copy(chunks, out)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(temporary, target)
            else:
                with self.fs.open(temporary, "wb") as out:
                    size = _copy(chunks, out)
                self.fs.mv(temporary, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                self._remove(temporary)
            raise
        if self.local:
            _fsync_directory(self.path)
        return size

    def read_chunks(self, key: str, chunk_bytes: int = READ_CHUNK) -> Iterator[bytes]:
        """The stored bytes, chunk by chunk (FileNotFoundError if they are gone)."""
        where = self._where(key)
        with open(where, "rb") if self.local else self.fs.open(where, "rb") as source:
            while chunk := source.read(chunk_bytes):
                yield chunk

    def read_bytes(self, key: str) -> bytes:
        return b"".join(self.read_chunks(key))

    def size(self, key: str) -> int:
        where = self._where(key)
        return os.path.getsize(where) if self.local else int(self.fs.size(where))

    def delete(self, key: str) -> None:
        """Forget the bytes; a key already gone is fine (a delete repeated after a crash)."""
        with contextlib.suppress(FileNotFoundError):
            self._remove(self._where(key))

    def _remove(self, where: str) -> None:
        if self.local:
            os.unlink(where)
        else:
            self.fs.rm_file(where)


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int  # settings.max_batch_file_bytes
    max_requests: int  # settings.max_batch_requests


def store_upload(storage: FileStorage, key: str, source: BinaryIO, limits: UploadLimits) -> tuple[int, int]:
    """Copy an uploaded file into storage within the limits: (bytes, request lines). Over a limit, nothing is
    stored: RequestTooLargeError (413) for the size, InvalidRequestError (400) for the lines."""
    lines = RequestLineCounter()

    def chunks() -> Iterator[bytes]:
        size = 0
        while chunk := source.read(READ_CHUNK):
            size += len(chunk)
            if size > limits.max_bytes:
                raise RequestTooLargeError(
                    f"the file is over this server's limit of {limits.max_bytes} bytes", param="file",
                    code="file_too_large",
                )  # fmt: skip
            lines.feed(chunk)
            if lines.count > limits.max_requests:
                raise _too_many(limits)
            yield chunk
        if lines.finish() > limits.max_requests:
            raise _too_many(limits)

    size = storage.write_stream(key, chunks())
    return size, lines.count


def _too_many(limits: UploadLimits) -> InvalidRequestError:
    return InvalidRequestError(
        f"the file has more than {limits.max_requests} request lines, this server's limit per batch",
        param="file", code="too_many_requests",
    )  # fmt: skip


def delete_expired_files(store: BatchStore, storage: FileStorage, now: datetime | None = None) -> int:
    """Delete the files past their retention: bytes first, then the row (a crash between leaves a row whose
    next sweep finishes it, never bytes nobody can find). Returns how many rows went."""
    deleted = 0
    for record in store.expired_files(now):
        try:
            storage.delete(record.storage_key)
        except OSError:
            logger.exception("could not delete the bytes of expired file %s; will retry", record.id)
            continue
        with contextlib.suppress(NotFoundError):  # deleted meanwhile by its owner
            store.delete_file(record.account_id, record.id)
            deleted += 1
    return deleted


def _copy(chunks: Iterable[bytes], out: BinaryIO) -> int:
    size = 0
    for chunk in chunks:
        out.write(chunk)
        size += len(chunk)
    return size


def _fsync_directory(path: str) -> None:
    """Make the rename durable (POSIX: the directory entry is on disk only after the directory is fsynced)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
