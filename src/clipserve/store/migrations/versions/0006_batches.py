"""The Batch API (issue 13): uploaded files, batches, and one row per input line (its claim and its answer).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "batch_files",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id"), nullable=True),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("storage_key", sa.String(255), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=True),
    )
    op.create_index("ix_batch_files_account_created", "batch_files", ["account_id", "created_at"])
    op.create_table(
        "batches",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id"), nullable=True),
        sa.Column("key_id", sa.Integer, sa.ForeignKey("api_keys.id"), nullable=True),
        sa.Column("input_file_id", sa.String(40), nullable=False),
        sa.Column("endpoint", sa.String(64), nullable=False),
        sa.Column("completion_window", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("errors_json", sa.Text, nullable=True),
        sa.Column("metadata_json", sa.Text, nullable=True),
        sa.Column("output_file_id", sa.String(40), nullable=True),
        sa.Column("error_file_id", sa.String(40), nullable=True),
        sa.Column("total", sa.Integer, nullable=False),
        sa.Column("completed", sa.Integer, nullable=False),
        sa.Column("failed", sa.Integer, nullable=False),
        sa.Column("finalize_to", sa.String(16), nullable=True),
        sa.Column("finalizer", sa.String(32), nullable=True),
        sa.Column("finalize_until", _TS, nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("in_progress_at", _TS, nullable=True),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("finalizing_at", _TS, nullable=True),
        sa.Column("completed_at", _TS, nullable=True),
        sa.Column("failed_at", _TS, nullable=True),
        sa.Column("expired_at", _TS, nullable=True),
        sa.Column("cancelling_at", _TS, nullable=True),
        sa.Column("cancelled_at", _TS, nullable=True),
    )
    op.create_index("ix_batches_account_created", "batches", ["account_id", "created_at"])
    op.create_index("ix_batches_status", "batches", ["status", "created_at"])
    op.create_table(
        "batch_lines",
        sa.Column(
            "batch_id", sa.String(40), sa.ForeignKey("batches.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("line", sa.Integer, primary_key=True),
        sa.Column("custom_id", sa.String(512), nullable=False),
        sa.Column("body_json", sa.Text, nullable=False),
        sa.Column("answered", sa.Boolean, nullable=False),
        sa.Column("claimed_by", sa.String(32), nullable=True),
        sa.Column("claimed_until", _TS, nullable=True),
        sa.Column("status_code", sa.Integer, nullable=True),
        sa.Column("result_json", sa.Text, nullable=True),
        sa.Column("answered_at", _TS, nullable=True),
    )
    op.create_index("ix_batch_lines_open", "batch_lines", ["batch_id", "answered", "claimed_until"])


def downgrade() -> None:
    op.drop_index("ix_batch_lines_open", table_name="batch_lines")
    op.drop_table("batch_lines")
    op.drop_index("ix_batches_status", table_name="batches")
    op.drop_index("ix_batches_account_created", table_name="batches")
    op.drop_table("batches")
    op.drop_index("ix_batch_files_account_created", table_name="batch_files")
    op.drop_table("batch_files")
