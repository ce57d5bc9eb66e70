"""alert_rejections: an approver may send a submitted alert version back, with the reason

Revision ID: 0017
Revises: 0016

An approver who will not approve an alert says why; the author reads the reason in the console
or with `alerts show`, writes a new version and submits it again. The rejected version is kept
for history like every other (its status is `rejected`); the refusal has a table of its own.
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alert_rejections",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=False),
        sa.Column("rejected_by", sa.String(length=80), nullable=False),
        sa.Column("rejected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "reason", sa.Text(), nullable=False, comment="why the approver sent it back, for the author to act on"
        ),
        sa.ForeignKeyConstraint(["alert_id"], ["alerts.id"], name=op.f("fk_alert_rejections_alert_id_alerts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_rejections")),
        sa.UniqueConstraint("alert_id", name=op.f("uq_alert_rejections_alert_id")),
        comment="approvers' refusals of submitted alert versions",
    )


def downgrade() -> None:
    op.drop_table("alert_rejections")
