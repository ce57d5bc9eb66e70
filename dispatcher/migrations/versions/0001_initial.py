"""subscribers, alerts and the audit log

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("slug", sa.String(length=80), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(length=60), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("body_ascii", sa.Text(), nullable=False),
        sa.Column("body_ascii_reviewed", sa.Boolean(), nullable=False, comment="written by a person, not generated"),
        sa.Column("variables", sa.JSON(), nullable=False),
        sa.Column("audiences", sa.JSON(), nullable=False),
        sa.Column("priority", sa.String(length=10), nullable=False),
        sa.Column("valid_days", sa.Integer(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("zalo", sa.JSON(), nullable=True),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("origin", sa.String(length=200), nullable=False, comment="the catalogue file, or 'cli'"),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("author", sa.String(length=80), nullable=False),
        sa.Column("approver", sa.String(length=80), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
        sa.UniqueConstraint("slug", "version", name=op.f("uq_alerts_slug_version")),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=80), nullable=False),
        sa.Column("action", sa.String(length=60), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_log_subject"), ["subject"], unique=False)

    op.create_table(
        "subscribers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("msisdn", sa.String(length=16), nullable=False, comment="E.164, +84…"),
        sa.Column("carrier", sa.String(length=16), nullable=False, comment="allocation carrier, or the declared one"),
        sa.Column("carrier_declared", sa.Boolean(), nullable=False),
        sa.Column("province_code", sa.Integer(), nullable=False, comment="NSO code, scheme 2025"),
        sa.Column("commune_code", sa.Integer(), nullable=True, comment="NSO code, scheme 2025"),
        sa.Column("region_scheme", sa.String(length=8), nullable=False),
        sa.Column(
            "legacy_district_code",
            sa.Integer(),
            nullable=True,
            comment="NSO code of the district before 1 July 2025",
        ),
        sa.Column("audience_mask", sa.Integer(), nullable=False, comment="bits of domain.Audience"),
        sa.Column("channel_mask", sa.Integer(), nullable=False, comment="bits of domain.Channel"),
        sa.Column("opted_out_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("purpose", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscribers")),
        sa.UniqueConstraint("msisdn", name=op.f("uq_subscribers_msisdn")),
    )
    with op.batch_alter_table("subscribers", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_subscribers_province_code_commune_code"),
            ["province_code", "commune_code"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("subscribers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_subscribers_province_code_commune_code"))

    op.drop_table("subscribers")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_log_subject"))

    op.drop_table("audit_log")
    op.drop_table("alerts")
