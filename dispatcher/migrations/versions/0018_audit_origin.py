"""audit_log: from where (source, via, address), before/after and reason; append-only by triggers

Revision ID: 0018
Revises: 0017

Every entry says which face it came through (cli, web, api, or system when no person acted) and
how the person proved who they are (a session, token 12, the server's OS user), never a secret.
The database itself refuses to change or remove an entry: UPDATE and DELETE (and TRUNCATE on
PostgreSQL) on `audit_log` raise. Columns are added with ALTER TABLE, not a batch copy: on SQLite
a batch copy of the table would drop its triggers, so a later migration of this table must
create them again.
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

REFUSAL = "audit_log is append-only"
SQLITE_TRIGGERS = {
    "audit_log_no_update": "BEFORE UPDATE ON audit_log",
    "audit_log_no_delete": "BEFORE DELETE ON audit_log",
}
POSTGRES_FUNCTION = f"""
CREATE FUNCTION audit_log_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '{REFUSAL}' USING ERRCODE = 'insufficient_privilege';
END
$$
"""
POSTGRES_TRIGGERS = {
    "audit_log_no_change": "BEFORE UPDATE OR DELETE ON audit_log FOR EACH ROW",
    "audit_log_no_truncate": "BEFORE TRUNCATE ON audit_log FOR EACH STATEMENT",
}


def upgrade() -> None:
    columns = [
        sa.Column("source", sa.String(length=8), comment="cli, web or api; NULL: the system, or written before 0018"),
        sa.Column("via", sa.String(length=80),
                  comment="how the person proved who they are: session, token:<id>, os-user:<name>"),
        sa.Column("address", sa.String(length=64), comment="the client's IP address (web and api)"),
        sa.Column("before", sa.JSON(), comment="the subject's fields before the change, where it changes"),
        sa.Column("after", sa.JSON(), comment="the same fields after it"),
        sa.Column("reason", sa.String(length=300), comment="the reason the person gave, if any"),
    ]  # fmt: skip
    for column in columns:
        op.add_column("audit_log", column)
    for name in ("actor", "action", "at"):
        op.create_index(op.f(f"ix_audit_log_{name}"), "audit_log", [name])
    if op.get_context().dialect.name == "postgresql":
        op.create_table_comment("audit_log", "append-only: triggers refuse UPDATE and DELETE")
        op.execute(POSTGRES_FUNCTION)
        for name, when in POSTGRES_TRIGGERS.items():
            op.execute(f"CREATE TRIGGER {name} {when} EXECUTE FUNCTION audit_log_refuse()")
    else:
        for name, when in SQLITE_TRIGGERS.items():
            op.execute(f"CREATE TRIGGER {name} {when} BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END")


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        for name in POSTGRES_TRIGGERS:
            op.execute(f"DROP TRIGGER {name} ON audit_log")
        op.execute("DROP FUNCTION audit_log_refuse()")
        op.drop_table_comment("audit_log")
    else:
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER {name}")
    for name in ("at", "action", "actor"):
        op.drop_index(op.f(f"ix_audit_log_{name}"), table_name="audit_log")
    for name in ("reason", "after", "before", "address", "via", "source"):
        op.drop_column("audit_log", name)
