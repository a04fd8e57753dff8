"""Instances: where a pid means something (boot id + pid namespace) and when that process started.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("instances", sa.Column("pid_scope", sa.String(200), nullable=True))
    op.add_column("instances", sa.Column("pid_started", sa.BigInteger, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("pid_started")
        batch.drop_column("pid_scope")
