"""accounts: principals, memberships, tokens, visibility, uploaded blobs, store settings

Revision ID: 0007
Revises: 0006

Repositories stored before accounts keep working: they stay public and belong to the local admin.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("repositories", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("visibility", sa.String(length=16), nullable=False, server_default="public")
        )
        batch_op.add_column(sa.Column("kind", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("meta", sa.Text(), nullable=True))
        batch_op.create_index("ix_repositories_owner", ["owner"], unique=False)
    with op.batch_alter_table("audit", schema=None) as batch_op:
        batch_op.add_column(sa.Column("token_name", sa.String(length=255), nullable=True))
    with op.batch_alter_table("dependents", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("policy", sa.String(length=255), nullable=False, server_default="block")
        )
    op.create_table(
        "principals",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("admin", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("display_name", sa.String(length=255), nullable=False, server_default=""),
        sa.Column("roles", sa.Text(), nullable=False, server_default="[]"),
        sa.Column("quota_bytes", sa.BigInteger(), nullable=True),
        sa.Column("quota_models", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "memberships",
        sa.Column("org", sa.String(length=64), nullable=False),
        sa.Column("member", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["member"], ["principals.name"]),
        sa.ForeignKeyConstraint(["org"], ["principals.name"]),
        sa.PrimaryKeyConstraint("org", "member"),
    )
    with op.batch_alter_table("memberships", schema=None) as batch_op:
        batch_op.create_index("ix_memberships_member", ["member"], unique=False)
    op.create_table(
        "tokens",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("principal", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("last_used_at", sa.Float(), nullable=True),
        sa.Column("expires_at", sa.Float(), nullable=True),
        sa.Column("revoked_at", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["principal"], ["principals.name"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.create_index("ix_tokens_principal", ["principal"], unique=False)
    op.create_table(
        "uploader_blobs",
        sa.Column("principal", sa.String(length=64), nullable=False),
        sa.Column("blob_digest", sa.String(length=71), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("principal", "blob_digest"),
    )
    with op.batch_alter_table("uploader_blobs", schema=None) as batch_op:
        batch_op.create_index("ix_uploader_blobs_blob", ["blob_digest"], unique=False)
    op.create_table(
        "store_settings",
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )


def downgrade() -> None:
    op.drop_table("store_settings")
    with op.batch_alter_table("uploader_blobs", schema=None) as batch_op:
        batch_op.drop_index("ix_uploader_blobs_blob")
    op.drop_table("uploader_blobs")
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.drop_index("ix_tokens_principal")
    op.drop_table("tokens")
    with op.batch_alter_table("memberships", schema=None) as batch_op:
        batch_op.drop_index("ix_memberships_member")
    op.drop_table("memberships")
    op.drop_table("principals")
    with op.batch_alter_table("dependents", schema=None) as batch_op:
        batch_op.drop_column("policy")
    with op.batch_alter_table("audit", schema=None) as batch_op:
        batch_op.drop_column("token_name")
    with op.batch_alter_table("repositories", schema=None) as batch_op:
        batch_op.drop_index("ix_repositories_owner")
        batch_op.drop_column("meta")
        batch_op.drop_column("kind")
        batch_op.drop_column("visibility")
