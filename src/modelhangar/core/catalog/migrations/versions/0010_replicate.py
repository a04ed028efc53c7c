"""the Replicate face: versions' metadata and lineage, predictions and trainings, deployments

Revision ID: 0010
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("repositories", schema=None) as batch_op:
        batch_op.create_index("ix_repositories_kind_created", ["kind", "created_at", "id"], unique=False)
    op.create_table(
        "replicate_versions",
        sa.Column("repository_key", sa.String(length=1024), nullable=False),
        sa.Column("version_id", sa.String(length=64), nullable=False),
        sa.Column("manifest_digest", sa.String(length=71), nullable=False),
        sa.Column("cog_version", sa.String(length=64), nullable=False),
        sa.Column("openapi_schema", sa.Text(), nullable=False),
        sa.Column("training_id", sa.String(length=64), nullable=True),
        sa.Column("base_version", sa.String(length=1200), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("repository_key", "version_id"),
    )
    op.create_table(
        "replicate_runs",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("model", sa.String(length=255), nullable=False),
        sa.Column("version_id", sa.String(length=64), nullable=False),
        sa.Column("creator", sa.String(length=255), nullable=False),
        sa.Column("deployment", sa.String(length=255), nullable=True),
        sa.Column("destination", sa.String(length=255), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("input", sa.Text(), nullable=False),
        sa.Column("output", sa.Text(), nullable=True),
        sa.Column("logs", sa.Text(), nullable=False, server_default=""),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("metrics", sa.Text(), nullable=True),
        sa.Column("webhook", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=True),
        sa.Column("completed_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("replicate_runs", schema=None) as batch_op:
        batch_op.create_index("ix_replicate_runs_creator", ["kind", "creator", "created_at"], unique=False)
        batch_op.create_index("ix_replicate_runs_model", ["model", "version_id"], unique=False)
        batch_op.create_index("ix_replicate_runs_destination", ["destination", "status"], unique=False)
    op.create_table(
        "replicate_deployments",
        sa.Column("name_key", sa.String(length=255), nullable=False),
        sa.Column("owner", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("release", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=255), nullable=False),
        sa.Column("version_id", sa.String(length=64), nullable=False),
        sa.Column("hardware", sa.String(length=64), nullable=False),
        sa.Column("min_instances", sa.Integer(), nullable=False),
        sa.Column("max_instances", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(length=255), nullable=False),
        sa.Column("released_at", sa.Float(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name_key"),
    )
    with op.batch_alter_table("replicate_deployments", schema=None) as batch_op:
        batch_op.create_index("ix_replicate_deployments_owner", ["owner", "created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("replicate_deployments", schema=None) as batch_op:
        batch_op.drop_index("ix_replicate_deployments_owner")
    op.drop_table("replicate_deployments")
    with op.batch_alter_table("replicate_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_replicate_runs_destination")
        batch_op.drop_index("ix_replicate_runs_model")
        batch_op.drop_index("ix_replicate_runs_creator")
    op.drop_table("replicate_runs")
    op.drop_table("replicate_versions")
    with op.batch_alter_table("repositories", schema=None) as batch_op:
        batch_op.drop_index("ix_repositories_kind_created")
