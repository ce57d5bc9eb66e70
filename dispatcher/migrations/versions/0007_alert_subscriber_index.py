"""deliveries: the history index leads with the alert, so a new blast's entries go at its end

Revision ID: 0007
Revises: 0006

Keyed (subscriber_id, alert_id), every blast to a province put one entry beside each of that
person's older ones: a new blast rewrote the whole index, more of it with every blast sent
(1.0–1.2 s a million on SQLite with three blasts behind it). Keyed (alert_id, subscriber_id),
a blast of a new alert version appends, and "already received" reads an alert's history
through it (`alert_id = ?`). Rotations never used either order: SQLite joins the history once
with an index of its own, PostgreSQL probes (blast_id, subscriber_id) per blast.
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_deliveries_subscriber_id_alert_id", table_name="deliveries")
    op.create_index("ix_deliveries_alert_id_subscriber_id", "deliveries", ["alert_id", "subscriber_id"])


def downgrade() -> None:
    op.drop_index("ix_deliveries_alert_id_subscriber_id", table_name="deliveries")
    op.create_index("ix_deliveries_subscriber_id_alert_id", "deliveries", ["subscriber_id", "alert_id"])
