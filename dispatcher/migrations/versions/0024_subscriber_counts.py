"""subscriber_counts: how many subscribers each combination of place, carrier, audiences, channels holds

Revision ID: 0024
Revises: 0023

A blast's preview counts its people by exclusion reason, carrier, commune and channel. Grouping
the subscribers themselves sorted a million rows (3 s on SQLite); every column a segment or a
reason other than the history ones reads is here instead, with the number of people holding it,
so a preview sums a few ten thousand rows. Triggers keep the counts in the transaction that
changes a subscriber (import, opt-out, opt-in, correction, deletion): row triggers on SQLite,
statement triggers over the changed rows on PostgreSQL. A missing commune or legacy district is
0 here, so that every column is part of the primary key. A later migration that copies
`subscribers` in a batch on SQLite drops its triggers: it must create them again.
"""

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None

KEY = ("province_code", "commune_code", "legacy_district_code", "carrier", "audience_mask", "channel_mask", "opted_out")


def _key_of(row: str) -> str:
    """The counted key of a subscriber row named `row` (NEW, OLD, or a table alias), in KEY's order."""
    return (f"{row}.province_code, COALESCE({row}.commune_code, 0), COALESCE({row}.legacy_district_code, 0), "
            f"{row}.carrier, {row}.audience_mask, {row}.channel_mask, {row}.opted_out_at IS NOT NULL")  # fmt: skip


COLUMNS = ", ".join(KEY)
ADD = f"INSERT INTO subscriber_counts ({COLUMNS}, people) "
ON_KEY = f"ON CONFLICT ({COLUMNS}) DO UPDATE SET people = subscriber_counts.people + excluded.people"
SQLITE_TRIGGERS = {
    "subscriber_counts_insert": f"AFTER INSERT ON subscribers BEGIN {ADD} VALUES ({_key_of('NEW')}, 1) {ON_KEY}; END",
    "subscriber_counts_delete": f"AFTER DELETE ON subscribers BEGIN {ADD} VALUES ({_key_of('OLD')}, -1) {ON_KEY}; END",
    # Only a change of a counted column moves a person; an import's `updated_at` alone does not.
    "subscriber_counts_update": (
        f"AFTER UPDATE ON subscribers WHEN ({_key_of('OLD')}) IS NOT ({_key_of('NEW')}) BEGIN "
        f"{ADD} VALUES ({_key_of('OLD')}, -1) {ON_KEY}; {ADD} VALUES ({_key_of('NEW')}, 1) {ON_KEY}; END"
    ),
}
# One statement per changed statement: the rows it changed, grouped by key, each key's net change
# added in key order (two imports at once lock the same counts in the same order).
POSTGRES_FUNCTION = f"""
CREATE FUNCTION subscriber_counts_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        {ADD} SELECT {_key_of("n")}, count(*) FROM new_rows n GROUP BY 1, 2, 3, 4, 5, 6, 7 ORDER BY 1, 2, 3, 4, 5, 6, 7
        {ON_KEY};
    ELSIF TG_OP = 'DELETE' THEN
        {ADD} SELECT {_key_of("o")}, -count(*) FROM old_rows o GROUP BY 1, 2, 3, 4, 5, 6, 7 ORDER BY 1, 2, 3, 4, 5, 6, 7
        {ON_KEY};
    ELSE
        {ADD} SELECT {COLUMNS}, sum(change) FROM (
            SELECT {_key_of("o")}, -1 AS change FROM old_rows o
            UNION ALL SELECT {_key_of("n")}, 1 FROM new_rows n
        ) AS changed ({COLUMNS}, change)
        GROUP BY {COLUMNS} HAVING sum(change) <> 0 ORDER BY {COLUMNS}
        {ON_KEY};
    END IF;
    RETURN NULL;
END
$$
"""
POSTGRES_TRIGGERS = {
    "subscriber_counts_insert": "AFTER INSERT ON subscribers REFERENCING NEW TABLE AS new_rows",
    "subscriber_counts_delete": "AFTER DELETE ON subscribers REFERENCING OLD TABLE AS old_rows",
    "subscriber_counts_update": "AFTER UPDATE ON subscribers REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
}


def upgrade() -> None:
    op.create_table(
        "subscriber_counts",
        sa.Column("province_code", sa.Integer(), nullable=False, comment="NSO code, scheme 2025"),
        sa.Column("commune_code", sa.Integer(), nullable=False, comment="NSO code, scheme 2025; 0: not known"),
        sa.Column("legacy_district_code", sa.Integer(), nullable=False, comment="before 1 July 2025; 0: none"),
        sa.Column("carrier", sa.String(length=16), nullable=False),
        sa.Column("audience_mask", sa.Integer(), nullable=False, comment="bits of domain.Audience"),
        sa.Column("channel_mask", sa.Integer(), nullable=False, comment="bits of domain.Channel"),
        sa.Column("opted_out", sa.Boolean(), nullable=False),
        sa.Column("people", sa.Integer(), nullable=False, comment="subscribers holding exactly this; may reach 0"),
        sa.PrimaryKeyConstraint(*KEY, name=op.f("pk_subscriber_counts")),
        comment="subscribers counted by every column a preview groups or filters on; kept by triggers",
    )
    op.execute(f"{ADD} SELECT {_key_of('s')}, count(*) FROM subscribers s GROUP BY 1, 2, 3, 4, 5, 6, 7")
    if op.get_context().dialect.name == "postgresql":
        op.execute(POSTGRES_FUNCTION)
        for name, when in POSTGRES_TRIGGERS.items():
            op.execute(f"CREATE TRIGGER {name} {when} FOR EACH STATEMENT EXECUTE FUNCTION subscriber_counts_change()")
    else:
        for name, body in SQLITE_TRIGGERS.items():
            op.execute(f"CREATE TRIGGER {name} {body}")


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        for name in POSTGRES_TRIGGERS:
            op.execute(f"DROP TRIGGER {name} ON subscribers")
        op.execute("DROP FUNCTION subscriber_counts_change()")
    else:
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER {name}")
    op.drop_table("subscriber_counts")
