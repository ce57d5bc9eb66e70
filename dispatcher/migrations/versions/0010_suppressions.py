"""suppressions: refusals of numbers not yet among the subscribers, which imports honour

Revision ID: 0010
Revises: 0009

An opt-out of a number we did not hold failed, so the request was lost and a later import made
the person reachable. Such a refusal is now kept here (Decree 91/2020: a refusal is honoured);
an import that brings the number in moves it onto the subscriber, with the time of the refusal.
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "suppressions",
        sa.Column("msisdn", sa.String(length=16), nullable=False, comment="E.164, +84…"),
        sa.Column("opted_out_at", sa.DateTime(timezone=True), nullable=False, comment="when the person refused"),
        sa.Column("recorded_by", sa.String(length=80), nullable=False),
        sa.PrimaryKeyConstraint("msisdn", name=op.f("pk_suppressions")),
        comment="refusals of numbers not among the subscribers; the import that brings a number in applies its refusal",
    )


def downgrade() -> None:
    op.drop_table("suppressions")
