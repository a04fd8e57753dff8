"""The collections catalogue: which collections exist, who owns them, and their vector-store key."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError

from clipserve.errors import ConflictError, NotFoundError
from clipserve.store.database import Database
from clipserve.store.schema import collections


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

    def create(self, owner: str, name: str, description: str | None, key: str) -> CollectionRecord:
        try:
            with self.db.write() as conn:
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

    def delete(self, record: CollectionRecord) -> None:
        with self.db.write() as conn:
            conn.execute(delete(collections).where(collections.c.id == record.id))
