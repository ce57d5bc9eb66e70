"""inbound_ids and message_parts: a text delivered twice handled once; parts' receipts across restarts

Revision ID: 0016
Revises: 0015

An SMSC sends a deliver_sm again when our deliver_sm_resp was lost; Twilio retries a webhook
that timed out. Each inbound text's (gateway, provider id) is recorded in the transaction that
handles it, so the second copy is acknowledged and ignored: no second opt-out audit, no second
inbox row.

A message of several parts goes to an SMSC as several submit_sm, each with its own id and
receipt; it is delivered when every part is, undeliverable when any part is. The worker that sent
it may have restarted before the receipts came, so each part's id and receipt live in
`message_parts`.
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
    op.create_table(
        "message_parts",
        sa.Column("gateway", sa.String(length=32), nullable=False),
        sa.Column(
            "provider_id", sa.String(length=64), nullable=False, comment="the part's id (lower case, no leading zeros)"
        ),
        sa.Column("delivery_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), comment="its receipt's state; NULL: none yet"),
        sa.Column("error_code", sa.String(length=32)),
        sa.PrimaryKeyConstraint("gateway", "provider_id", name=op.f("pk_message_parts")),
        comment="each part of the multi-part messages an SMSC took, for their receipts to settle the message",
    )
    op.create_index(op.f("ix_message_parts_delivery_id"), "message_parts", ["delivery_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_message_parts_delivery_id"), table_name="message_parts")
    op.drop_table("message_parts")
    op.drop_table("inbound_ids")
