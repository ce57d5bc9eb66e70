"""purge runs: the retention purge deletes in slices and keeps its running totals

Revision ID: 0027
Revises: 0026

The first purge of a database with millions of old rows held SQLite's write lock for minutes.
It now deletes a few thousand deliveries a transaction; each slice adds what it deleted to its
run's row in the same transaction, so a purge killed between slices is carried on by the next
one and audited once, with the totals of both.
"""

import sqlalchemy as sa
from alembic import op

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "purge_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "actor", sa.String(length=120), nullable=False, comment="who started it; the audit log says who finished it"
        ),
        sa.Column("cutoff", sa.DateTime(timezone=True), nullable=False, comment="the latest cutoff applied"),
        sa.Column("slices", sa.Integer(), nullable=False),
        sa.Column("deliveries", sa.Integer(), nullable=False),
        sa.Column("inbox", sa.Integer(), nullable=False),
        sa.Column("blast_ids", sa.Text(), nullable=False, comment="comma-separated: the blasts whose deliveries went"),
        sa.Column(
            "finished_at",
            sa.DateTime(timezone=True),
            comment="NULL: killed between slices; the next purge carries it on",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_purge_runs")),
        comment="retention purges, with what each deleted so far",
    )


def downgrade() -> None:
    op.drop_table("purge_runs")
