"""provider ids are the gateway's; every delivery report is kept raw, the early and the unknown ones too

Revision ID: 0011
Revises: 0010

Two carriers' SMSCs may hand out the same message id, so a ref is keyed (gateway, provider id);
existing refs take the gateway their delivery went through. `delivery_reports` keeps every
report as the provider wrote it; one whose id is not known yet (a fast SMSC answers before the
worker commits the id; an id we never sent) waits there, unmatched, and is applied when the id
is recorded.
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def _set_aside(table: str) -> None:
    """Rename `table` to `<table>_old`, its primary key too (PostgreSQL names indexes schema-wide)."""
    op.rename_table(table, f"{table}_old")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE {table}_old RENAME CONSTRAINT pk_{table} TO pk_{table}_old")


def upgrade() -> None:
    _set_aside("provider_refs")
    op.create_table(
        "provider_refs",
        sa.Column("gateway", sa.String(length=32), nullable=False, comment="the gateway that gave the id"),
        sa.Column("provider_id", sa.String(length=64), nullable=False, comment="the gateway's own id of a message"),
        sa.Column("delivery_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("gateway", "provider_id", name=op.f("pk_provider_refs")),
        comment="which delivery a gateway's delivery report is about",
        sqlite_with_rowid=False,
    )
    # A ref whose delivery names no gateway (none should) keeps the empty name rather than being lost.
    op.execute(
        "INSERT INTO provider_refs (gateway, provider_id, delivery_id) "
        "SELECT COALESCE(d.gateway, ''), r.provider_id, r.delivery_id FROM provider_refs_old r "
        "LEFT JOIN deliveries d ON d.id = r.delivery_id"
    )
    op.drop_table("provider_refs_old")
    op.create_table(
        "delivery_reports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("gateway", sa.String(length=32), nullable=False),
        sa.Column("provider_id", sa.String(length=64), nullable=False),
        sa.Column(
            "delivery_id",
            sa.Integer(),
            nullable=True,
            comment="NULL: no message of ours has this id yet (it may come, or never)",
        ),  # fmt: skip
        sa.Column("status", sa.String(length=16), nullable=False, comment="delivered, failed, undeliverable"),
        sa.Column("error_code", sa.String(length=32), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "raw", sa.Text(), nullable=True, comment="the report as the provider wrote it, for disputes with a carrier"
        ),  # fmt: skip
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delivery_reports")),
        comment="every delivery report received, raw; those whose id is not known yet are applied when it is",
    )
    op.create_index(op.f("ix_delivery_reports_delivery_id"), "delivery_reports", ["delivery_id"], unique=False)
    unmatched = sa.text("delivery_id IS NULL")
    op.create_index("ix_delivery_reports_unmatched", "delivery_reports", ["gateway", "provider_id"], unique=False,
                    sqlite_where=unmatched, postgresql_where=unmatched)  # fmt: skip


def downgrade() -> None:
    op.drop_table("delivery_reports")
    _set_aside("provider_refs")
    op.create_table(
        "provider_refs",
        sa.Column("provider_id", sa.String(length=64), nullable=False, comment="the gateway's own id of a message"),
        sa.Column("delivery_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("provider_id", name=op.f("pk_provider_refs")),
        comment="which delivery a gateway's delivery report is about",
        sqlite_with_rowid=False,
    )
    op.execute(
        "INSERT INTO provider_refs (provider_id, delivery_id) SELECT provider_id, MAX(delivery_id) "
        "FROM provider_refs_old GROUP BY provider_id"
    )
    op.drop_table("provider_refs_old")
