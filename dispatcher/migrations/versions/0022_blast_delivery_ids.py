"""blasts: the ids of their first and last delivery, so that a blast's log is read as one range of ids

Revision ID: 0022
Revises: 0019

A blast's deliveries are written by one INSERT … SELECT while no other blast materialises (the
start is serialised), so their ids are one unbroken range. The console reads a blast's log
newest first by that range of the primary key; without it, SQLite took the blast's million
entries of (blast_id, subscriber_id) and sorted them (1 s a page), and no new index may be put
on `deliveries` (each costs the materialisation ~1 s a million and PostgreSQL its HOT updates).
"""

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("blasts", sa.Column("first_delivery_id", sa.Integer(), comment="the lowest id of its deliveries"))
    op.add_column("blasts", sa.Column("last_delivery_id", sa.Integer(), comment="the highest id of its deliveries"))
    op.execute(
        "UPDATE blasts SET"
        " first_delivery_id = (SELECT min(id) FROM deliveries WHERE deliveries.blast_id = blasts.id),"
        " last_delivery_id = (SELECT max(id) FROM deliveries WHERE deliveries.blast_id = blasts.id)"
        " WHERE started_at IS NOT NULL"
    )


def downgrade() -> None:
    with op.batch_alter_table("blasts") as batch_op:
        batch_op.drop_column("last_delivery_id")
        batch_op.drop_column("first_delivery_id")
