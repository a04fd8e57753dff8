"""Custom classifiers (issue 15): the trained weights and the examples' embeddings.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "classifiers",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("labels_json", sa.Text, nullable=False),
        sa.Column("template", sa.String(300), nullable=True),
        sa.Column("zero_shot_prior", sa.Boolean, nullable=False),
        sa.Column("prior_weights", sa.LargeBinary, nullable=True),
        sa.Column("weights", sa.LargeBinary, nullable=False),
        sa.Column("bias", sa.LargeBinary, nullable=False),
        sa.Column("c", sa.Float, nullable=False),
        sa.Column("c_fixed", sa.Boolean, nullable=False),
        sa.Column("c_examples", sa.Integer, nullable=False),
        sa.Column("train_accuracy", sa.Float, nullable=True),
        sa.Column("cv_accuracy", sa.Float, nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
    )
    op.create_index("ix_classifiers_owner_created", "classifiers", ["owner", "created_at"])
    op.create_table(
        "classifier_examples",
        sa.Column(
            "classifier_id",
            sa.String(40),
            sa.ForeignKey("classifiers.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("label_index", sa.Integer, nullable=False),
        sa.Column("vector", sa.LargeBinary, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("classifier_examples")
    op.drop_index("ix_classifiers_owner_created", table_name="classifiers")
    op.drop_table("classifiers")
