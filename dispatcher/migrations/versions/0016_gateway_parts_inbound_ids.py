"""inbound_ids: an inbound text delivered twice is handled once

Revision ID: 0016
Revises: 0015

An SMSC sends a deliver_sm again when our deliver_sm_resp was lost; Twilio retries a webhook
that timed out. Each inbound text's (gateway, provider id) is recorded in the transaction that
handles it, so the second copy is acknowledged and ignored: no second opt-out audit, no second
inbox row.
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "inbound_ids",
        sa.Column("gateway", sa.String(length=32), nullable=False),
        sa.Column("provider_id", sa.String(length=64), nullable=False, comment="MessageSid; SMPP: a digest"),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("gateway", "provider_id", name=op.f("pk_inbound_ids")),
        comment="the ids of the inbound texts handled, so a text delivered twice is handled once",
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    op.drop_table("inbound_ids")
