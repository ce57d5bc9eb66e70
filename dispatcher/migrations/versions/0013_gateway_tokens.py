"""gateway_tokens: a gateway's OAuth token pair (Zalo), shared by every worker

Revision ID: 0013
Revises: 0011

Zalo's refresh tokens work once: the pair a refresh returns must be stored, and committed,
before the access token is used, and every worker must use the same pair. A refresh is
announced in the row before it is asked for, so that one cut short by a crash is seen.
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gateway_tokens",
        sa.Column("gateway", sa.String(length=32), nullable=False, comment="the [gateways.<name>] section"),
        sa.Column("access_token", sa.Text(), nullable=True, comment="empty until the first refresh"),
        sa.Column("access_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("refresh_token", sa.Text(), nullable=False, comment="the newest one; it works once"),
        sa.Column(
            "seed_hash",
            sa.String(length=64),
            nullable=False,
            comment="SHA-256 of the refresh token the environment gave",
        ),
        sa.Column("refreshed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("refreshing_by", sa.String(length=120), nullable=True, comment="the process refreshing now, if any"),
        sa.Column("refreshing_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "problem",
            sa.String(length=300),
            nullable=True,
            comment="why the last refresh failed; empty once one worked",
        ),
        sa.PrimaryKeyConstraint("gateway", name=op.f("pk_gateway_tokens")),
        comment="OAuth token pairs of gateways that refresh them (Zalo): shared by every worker",
    )


def downgrade() -> None:
    op.drop_table("gateway_tokens")
