"""named reports: an unmatched report keeps the delivery it names (Zalo's tracking_id)

Revision ID: 0025
Revises: 0024

A Zalo receipt can come while its message is still `sending` (its worker has not recorded Zalo's
id yet). It waits unmatched for that id; if the worker dies first, the message becomes `unknown`
and the id never comes. The delivery the receipt names is kept beside it, so the lease's reaper
applies the receipt when it makes the message `unknown`.
"""

import sqlalchemy as sa
from alembic import op

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "delivery_reports",
        sa.Column("named_delivery_id", sa.Integer(), comment="an unmatched report's delivery, when it names one"),
    )


def downgrade() -> None:
    with op.batch_alter_table("delivery_reports") as batch:
        batch.drop_column("named_delivery_id")
