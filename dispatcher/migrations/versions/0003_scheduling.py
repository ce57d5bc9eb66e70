"""scheduling: leader leases, recurring campaigns and their runs, shared rate buckets, job store

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


QUEUED = sa.text("status = 'queued'")
HAS_PROVIDER_ID = sa.text("provider_id IS NOT NULL")


def upgrade() -> None:
    # The claim now takes urgent messages first: the queued index leads with priority.
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_queued", sqlite_where=QUEUED, postgresql_where=QUEUED)
        batch_op.create_index(
            "ix_deliveries_queued", ["priority", "id"], unique=False, sqlite_where=QUEUED, postgresql_where=QUEUED
        )
        # Materialising a million rows need not index a million empty provider ids.
        batch_op.drop_index("ix_deliveries_provider_id")
        batch_op.create_index(
            "ix_deliveries_provider_id",
            ["provider_id"],
            unique=False,
            sqlite_where=HAS_PROVIDER_ID,
            postgresql_where=HAS_PROVIDER_ID,
        )
    with op.batch_alter_table("blasts", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "schedule", sa.String(length=80), nullable=True, comment="the recurring campaign that made it, if any"
            )
        )
        batch_op.add_column(
            sa.Column(
                "series",
                sa.JSON(),
                nullable=True,
                comment="a rotation: [[alert slug, alert id], …] in order; None: alert_id alone",
            )
        )
        batch_op.add_column(
            sa.Column(
                "held",
                sa.JSON(),
                nullable=True,
                comment="recipients held back when it started, by reason: capped, deferred",
            )
        )
    op.create_table(
        "leases",
        sa.Column("name", sa.String(length=64), nullable=False, comment="what is led: 'scheduler'"),
        sa.Column("holder", sa.String(length=120), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_leases")),
    )
    op.create_table(
        "schedules",
        sa.Column("name", sa.String(length=80), nullable=False, comment="the file stem in schedules/"),
        sa.Column("definition", sa.JSON(), nullable=False, comment="the parsed file"),
        sa.Column("origin", sa.String(length=300), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False, comment="pending_approval, active, disabled, removed"),
        sa.Column("synced_by", sa.String(length=80), nullable=False),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("approved_by", sa.String(length=80), nullable=True),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_schedules")),
    )
    op.create_table(
        "schedule_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("schedule", sa.String(length=80), nullable=False),
        sa.Column("run_at", sa.DateTime(timezone=True), nullable=False, comment="the fire time the trigger gave"),
        sa.Column("outcome", sa.String(length=20), nullable=False, comment="started, missed, empty, no_alert"),
        sa.Column("blast_id", sa.Integer(), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedule_runs")),
        sa.UniqueConstraint("schedule", "run_at", name=op.f("uq_schedule_runs_schedule_run_at")),
    )
    op.create_table(
        "rate_buckets",
        sa.Column("name", sa.String(length=64), nullable=False, comment="'gateway:file', 'parts:file', 'blast:12'"),
        sa.Column("next_free", sa.Float(), nullable=False, comment="epoch seconds from which the next unit may go"),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_rate_buckets")),
    )
    op.create_table(
        "scheduler_jobs",
        sa.Column("id", sa.String(length=191), nullable=False),
        sa.Column("next_run_time", sa.Float(precision=25), nullable=True),
        sa.Column("job_state", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scheduler_jobs")),
    )
    with op.batch_alter_table("scheduler_jobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_scheduler_jobs_next_run_time"), ["next_run_time"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_provider_id", sqlite_where=HAS_PROVIDER_ID, postgresql_where=HAS_PROVIDER_ID)
        batch_op.create_index("ix_deliveries_provider_id", ["provider_id"], unique=False)
        batch_op.drop_index("ix_deliveries_queued", sqlite_where=QUEUED, postgresql_where=QUEUED)
        batch_op.create_index(
            "ix_deliveries_queued", ["id"], unique=False, sqlite_where=QUEUED, postgresql_where=QUEUED
        )
    for table in ("scheduler_jobs", "rate_buckets", "schedule_runs", "schedules", "leases"):
        op.drop_table(table)
    with op.batch_alter_table("blasts", schema=None) as batch_op:
        for column in ("held", "series", "schedule"):
            batch_op.drop_column(column)
