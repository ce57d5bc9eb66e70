"""queue: waiting deliveries, claims in flight and provider ids leave the deliveries table's indexes

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


QUEUED = sa.text("status = 'queued'")
SENDING = sa.text("status = 'sending'")
HAS_PROVIDER_ID = sa.text("provider_id IS NOT NULL")


def upgrade() -> None:
    op.create_table(
        "delivery_queue",
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False, comment="the delivery's next_attempt_at"),
        sa.Column("delivery_id", sa.Integer(), nullable=False),
        sa.Column("blast_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("priority", "due_at", "delivery_id", name=op.f("pk_delivery_queue")),
        comment="deliveries waiting to be claimed, in the order they go; a row leaves when claimed",
        sqlite_with_rowid=False,
    )
    op.create_table(
        "claims",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(length=64), nullable=False),
        sa.Column("blast_id", sa.Integer(), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "delivery_ids", sa.Text(), nullable=False, comment="comma-separated: the deliveries this claim holds"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_claims")),
        comment="deliveries in flight: one row per worker batch and blast until its results are recorded",
    )
    op.create_table(
        "provider_refs",
        sa.Column("provider_id", sa.String(length=64), nullable=False, comment="the gateway's own id of a message"),
        sa.Column("delivery_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("provider_id", name=op.f("pk_provider_refs")),
        comment="which delivery a gateway's delivery report is about",
        sqlite_with_rowid=False,
    )
    # What the dropped indexes found, moved to the new tables: waiting rows, rows in flight (as
    # claims already expired, so the next worker settles them), and the provider ids of sent rows.
    op.execute(
        "INSERT INTO delivery_queue (priority, due_at, delivery_id, blast_id) "
        "SELECT priority, next_attempt_at, id, blast_id FROM deliveries WHERE status = 'queued'"
    )
    ids = "string_agg(CAST(id AS TEXT), ',')" if op.get_bind().dialect.name == "postgresql" else "group_concat(id, ',')"
    op.execute(
        f"INSERT INTO claims (worker, blast_id, lease_until, delivery_ids) SELECT 'migration', blast_id, "
        f"MIN(COALESCE(lease_until, queued_at)), {ids} FROM deliveries WHERE status = 'sending' GROUP BY blast_id"
    )
    op.execute(
        "INSERT INTO provider_refs (provider_id, delivery_id) SELECT provider_id, MAX(id) FROM deliveries "
        "WHERE provider_id IS NOT NULL GROUP BY provider_id"
    )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_queued", sqlite_where=QUEUED, postgresql_where=QUEUED)
        batch_op.drop_index("ix_deliveries_provider_id", sqlite_where=HAS_PROVIDER_ID, postgresql_where=HAS_PROVIDER_ID)
        batch_op.drop_index("ix_deliveries_sending", sqlite_where=SENDING, postgresql_where=SENDING)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE deliveries SET (fillfactor = 50)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE deliveries RESET (fillfactor)")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.create_index("ix_deliveries_sending", ["lease_until"], sqlite_where=SENDING, postgresql_where=SENDING)
        batch_op.create_index(
            "ix_deliveries_provider_id", ["provider_id"], sqlite_where=HAS_PROVIDER_ID, postgresql_where=HAS_PROVIDER_ID
        )
        batch_op.create_index("ix_deliveries_queued", ["priority", "id"], sqlite_where=QUEUED, postgresql_where=QUEUED)
    for table in ("provider_refs", "claims", "delivery_queue"):
        op.drop_table(table)
