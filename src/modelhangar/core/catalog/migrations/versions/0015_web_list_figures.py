"""web list figures: each repository's size, last change and manifest count, for the web UI's list

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

# What `core/repo_figures.py` keeps, computed once here for the repositories stored before it.
SIZES = """
WITH RECURSIVE closure(rid, d) AS (
    SELECT repository_id, manifest_digest FROM repo_manifests
    UNION
    SELECT closure.rid, mc.child_digest FROM manifest_children mc JOIN closure ON mc.parent_digest = closure.d
)
SELECT named.rid, SUM(b.size) FROM (
    SELECT DISTINCT closure.rid AS rid, mb.blob_digest AS blob
    FROM closure JOIN manifest_blobs mb ON mb.manifest_digest = closure.d
) named JOIN blobs b ON b.digest = named.blob AND b.state = 'present'
GROUP BY named.rid
"""


def upgrade() -> None:
    with op.batch_alter_table("repositories", schema=None) as batch_op:
        batch_op.add_column(sa.Column("size", sa.BigInteger(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("modified_at", sa.Float(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("versions", sa.Integer(), server_default="0", nullable=False))
    conn = op.get_bind()
    sizes = [{"rid": int(rid), "size": int(size or 0)} for rid, size in conn.execute(sa.text(SIZES))]
    if sizes:
        conn.execute(sa.text("UPDATE repositories SET size = :size WHERE id = :rid"), sizes)
    conn.execute(
        sa.text(
            "UPDATE repositories SET modified_at = COALESCE("
            "(SELECT MAX(tags.modified_at) FROM tags WHERE tags.repository_id = repositories.id),"
            " repositories.created_at),"
            " versions = (SELECT COUNT(*) FROM repo_manifests rm WHERE rm.repository_id = repositories.id)"
        )
    )
    op.create_index("ix_repositories_size", "repositories", [sa.text("size DESC"), "name_key"], unique=False)
    op.create_index(
        "ix_repositories_modified", "repositories", [sa.text("modified_at DESC"), "name_key"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_repositories_modified", table_name="repositories")
    op.drop_index("ix_repositories_size", table_name="repositories")
    with op.batch_alter_table("repositories", schema=None) as batch_op:
        batch_op.drop_column("versions")
        batch_op.drop_column("modified_at")
        batch_op.drop_column("size")
