"""overwrites in the trash, reclaim timers, untagged manifests, indexes for the planner's lookups

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


def upgrade() -> None:
    with op.batch_alter_table("trash", schema=None) as batch_op:
        batch_op.add_column(sa.Column("replaced_by", sa.String(length=71), nullable=True))
    with op.batch_alter_table("blobs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("ever_referenced", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("repo_manifests", schema=None) as batch_op:
        batch_op.add_column(sa.Column("untagged_at", sa.Float(), nullable=True))
    with op.batch_alter_table("tags", schema=None) as batch_op:
        batch_op.create_index("ix_tags_manifest", ["manifest_digest"], unique=False)
    with op.batch_alter_table("dependents", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("target_key", sa.String(length=1300), nullable=False, server_default="")
        )
        batch_op.create_index("ix_dependents_target_key", ["target_kind", "target_key"], unique=False)
    op.create_table(
        "reclaims",
        sa.Column("digest", sa.String(length=71), nullable=False),
        sa.Column("due_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("digest"),
    )
    with op.batch_alter_table("reclaims", schema=None) as batch_op:
        batch_op.create_index("ix_reclaims_due", ["due_at"], unique=False)

    conn = op.get_bind()
    blobs = sa.table("blobs", sa.column("digest", sa.String), sa.column("ever_referenced", sa.Boolean))
    mb = sa.table("manifest_blobs", sa.column("blob_digest", sa.String))
    conn.execute(
        blobs.update()
        .where(sa.exists().where(mb.c.blob_digest == blobs.c.digest))
        .values(ever_referenced=True)
    )
    rm = sa.table(
        "repo_manifests",
        sa.column("repository_id", sa.Integer),
        sa.column("manifest_digest", sa.String),
        sa.column("created_at", sa.Float),
        sa.column("untagged_at", sa.Float),
    )
    tags = sa.table("tags", sa.column("repository_id", sa.Integer), sa.column("manifest_digest", sa.String))
    conn.execute(
        rm.update()
        .where(
            ~sa.exists().where(
                tags.c.repository_id == rm.c.repository_id, tags.c.manifest_digest == rm.c.manifest_digest
            )
        )
        .values(untagged_at=rm.c.created_at)
    )
    deps = sa.table("dependents", sa.column("target", sa.String), sa.column("target_key", sa.String))
    conn.execute(deps.update().values(target_key=sa.func.lower(deps.c.target)))
    with op.batch_alter_table("dependents", schema=None) as batch_op:
        batch_op.drop_index("ix_dependents_target")


def downgrade() -> None:
    with op.batch_alter_table("dependents", schema=None) as batch_op:
        batch_op.create_index("ix_dependents_target", ["target_kind", "target"], unique=False)
        batch_op.drop_index("ix_dependents_target_key")
        batch_op.drop_column("target_key")
    with op.batch_alter_table("reclaims", schema=None) as batch_op:
        batch_op.drop_index("ix_reclaims_due")
    op.drop_table("reclaims")
    with op.batch_alter_table("tags", schema=None) as batch_op:
        batch_op.drop_index("ix_tags_manifest")
    with op.batch_alter_table("repo_manifests", schema=None) as batch_op:
        batch_op.drop_column("untagged_at")
    with op.batch_alter_table("blobs", schema=None) as batch_op:
        batch_op.drop_column("ever_referenced")
    with op.batch_alter_table("trash", schema=None) as batch_op:
        batch_op.drop_column("replaced_by")
