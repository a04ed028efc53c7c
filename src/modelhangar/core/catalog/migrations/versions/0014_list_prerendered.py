"""listings: each tag's listing entry, rendered when the tag is written (core/listing.py)

Revision ID: 0014
Revises: 0012

Adding two nullable columns costs the same at any size of the store; the entries of tags stored
before it are rendered by the server in the background after start-up (README, "Listings").
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tags", schema=None) as batch_op:
        batch_op.add_column(sa.Column("listing", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("listing_at", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tags", schema=None) as batch_op:
        batch_op.drop_column("listing_at")
        batch_op.drop_column("listing")
