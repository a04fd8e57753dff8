"""The Batch API's file rows (issue 13): input, output and error files, private to their account, within a
per-account storage quota checked under a per-account lock. The bytes live in service/batch_files.py's storage.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, Table, and_, delete, func, insert, or_, select, text

from clipserve.errors import BatchQuotaError, InvalidRequestError, NotFoundError
from clipserve.store.accounts import Clock, utc_now
from clipserve.store.batch_records import FileRecord, Page
from clipserve.store.database import Database
from clipserve.store.schema import batch_files


def new_file_id() -> str:
    return f"file-{secrets.token_hex(12)}"


def owned(table: Table, account_id: int | None) -> ColumnElement[bool]:
    """The rows of `table` that belong to the account (None: the local account of a server without accounts)."""
    column = table.c.account_id
    return column.is_(None) if account_id is None else column == account_id


class FileRows:
    def __init__(self, db: Database, clock: Clock = utc_now) -> None:
        self.db = db
        self.clock = clock

    def expiry(self, retention_s: float | None) -> datetime | None:
        """When a file made now expires under `retention_s` (None: kept until deleted)."""
        return None if retention_s is None else self.clock() + timedelta(seconds=retention_s)

    def create_file(
        self,
        account_id: int | None,
        filename: str,
        purpose: str,
        bytes: int,
        storage_key: str,
        *,
        expires_at: datetime | None = None,
        file_id: str | None = None,
        max_account_bytes: int | None = None,
    ) -> FileRecord:
        """A file's row; with `max_account_bytes`, the account's files (this one included) must fit it, checked
        under a per-account lock so concurrent uploads cannot pass it together (BatchQuotaError)."""
        record = FileRecord(
            file_id or new_file_id(),
            account_id,
            filename,
            purpose,
            bytes,
            storage_key,
            self.clock(),
            expires_at,
        )
        with self.db.write() as conn:
            if max_account_bytes is not None:
                self.lock_account_batches(conn, account_id)
                held = conn.execute(
                    select(func.coalesce(func.sum(batch_files.c.bytes), 0)).where(
                        owned(batch_files, account_id)
                    )
                ).scalar_one()
                if int(held) + bytes > max_account_bytes:
                    raise BatchQuotaError(
                        f"this account holds {int(held)} bytes of files; this one ({bytes} bytes) would pass its "
                        f"quota of {max_account_bytes}: delete files first",
                        param="file", code="file_storage_quota_exceeded",
                    )  # fmt: skip
            conn.execute(insert(batch_files).values(**record.__dict__))
        return record

    def lock_account_batches(self, conn: Connection, account_id: int | None) -> None:
        """Serialize an account's quota checks with their inserts (SQLite's BEGIN IMMEDIATE already does)."""
        if not self.db.is_sqlite:
            conn.execute(
                text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"batches:{account_id}"}
            )

    def get_file(self, account_id: int | None, file_id: str) -> FileRecord:
        """The caller's file; another account's is reported exactly as a missing one."""
        with self.db.read() as conn:
            row = (
                conn.execute(
                    select(batch_files).where(batch_files.c.id == file_id, owned(batch_files, account_id))
                )
                .mappings()
                .first()
            )
        if row is None:
            raise NotFoundError(f"No such File object: {file_id}", param="file_id")
        return FileRecord(**row)

    def list_files(
        self, account_id: int | None, after: str | None, limit: int, purpose: str | None = None
    ) -> Page[FileRecord]:
        conditions = [owned(batch_files, account_id)]
        if purpose is not None:
            conditions.append(batch_files.c.purpose == purpose)
        with self.db.read() as conn:
            rows = page(conn, batch_files, conditions, account_id, after, limit)
        return Page([FileRecord(**row) for row in rows[:limit]], len(rows) > limit)

    def delete_file(self, account_id: int | None, file_id: str) -> FileRecord:
        """Forget the file's row and return it (the caller deletes its bytes); 404 if not the caller's."""
        record = self.get_file(account_id, file_id)
        with self.db.write() as conn:
            deleted = conn.execute(
                delete(batch_files).where(batch_files.c.id == file_id, owned(batch_files, account_id))
            ).rowcount
        if not deleted:
            raise NotFoundError(f"No such File object: {file_id}", param="file_id")
        return record

    def expired_files(self, now: datetime | None = None, limit: int = 1000) -> list[FileRecord]:
        """Files past their retention (expires_at), oldest first; delete each with delete_file."""
        now = now or self.clock()
        with self.db.read() as conn:
            rows = conn.execute(
                select(batch_files)
                .where(batch_files.c.expires_at.is_not(None), batch_files.c.expires_at <= now)
                .order_by(batch_files.c.expires_at)
                .limit(limit)
            ).mappings()
            return [FileRecord(**row) for row in rows]


def page(
    conn: Connection,
    table: Table,
    conditions: list[ColumnElement[bool]],
    account_id: int | None,
    after: str | None,
    limit: int,
) -> list[Any]:
    """limit + 1 rows, newest first, after the row `after` (one of the caller's)."""
    if after is not None:
        anchor = conn.execute(
            select(table.c.created_at).where(table.c.id == after, owned(table, account_id))
        ).first()
        if anchor is None:
            raise InvalidRequestError(f"no object with id {after!r} to list after", param="after")
        conditions = [
            *conditions,
            or_(
                table.c.created_at < anchor[0],
                and_(table.c.created_at == anchor[0], table.c.id < after),
            ),
        ]
    query = select(table).where(*conditions).order_by(table.c.created_at.desc(), table.c.id.desc())
    return list(conn.execute(query.limit(limit + 1)).mappings())
