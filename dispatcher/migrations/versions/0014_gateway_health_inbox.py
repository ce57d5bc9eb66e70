"""gateway_health and inbox: circuit state shared by every worker, and what people send us

Revision ID: 0014
Revises: 0013

A gateway that keeps failing is taken out of its routes for a cool-down; every worker must see
that, and `gateways list` shows it, so the state lives here rather than in a worker's memory.
An inbound text that is not an opt-out is kept in `inbox` for operators.
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gateway_health",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False, comment="closed, open, half_open"),
        sa.Column("opened_at", sa.DateTime(timezone=True)),
        sa.Column(
            "until", sa.DateTime(timezone=True), comment="open: the cool-down's end; half_open: the probe's lease"
        ),
        sa.Column("last_error", sa.String(length=300)),
        sa.Column("last_error_at", sa.DateTime(timezone=True)),
        sa.Column("window_started_at", sa.DateTime(timezone=True)),
        sa.Column("attempts", sa.Integer(), nullable=False, comment="sends in the current window"),
        sa.Column("errors", sa.Integer(), nullable=False, comment="errors of the gateway itself in the window"),
        sa.Column("trips", sa.Integer(), nullable=False, comment="times it was opened, ever"),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_gateway_health")),
        comment="circuit state of each gateway, shared by every worker",
    )
    op.create_table(
        "inbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("msisdn", sa.String(length=16), nullable=False, comment="E.164 when valid, else as received"),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("gateway", sa.String(length=32), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("raw", sa.Text()),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbox")),
        comment="inbound texts that are not opt-outs, for operators to read",
    )
    op.create_index(op.f("ix_inbox_received_at"), "inbox", ["received_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_inbox_received_at"), table_name="inbox")
    op.drop_table("inbox")
    op.drop_table("gateway_health")
