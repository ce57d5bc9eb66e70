"""prepared reports: the statutory reports kept as they were prepared, every format's bytes; job marks

Revision ID: 0023
Revises: 0022

The scheduler prepares the 6-month and the annual report ahead of their deadlines; each
preparation is a new version, never overwritten (a report handed in must stay as it was). The
rendered files live in the database so that every host serves the same bytes. `job_marks` holds
the last run of each periodic job, so a restarted or second scheduler never runs one twice.
"""

import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "prepared_reports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False, comment="h1 (6-month) or year (annual)"),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("province", sa.String(length=80), nullable=False, comment="as asked; '' for the whole area"),
        sa.Column("version", sa.Integer(), nullable=False, comment="1, 2, … per kind, year and province"),
        sa.Column("place", sa.String(length=200), nullable=False, comment="the area as the report names it"),
        sa.Column("period_first", sa.Date(), nullable=False),
        sa.Column("period_last", sa.Date(), nullable=False, comment="figures up to the end of this local day"),
        sa.Column("deadline", sa.Date(), nullable=False, comment="the statutory deadline it serves"),
        sa.Column("prepared_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("prepared_by", sa.String(length=120), nullable=False, comment="'scheduler' or the user"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prepared_reports")),
        sa.UniqueConstraint(
            "kind", "year", "province", "version", name=op.f("uq_prepared_reports_kind_year_province_version")
        ),
        comment="statutory reports as prepared: a new version each time, never changed",
    )
    op.create_table(
        "prepared_report_files",
        sa.Column("report_id", sa.Integer(), nullable=False),
        sa.Column("format", sa.String(length=8), nullable=False, comment="json, csv, html, xlsx, pdf"),
        sa.Column("size", sa.Integer(), nullable=False, comment="bytes, so a listing reads no content"),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["report_id"], ["prepared_reports.id"], name=op.f("fk_prepared_report_files_report_id_prepared_reports")
        ),
        sa.PrimaryKeyConstraint("report_id", "format", name=op.f("pk_prepared_report_files")),
        comment="the rendered files of a prepared report, byte for byte as prepared",
    )
    op.create_table(
        "job_marks",
        sa.Column("job", sa.String(length=64), nullable=False, comment="rollup, purge, prepare:h1, prepare:year"),
        sa.Column("mark", sa.String(length=32), nullable=False, comment="the last slot run; sortable text"),
        sa.Column("ran_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("job", name=op.f("pk_job_marks")),
        comment="the last run of each periodic job of the scheduler: a slot is claimed once",
    )


def downgrade() -> None:
    for name in ("job_marks", "prepared_report_files", "prepared_reports"):
        op.drop_table(name)
