"""reach rollups: daily delivery facts, people reached with their previous reach, the job's bookkeeping

Revision ID: 0019
Revises: 0018

The rollup job adds every final delivery once to `delivery_facts`, and each person reached to
`reach_rows` (with the day they were reached before) and `reach_counts` (those rows counted), so
a report of any period is a few small sums and survives the purge of old deliveries.
"""

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

FACT_COMMENTS = {
    "delivery_facts": "final deliveries added up by day and every dimension a report shows",
    "rollup_pending": "deliveries of open blasts not final yet, as of the last rollup (replaced at each run)",
}


def _fact_table(name: str) -> None:
    op.create_table(
        name,
        sa.Column("day", sa.Integer(), nullable=False, comment="local date yyyymmdd the message went (or ended)"),
        sa.Column("blast_id", sa.Integer(), nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=False),
        sa.Column("province_code", sa.Integer(), nullable=False),
        sa.Column("commune_code", sa.Integer(), nullable=False, comment="0: not known"),
        sa.Column("carrier", sa.String(length=16), nullable=False),
        sa.Column("channel", sa.String(length=8), nullable=False, comment="sms, zalo, zalo_sms (fell back to SMS)"),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("audience_mask", sa.Integer(), nullable=False, comment="the subscriber's, when rolled up"),
        sa.Column("messages", sa.Integer(), nullable=False),
        sa.Column("sent", sa.Integer(), nullable=False, comment="of them, handed to a gateway"),
        sa.Column("parts", sa.Integer(), nullable=False, comment="parts of those sent"),
        sa.PrimaryKeyConstraint(
            "day",
            "blast_id",
            "alert_id",
            "province_code",
            "commune_code",
            "carrier",
            "channel",
            "status",
            "audience_mask",
            name=op.f(f"pk_{name}"),
        ),  # fmt: skip
        comment=FACT_COMMENTS[name],
    )


def upgrade() -> None:
    for name in FACT_COMMENTS:
        _fact_table(name)
    op.create_table(
        "rollup_blasts",
        sa.Column("blast_id", sa.Integer(), nullable=False),
        sa.Column("rolled_at", sa.DateTime(timezone=True), nullable=False, comment="the last run that looked at it"),
        sa.Column(
            "closed_at",
            sa.DateTime(timezone=True),
            comment="ended and every delivery final and counted: never read again",
        ),  # fmt: skip
        sa.PrimaryKeyConstraint("blast_id", name=op.f("pk_rollup_blasts")),
        comment="which blasts the rollup job has looked at, and those it is done with",
    )
    op.create_table(
        "rollup_seen",
        sa.Column("delivery_id", sa.Integer(), nullable=False),
        sa.Column("blast_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("delivery_id", name=op.f("pk_rollup_seen")),
        comment="final deliveries of open blasts already added to the facts; dropped when the blast closes",
        sqlite_with_rowid=False,
    )
    op.create_index(op.f("ix_rollup_seen_blast_id"), "rollup_seen", ["blast_id"])
    op.create_table(
        "reach_rows",
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Integer(), nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(length=60), nullable=False),
        sa.Column("province_code", sa.Integer(), nullable=False),
        sa.Column("commune_code", sa.Integer(), nullable=False),
        sa.Column("audience_mask", sa.Integer(), nullable=False),
        sa.Column("prev_any", sa.Integer(), nullable=False),
        sa.Column("prev_method", sa.Integer(), nullable=False),
        sa.Column("prev_alert", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("subscriber_id", "day", "alert_id", name=op.f("pk_reach_rows")),
        comment="people reached, by day and alert version, with the day each was reached before",
    )
    op.create_index(op.f("ix_reach_rows_subscriber_id_method_day_alert_id"), "reach_rows",
                    ["subscriber_id", "method", "day", "alert_id"])  # fmt: skip
    op.create_index(op.f("ix_reach_rows_subscriber_id_alert_id_day"), "reach_rows",
                    ["subscriber_id", "alert_id", "day"])  # fmt: skip
    op.create_table(
        "reach_counts",
        sa.Column("scope", sa.String(length=8), nullable=False, comment="all, method, alert"),
        sa.Column("key", sa.String(length=60), nullable=False, comment="'' for all, the method, the alert id"),
        sa.Column("day", sa.Integer(), nullable=False),
        sa.Column("prev_day", sa.Integer(), nullable=False),
        sa.Column("province_code", sa.Integer(), nullable=False),
        sa.Column("commune_code", sa.Integer(), nullable=False),
        sa.Column("audience_mask", sa.Integer(), nullable=False),
        sa.Column("people", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(
            "scope",
            "key",
            "day",
            "prev_day",
            "province_code",
            "commune_code",
            "audience_mask",
            name=op.f("pk_reach_counts"),
        ),  # fmt: skip
        comment="reach_rows counted by scope, day and previous day: unique people of any period in one small sum",
    )


def downgrade() -> None:
    for name in ("reach_counts", "reach_rows", "rollup_seen", "rollup_blasts", *FACT_COMMENTS):
        op.drop_table(name)
