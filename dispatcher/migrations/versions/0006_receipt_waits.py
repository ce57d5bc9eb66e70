"""receipt waits: Zalo messages of zalo_then_sms blasts waiting for their delivery receipt

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "receipt_waits",
        sa.Column("delivery_id", sa.Integer(), nullable=False),
        sa.Column("blast_id", sa.Integer(), nullable=False),
        sa.Column(
            "due_at", sa.DateTime(timezone=True), nullable=False, comment="when it goes by SMS if no receipt has come"
        ),
        sa.Column(
            "error_code",
            sa.String(length=32),
            nullable=True,
            comment="what Zalo reported instead of a receipt (the SMS goes at once)",
        ),
        sa.PrimaryKeyConstraint("delivery_id", name=op.f("pk_receipt_waits")),
        comment="Zalo messages of zalo_then_sms blasts waiting for Zalo's delivery receipt; a row leaves when it comes",
    )
    op.create_index(op.f("ix_receipt_waits_due_at"), "receipt_waits", ["due_at"], unique=False)
    op.create_index(op.f("ix_receipt_waits_blast_id"), "receipt_waits", ["blast_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_receipt_waits_blast_id"), table_name="receipt_waits")
    op.drop_index(op.f("ix_receipt_waits_due_at"), table_name="receipt_waits")
    op.drop_table("receipt_waits")
