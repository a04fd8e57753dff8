"""The collections catalogue: which collections exist, who owns them, and their vector-store key.

Deleting is three steps, each safe to repeat, so a crash anywhere leaves something the next startup or
periodic sweep finishes (instead of items orphaned in the store forever): the row is first handed to the owner
`deleting:<row id>` (at once invisible to its caller, and the name free again), then the store's collection
is dropped, then the row is deleted. Pending rows are finished by `CollectionService.finish_pending_deletes`,
at startup and periodically after (never on a caller's request).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, delete, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from clipserve.errors import CollectionQuotaError, ConflictError, InvalidRequestError, NotFoundError
from clipserve.store.database import Database
from clipserve.store.schema import collections

NAME_LENGTH = 128  # the column's size
# fullmatch, not `^...$`: `$` also matches before a trailing newline (a 129-character name, a 500 on Postgres)
_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.\-]{{0,{NAME_LENGTH - 1}}}")
_DELETING = "deleting:"  # owner prefix of rows being deleted; ";" is the next character, ending the range


def check_name(name: object, param: str = "name") -> str:
    """A collection name as created, and as addressed in a URL path (so both refuse the same names)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidRequestError(
            f"a collection name is 1-{NAME_LENGTH} letters, digits, '_', '-' or '.', starting with a letter "
            "or digit",
            param=param,
        )
    return name


def quota_error(held: int) -> CollectionQuotaError:
    return CollectionQuotaError(
        f"this account holds {held} collections, its quota; delete one first", param="name"
    )


def new_store_key() -> str:
    """A collection's name inside the vector store (valid for Milvus too)."""
    return f"c_{uuid.uuid4().hex}"


@dataclass(frozen=True)
class CollectionRecord:
    id: int
    owner: str
    name: str
    description: str | None
    store_key: str
    created_at: datetime


class CollectionCatalogue:
    def __init__(self, db: Database) -> None:
        self.db = db

    def check_free(self, owner: str, name: str) -> None:
        with self.db.read() as conn:
            taken = conn.execute(
                select(collections.c.id).where(collections.c.owner == owner, collections.c.name == name)
            ).first()
        if taken is not None:
            raise ConflictError(f"a collection named {name!r} already exists", param="name")

    def create(
        self, owner: str, name: str, description: str | None, key: str, *, max_for_owner: int | None = None
    ) -> CollectionRecord:
        """Insert the row; with `max_for_owner`, count the owner's collections and insert in one transaction
        under a per-owner lock, so concurrent creates cannot pass the quota (CollectionQuotaError)."""
        try:
            with self.db.write() as conn:
                if max_for_owner is not None:
                    if not self.db.is_sqlite:  # SQLite's BEGIN IMMEDIATE already serializes writers
                        conn.execute(
                            text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
                            {"key": f"collections:{owner}"},
                        )
                    held = self._count(conn, owner)
                    if held >= max_for_owner:
                        raise quota_error(held)
                conn.execute(
                    insert(collections).values(
                        owner=owner,
                        name=name,
                        description=description,
                        store_key=key,
                        created_at=datetime.now(UTC),
                    )
                )
        except IntegrityError as exc:
            raise ConflictError(f"a collection named {name!r} already exists", param="name") from exc
        return self.get(owner, name)

    def get(self, owner: str, name: str) -> CollectionRecord:
        """The caller's collection; another owner's is reported exactly as a missing one."""
        with self.db.read() as conn:
            row = (
                conn.execute(
                    select(collections).where(collections.c.owner == owner, collections.c.name == name)
                )
                .mappings()
                .first()
            )
        if row is None:
            raise NotFoundError(f"no collection named {name!r}", code="collection_not_found")
        return CollectionRecord(**row)

    def list_for(self, owner: str) -> list[CollectionRecord]:
        with self.db.read() as conn:
            rows = conn.execute(
                select(collections).where(collections.c.owner == owner).order_by(collections.c.name)
            ).mappings()
            return [CollectionRecord(**row) for row in rows]

    def count_for(self, owner: str) -> int:
        with self.db.read() as conn:
            return self._count(conn, owner)

    @staticmethod
    def _count(conn: Connection, owner: str) -> int:
        return int(
            conn.execute(
                select(func.count()).select_from(collections).where(collections.c.owner == owner)
            ).scalar_one()
        )

    def mark_deleting(self, record: CollectionRecord) -> CollectionRecord:
        """Step 1 of a delete: hide the row from its owner; the record of the pending delete. A 404 if a
        concurrent delete got there first."""
        with self.db.write() as conn:
            marked = conn.execute(
                update(collections)
                .where(collections.c.id == record.id, collections.c.owner == record.owner)
                .values(owner=f"{_DELETING}{record.id}")
            ).rowcount
        if not marked:
            raise NotFoundError(f"no collection named {record.name!r}", code="collection_not_found")
        return CollectionRecord(
            record.id, f"{_DELETING}{record.id}", record.name, record.description, record.store_key,
            record.created_at,
        )  # fmt: skip

    def pending_deletes(self) -> list[CollectionRecord]:
        """Rows whose delete started and did not finish (a crash, or a store error)."""
        with self.db.read() as conn:
            rows = conn.execute(
                select(collections).where(
                    collections.c.owner >= _DELETING, collections.c.owner < _DELETING[:-1] + ";"
                )
            ).mappings()
            return [CollectionRecord(**row) for row in rows]

    def delete(self, record: CollectionRecord) -> None:
        """Step 3 of a delete (after the store dropped the collection); deleting twice is harmless."""
        with self.db.write() as conn:
            conn.execute(delete(collections).where(collections.c.id == record.id))
