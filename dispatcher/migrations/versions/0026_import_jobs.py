"""import jobs: subscriber imports of the console kept in the database, readable by every web process

Revision ID: 0026
Revises: 0025

`canhbao web --workers N` runs several processes behind one port: the page that follows an
import may be asked of a process other than the one running it. The job, how far it got and
how it ended live in this table, so any process answers.
"""

import sqlalchemy as sa
from alembic import op

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "import_jobs",
        sa.Column("id", sa.String(length=24), nullable=False, comment="random, in the job's address"),
        sa.Column("actor", sa.String(length=120), nullable=False, comment="who uploaded: only they may follow it"),
        sa.Column("name", sa.String(length=255), nullable=False, comment="the file's name as sent"),
        sa.Column("size", sa.BigInteger(), nullable=False, comment="bytes"),
        sa.Column(
            "rows", sa.Integer(), nullable=False, comment="rows read so far (stored while importing where it can be)"
        ),
        sa.Column("summary", sa.JSON(), comment="what the import did, once it ended well"),
        sa.Column("error", sa.Text(), comment="why it was refused or failed, once it ended badly"),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_import_jobs")),
        comment="subscriber imports running off the request in a web process, readable by every web process",
    )


def downgrade() -> None:
    op.drop_table("import_jobs")
