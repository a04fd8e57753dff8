"""Web logins (email + argon2id password), server-side web sessions, failed sign-ins, console keys.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "logins",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id"), nullable=False, unique=True),
        sa.Column("email", sa.String(254), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("is_admin", sa.Boolean, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_table(
        "web_sessions",
        sa.Column("id_sha256", sa.LargeBinary(32), primary_key=True),
        sa.Column("login_id", sa.Integer, sa.ForeignKey("logins.id"), nullable=False),
        sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id"), nullable=False, index=True),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("last_seen_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
    )
    op.create_table(
        "signin_failures",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("email", sa.String(254), nullable=True),
        sa.Column("address", sa.String(64), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_index("ix_signin_failures_email_created", "signin_failures", ["email", "created_at"])
    op.create_index("ix_signin_failures_address_created", "signin_failures", ["address", "created_at"])
    op.add_column("api_keys", sa.Column("is_console", sa.Boolean, nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("is_console")
    op.drop_index("ix_signin_failures_address_created", "signin_failures")
    op.drop_index("ix_signin_failures_email_created", "signin_failures")
    op.drop_table("signin_failures")
    op.drop_table("web_sessions")
    op.drop_table("logins")
