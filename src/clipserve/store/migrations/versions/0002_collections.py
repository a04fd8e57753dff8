"""Collections: the catalogue, and the embedded vector store's items.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "collections",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("description", sa.String(1000), nullable=True),
        sa.Column("store_key", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.UniqueConstraint("owner", "name", name="uq_collections_owner_name"),
    )
    op.create_table(
        "vector_collections",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("version", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "collection_items",
        sa.Column(
            "collection_key",
            sa.String(64),
            sa.ForeignKey("vector_collections.key", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("item_id", sa.String(256), primary_key=True),
        sa.Column("vector", sa.LargeBinary, nullable=False),
        sa.Column("metadata_json", sa.Text, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
    )


def downgrade() -> None:
    for table in ("collection_items", "vector_collections", "collections"):
        op.drop_table(table)
