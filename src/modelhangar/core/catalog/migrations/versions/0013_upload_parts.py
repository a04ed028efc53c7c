"""upload parts: the pieces of an upload session kept in an object store

Revision ID: 0013
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "upload_parts",
        sa.Column("upload_id", sa.String(length=32), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("key", sa.String(length=1024), nullable=False),
        sa.PrimaryKeyConstraint("upload_id", "offset"),
    )


def downgrade() -> None:
    op.drop_table("upload_parts")
