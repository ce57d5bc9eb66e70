"""rate chunks: what went through each rate limit in its last second, so a late send never bunches

Revision ID: 0008
Revises: 0007

The shared schedule alone (rate_buckets) gave each chunk a slot, but a chunk the OS held back
between its slot and the carrier landed in one second with the chunks due after it. Each chunk
now also leaves a row from its admission until its send returned, and a chunk is admitted only
if those of the last second leave room for it.
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_chunks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("bucket", sa.String(length=64), nullable=False, comment="the rate_buckets name"),
        sa.Column("weight", sa.Float(), nullable=False, comment="messages or parts"),
        sa.Column("started_at", sa.Float(), nullable=False, comment="epoch seconds of admission"),
        sa.Column(
            "ended_at", sa.Float(), nullable=True, comment="epoch seconds its send returned; empty while in flight"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rate_chunks")),
    )
    op.create_index(op.f("ix_rate_chunks_bucket"), "rate_chunks", ["bucket"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_rate_chunks_bucket"), table_name="rate_chunks")
    op.drop_table("rate_chunks")
