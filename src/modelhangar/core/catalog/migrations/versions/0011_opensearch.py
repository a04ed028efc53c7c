"""opensearch: ML Commons' model groups, models, tasks, connectors, pipelines and agents

Revision ID: 0011
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ml_objects",
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("name_key", sa.String(length=512), nullable=True),
        sa.Column("parent", sa.String(length=255), nullable=True),
        sa.Column("owner", sa.String(length=64), nullable=True),
        sa.Column("doc", sa.Text(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("kind", "id"),
    )
    op.create_index("ix_ml_objects_name", "ml_objects", ["kind", "name_key"], unique=False)
    op.create_index("ix_ml_objects_parent", "ml_objects", ["kind", "parent"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_ml_objects_parent", table_name="ml_objects")
    op.drop_index("ix_ml_objects_name", table_name="ml_objects")
    op.drop_table("ml_objects")
