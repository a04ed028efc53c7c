"""manifest subjects and artifact types (the OCI 1.1 referrers API)

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from modelhangar.core.errors import InvalidManifest
from modelhangar.core.manifests import parse_manifest

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("manifests", schema=None) as batch_op:
        batch_op.add_column(sa.Column("subject_digest", sa.String(length=71), nullable=True))
        batch_op.add_column(sa.Column("artifact_type", sa.String(length=255), nullable=True))
        batch_op.create_index("ix_manifests_subject", ["subject_digest"], unique=False)
    manifests = sa.table(
        "manifests",
        sa.column("digest", sa.String),
        sa.column("media_type", sa.String),
        sa.column("content", sa.LargeBinary),
        sa.column("subject_digest", sa.String),
        sa.column("artifact_type", sa.String),
    )
    conn = op.get_bind()
    digests = [r.digest for r in conn.execute(sa.select(manifests.c.digest))]
    for digest in digests:  # one at a time: manifests may be large, stores may hold many
        row = conn.execute(
            sa.select(manifests.c.media_type, manifests.c.content).where(manifests.c.digest == digest)
        ).first()
        if row is None:
            continue
        try:
            refs = parse_manifest(bytes(row.content), row.media_type)
        except InvalidManifest:
            continue
        if refs.subject is not None:
            conn.execute(
                manifests.update()
                .where(manifests.c.digest == digest)
                .values(subject_digest=refs.subject.digest, artifact_type=refs.artifact_type)
            )


def downgrade() -> None:
    with op.batch_alter_table("manifests", schema=None) as batch_op:
        batch_op.drop_index("ix_manifests_subject")
        batch_op.drop_column("artifact_type")
        batch_op.drop_column("subject_digest")
