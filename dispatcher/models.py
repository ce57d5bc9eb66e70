"""The database schema, as SQLAlchemy Core tables (bulk paths are set-based SQL, not ORM).

Alembic migrations in dispatcher/migrations build exactly this; tests/test_db.py checks that
the two agree.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

subscribers = Table(
    "subscribers",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("msisdn", String(16), nullable=False, unique=True, comment="E.164, +84…"),
    Column("carrier", String(16), nullable=False, comment="allocation carrier, or the declared one"),
    Column("carrier_declared", Boolean, nullable=False, default=False),
    Column("province_code", Integer, nullable=False, comment="NSO code, scheme 2025"),
    Column("commune_code", Integer, comment="NSO code, scheme 2025"),
    Column("region_scheme", String(8), nullable=False, default="2025"),
    Column("legacy_district_code", Integer, comment="NSO code of the district before 1 July 2025"),
    Column("audience_mask", Integer, nullable=False, comment="bits of domain.Audience"),
    Column("channel_mask", Integer, nullable=False, comment="bits of domain.Channel"),
    Column("opted_out_at", DateTime(timezone=True)),
    Column("source", String(200), nullable=False),
    Column("purpose", String(40), nullable=False, default="scam_awareness"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index(None, "province_code", "commune_code"),
)

alerts = Table(
    "alerts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("slug", String(80), nullable=False),
    Column("version", Integer, nullable=False),
    Column("method", String(60), nullable=False),
    Column("title", String(200), nullable=False),
    Column("body", Text, nullable=False),
    Column("body_ascii", Text, nullable=False),
    Column("body_ascii_reviewed", Boolean, nullable=False, comment="written by a person, not generated"),
    Column("variables", JSON, nullable=False),
    Column("audiences", JSON, nullable=False),
    Column("priority", String(10), nullable=False),
    Column("valid_days", Integer, nullable=False),
    Column("source", Text, nullable=False),
    Column("zalo", JSON),
    Column("content_hash", String(64), nullable=False),
    Column("origin", String(200), nullable=False, comment="the catalogue file, or 'cli'"),
    Column("status", String(12), nullable=False),
    Column("author", String(80), nullable=False),
    Column("approver", String(80)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("submitted_at", DateTime(timezone=True)),
    Column("approved_at", DateTime(timezone=True)),
    Column("retired_at", DateTime(timezone=True)),
    UniqueConstraint("slug", "version"),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(80), nullable=False),
    Column("action", String(60), nullable=False),
    Column("subject", String(200), nullable=False),
    Column("detail", JSON, nullable=False),
    Index(None, "subject"),
)
