"""repository blob links (blobs belong to the repositories they were uploaded or mounted into)

Revision ID: 0005
Revises: 0004

Blobs already stored get no links: those a manifest names stay visible through it, and a loose
blob (uploaded but never used) is left to GC as before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "repo_blobs",
        sa.Column("repository_id", sa.Integer(), nullable=False),
        sa.Column("blob_digest", sa.String(length=71), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["repository_id"], ["repositories.id"]),
        sa.PrimaryKeyConstraint("repository_id", "blob_digest"),
    )
    with op.batch_alter_table("repo_blobs", schema=None) as batch_op:
        batch_op.create_index("ix_repo_blobs_blob", ["blob_digest"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("repo_blobs", schema=None) as batch_op:
        batch_op.drop_index("ix_repo_blobs_blob")
    op.drop_table("repo_blobs")
