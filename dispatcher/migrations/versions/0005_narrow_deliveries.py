"""narrow deliveries: the alert by id, not slug; queued_at is the blast's started_at; no foreign key;
the channel a zalo_then_sms delivery fell back to

A blast writes a row per recipient in one statement; the slug and the queue time were about
half of each row and of the subscriber × alert index, the foreign key a lookup per row.

Revision ID: 0005
Revises: 0004
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

OUTCOMES = "sent, temporary, throttled, permanent, expired"


def upgrade() -> None:
    conn = op.get_bind()
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("alert_id", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column(
                "channel",
                sa.String(length=8),
                nullable=True,
                comment="the channel it goes on when not the blast's first: sms after Zalo failed",
            )
        )
    # A rotation names the version of each of its alerts; any other blast has its one alert (a
    # slug it does not match, which only a hand-made row could have: that slug's newest version, or
    # failing that the blast's alert).
    for blast_id, series in conn.execute(sa.text("SELECT id, series FROM blasts WHERE series IS NOT NULL")).all():
        pairs = json.loads(series) if isinstance(series, str) else series
        for slug, alert_id in pairs:
            conn.execute(
                sa.text("UPDATE deliveries SET alert_id = :a WHERE blast_id = :b AND alert_slug = :s"),
                {"a": alert_id, "b": blast_id, "s": slug},
            )
    op.execute(
        "UPDATE deliveries SET alert_id = COALESCE("
        "(SELECT b.alert_id FROM blasts b JOIN alerts a ON a.id = b.alert_id "
        "WHERE b.id = deliveries.blast_id AND a.slug = deliveries.alert_slug), "
        "(SELECT MAX(a.id) FROM alerts a WHERE a.slug = deliveries.alert_slug), "
        "(SELECT b.alert_id FROM blasts b WHERE b.id = deliveries.blast_id)) WHERE alert_id IS NULL"
    )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.alter_column(
            "alert_id",
            existing_type=sa.Integer(),
            nullable=False,
            comment="the alert version sent (of a rotation, each person's)",
        )
        batch_op.drop_constraint("fk_deliveries_blast_id_blasts", type_="foreignkey")
        batch_op.drop_index("ix_deliveries_subscriber_id_alert_slug")
        batch_op.create_index("ix_deliveries_subscriber_id_alert_id", ["subscriber_id", "alert_id"])
        batch_op.drop_column("alert_slug")
        batch_op.drop_column("queued_at")
    if conn.dialect.name == "postgresql":  # SQLite keeps no comments
        op.alter_column("delivery_attempts", "outcome", existing_type=sa.String(length=16), existing_nullable=False,
                        comment=OUTCOMES + ", fallback", existing_comment=OUTCOMES)  # fmt: skip


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("delivery_attempts", "outcome", existing_type=sa.String(length=16), existing_nullable=False,
                        comment=OUTCOMES, existing_comment=OUTCOMES + ", fallback")  # fmt: skip
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("alert_slug", sa.String(length=80), nullable=True))
        batch_op.add_column(sa.Column("queued_at", sa.DateTime(timezone=True), nullable=True))
    op.execute(
        "UPDATE deliveries SET alert_slug = (SELECT a.slug FROM alerts a WHERE a.id = deliveries.alert_id), "
        "queued_at = (SELECT b.started_at FROM blasts b WHERE b.id = deliveries.blast_id)"
    )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.alter_column("alert_slug", existing_type=sa.String(length=80), nullable=False)
        batch_op.alter_column("queued_at", existing_type=sa.DateTime(timezone=True), nullable=False)
        batch_op.drop_index("ix_deliveries_subscriber_id_alert_id")
        batch_op.create_index("ix_deliveries_subscriber_id_alert_slug", ["subscriber_id", "alert_slug"])
        batch_op.drop_column("alert_id")
        batch_op.drop_column("channel")
        batch_op.create_foreign_key("fk_deliveries_blast_id_blasts", "blasts", ["blast_id"], ["id"])
