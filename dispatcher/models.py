"""The database schema, as SQLAlchemy Core tables (bulk paths are set-based SQL, not ORM).

Alembic migrations in dispatcher/migrations build exactly this; tests/test_db.py checks that
the two agree.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)


def utc(moment: datetime | None) -> datetime | None:
    """A time as an aware UTC datetime; a naive one is UTC (SQLite hands stored times back naive)."""
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and read back aware, on SQLite (which keeps no offset) as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        return utc(value)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return utc(value)


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
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
    Column("opted_out_at", UtcDateTime()),
    Column("source", String(200), nullable=False),
    Column("purpose", String(40), nullable=False, default="scam_awareness"),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Index(None, "province_code", "commune_code"),
)

# Subscribers counted by every column a preview groups or filters on (migration 0024): triggers
# keep it in the transaction that changes a subscriber; a blast's preview sums it.
subscriber_counts = Table(
    "subscriber_counts",
    metadata,
    Column("province_code", Integer, primary_key=True, comment="NSO code, scheme 2025"),
    Column("commune_code", Integer, primary_key=True, comment="NSO code, scheme 2025; 0: not known"),
    Column("legacy_district_code", Integer, primary_key=True, comment="before 1 July 2025; 0: none"),
    Column("carrier", String(16), primary_key=True),
    Column("audience_mask", Integer, primary_key=True, comment="bits of domain.Audience"),
    Column("channel_mask", Integer, primary_key=True, comment="bits of domain.Channel"),
    Column("opted_out", Boolean, primary_key=True),
    Column("people", Integer, nullable=False, comment="subscribers holding exactly this; may reach 0"),
    comment="subscribers counted by every column a preview groups or filters on; kept by triggers",
)

# Refusals of numbers we do not hold yet (migration 0010): an import that brings the number in
# moves the refusal onto the subscriber, so no list can make a person who refused reachable.
suppressions = Table(
    "suppressions",
    metadata,
    Column("msisdn", String(16), primary_key=True, comment="E.164, +84…"),
    Column("opted_out_at", UtcDateTime(), nullable=False, comment="when the person refused"),
    Column("recorded_by", String(80), nullable=False),
    comment="refusals of numbers not among the subscribers; the import that brings a number in applies its refusal",
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
    Column("created_at", UtcDateTime(), nullable=False),
    Column("submitted_at", UtcDateTime()),
    Column("approved_at", UtcDateTime()),
    Column("retired_at", UtcDateTime()),
    UniqueConstraint("slug", "version"),
)

# An approver's refusal of one submitted version, with the reason (migration 0017). A table of
# its own: the alerts table keeps the columns every version has.
alert_rejections = Table(
    "alert_rejections",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("alert_id", Integer, ForeignKey("alerts.id"), nullable=False, unique=True),
    Column("rejected_by", String(80), nullable=False),
    Column("rejected_at", UtcDateTime(), nullable=False),
    Column("reason", Text, nullable=False, comment="why the approver sent it back, for the author to act on"),
    comment="approvers' refusals of submitted alert versions",
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", UtcDateTime(), nullable=False),
    Column("actor", String(80), nullable=False),
    Column("action", String(60), nullable=False),
    Column("subject", String(200), nullable=False),
    Column("detail", JSON, nullable=False),
    Column("source", String(8), comment="cli, web or api; NULL: the system, or written before 0018"),
    Column("via", String(80), comment="how the person proved who they are: session, token:<id>, os-user:<name>"),
    Column("address", String(64), comment="the client's IP address (web and api)"),
    Column("before", JSON, comment="the subject's fields before the change, where it changes"),
    Column("after", JSON, comment="the same fields after it"),
    Column("reason", String(300), comment="the reason the person gave, if any"),
    Index(None, "subject"),
    Index(None, "actor"),
    Index(None, "action"),
    Index(None, "at"),
    comment="append-only: triggers refuse UPDATE and DELETE",
)

blasts = Table(
    "blasts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("alert_id", Integer, ForeignKey("alerts.id"), nullable=False, comment="the alert version, frozen"),
    Column("segment", JSON, nullable=False, comment="what was asked and the codes it resolved to"),
    Column("channel", String(16), nullable=False),
    Column("encoding", String(8), nullable=False),
    Column("start_at", UtcDateTime(), nullable=False),
    Column("not_after", UtcDateTime()),
    Column("rate", Float, comment="messages per second, None: the gateways' limits"),
    Column("priority", Integer, nullable=False, comment="1 urgent, 0 normal"),
    Column("state", String(20), nullable=False),
    Column("preview", JSON, nullable=False, comment="the preview the liaison saw"),
    Column("recipients", Integer, comment="deliveries materialised when the blast started"),
    # Its deliveries are one range of ids (one INSERT … SELECT, starts serialised): its log is read by it.
    Column("first_delivery_id", Integer, comment="the lowest id of its deliveries"),
    Column("last_delivery_id", Integer, comment="the highest id of its deliveries"),
    Column("created_by", String(80), nullable=False),
    Column("approved_by", String(80)),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("approved_at", UtcDateTime()),
    Column("started_at", UtcDateTime()),
    Column("finished_at", UtcDateTime()),
    Column("schedule", String(80), comment="the recurring campaign that made it, if any"),
    Column("series", JSON, comment="a rotation: [[alert slug, alert id], …] in order; None: alert_id alone"),
    Column("held", JSON, comment="recipients held back when it started, by reason: capped, deferred"),
    Index(None, "state"),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Integer, primary_key=True),
    # No foreign keys: only a blast's start writes these rows, from the blast and its alerts, in
    # the transaction that starts it; a check per row would cost 0.2–0.4 s a million on SQLite,
    # ~1.5 s on PostgreSQL.
    Column("blast_id", Integer, nullable=False),
    Column("subscriber_id", Integer, nullable=False),
    Column("alert_id", Integer, nullable=False, comment="the alert version sent (of a rotation, each person's)"),
    Column("msisdn", String(16), nullable=False),
    Column("carrier", String(16), nullable=False),
    Column("province_code", Integer, nullable=False),
    Column("commune_code", Integer),
    Column("priority", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("channel", String(8), comment="the channel it goes on when not the blast's first: sms after Zalo failed"),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UtcDateTime(), nullable=False),
    Column("lease_until", UtcDateTime()),
    Column("claimed_by", String(64)),
    Column("gateway", String(32)),
    Column("provider_id", String(64)),
    Column("parts", Integer),
    Column("error_code", String(32)),
    Column("error", String(300)),
    Column("sent_at", UtcDateTime()),
    Column("finished_at", UtcDateTime()),
    # Queued when the blast started (blasts.started_at). Rows are kept narrow: a blast writes a
    # million of them in one statement, and each byte is written twice (log, then database).
    UniqueConstraint("blast_id", "subscriber_id"),
    Index(None, "alert_id", "subscriber_id"),  # by alert first: a new blast appends (migration 0007)
    # No index names a column the sending path changes (status, lease, provider id…): on
    # PostgreSQL each claim, result and report is then a HOT update, written beside the old row
    # version in the room the fill factor leaves, touching no index. What is waiting is found in
    # `delivery_queue`, what is in flight in `claims`, whose message a report is in `provider_refs`.
    postgresql_with={"fillfactor": "30"},  # room on each page for the next versions of its rows (migration 0009)
)

delivery_queue = Table(
    "delivery_queue",
    metadata,
    Column("priority", Integer, primary_key=True),
    Column("due_at", UtcDateTime(), primary_key=True, comment="the delivery's next_attempt_at"),
    Column("delivery_id", Integer, primary_key=True),
    Column("blast_id", Integer, nullable=False),
    comment="deliveries waiting to be claimed, in the order they go; a row leaves when claimed",
    sqlite_with_rowid=False,
)

claims = Table(
    "claims",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("worker", String(64), nullable=False),
    Column("blast_id", Integer, nullable=False),
    Column("lease_until", UtcDateTime(), nullable=False),
    Column("delivery_ids", Text, nullable=False, comment="comma-separated: the deliveries this claim holds"),
    comment="deliveries in flight: one row per worker batch and blast until its results are recorded",
)

provider_refs = Table(
    "provider_refs",
    metadata,
    # Two carriers' SMSCs may hand out the same id: an id is the gateway's (migration 0011).
    Column("gateway", String(32), primary_key=True, comment="the gateway that gave the id"),
    Column("provider_id", String(64), primary_key=True, comment="the gateway's own id of a message"),
    Column("delivery_id", Integer, nullable=False),
    comment="which delivery a gateway's delivery report is about",
    sqlite_with_rowid=False,
)

delivery_reports = Table(
    "delivery_reports",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("gateway", String(32), nullable=False),
    Column("provider_id", String(64), nullable=False),
    Column("delivery_id", Integer, comment="NULL: no message of ours has this id yet (it may come, or never)"),
    Column("status", String(16), nullable=False, comment="delivered, failed, undeliverable"),
    Column("error_code", String(32)),
    Column("at", UtcDateTime(), nullable=False),
    Column("raw", Text, comment="the report as the provider wrote it, for disputes with a carrier"),
    # A receipt naming a message still `sending` waits for its id; if the worker dies first, the
    # reaper applies it by the delivery it names (migration 0025).
    Column("named_delivery_id", Integer, comment="an unmatched report's delivery, when it names one"),
    Index(None, "delivery_id"),
    Index(
        "ix_delivery_reports_unmatched",
        "gateway",
        "provider_id",
        sqlite_where=text("delivery_id IS NULL"),
        postgresql_where=text("delivery_id IS NULL"),
    ),  # fmt: skip
    comment="every delivery report received, raw; those whose id is not known yet are applied when it is",
)

message_parts = Table(
    "message_parts",
    metadata,
    # A message of several parts is several messages to an SMSC, each with its id and receipt; the
    # worker that sent it may be gone when they come, so each part's id and state live here (0016).
    Column("gateway", String(32), primary_key=True),
    Column("provider_id", String(64), primary_key=True, comment="the part's id (lower case, no leading zeros)"),
    Column("delivery_id", Integer, nullable=False),
    Column("status", String(16), comment="its receipt's state; NULL: none yet"),
    Column("error_code", String(32)),
    Index(None, "delivery_id"),
    comment="each part of the multi-part messages an SMSC took, for their receipts to settle the message",
)

receipt_waits = Table(
    "receipt_waits",
    metadata,
    Column("delivery_id", Integer, primary_key=True),
    Column("blast_id", Integer, nullable=False),
    Column("due_at", UtcDateTime(), nullable=False, comment="when it goes by SMS if no receipt has come"),
    Column("error_code", String(32), comment="what Zalo reported instead of a receipt (the SMS goes at once)"),
    Index(None, "due_at"),
    Index(None, "blast_id"),
    comment="Zalo messages of zalo_then_sms blasts waiting for Zalo's delivery receipt; a row leaves when it comes",
)

delivery_attempts = Table(
    "delivery_attempts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("delivery_id", Integer, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("gateway", String(32), nullable=False),
    Column("outcome", String(16), nullable=False, comment="sent, temporary, throttled, permanent, expired, fallback"),
    Column("provider_id", String(64)),
    Column("error_code", String(32)),
    Column("error", String(300)),
    Column("parts", Integer),
    Column("at", UtcDateTime(), nullable=False),
    Index(None, "delivery_id"),
)

# Circuit state of each gateway (migration 0014): every worker reads it before routing, so a
# gateway one worker found failing is skipped by all of them until its cool-down ends.
gateway_health = Table(
    "gateway_health",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("state", String(12), nullable=False, comment="closed, open, half_open"),
    Column("opened_at", UtcDateTime()),
    Column("until", UtcDateTime(), comment="open: the cool-down's end; half_open: the probe's lease"),
    Column("last_error", String(300)),
    Column("last_error_at", UtcDateTime()),
    Column("window_started_at", UtcDateTime()),
    Column("attempts", Integer, nullable=False, comment="sends in the current window"),
    Column("errors", Integer, nullable=False, comment="errors of the gateway itself in the window"),
    Column("trips", Integer, nullable=False, comment="times it was opened, ever"),
    comment="circuit state of each gateway, shared by every worker",
)

inbox = Table(
    "inbox",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("msisdn", String(16), nullable=False, comment="E.164 when valid, else as received"),
    Column("text", Text, nullable=False),
    Column("gateway", String(32), nullable=False),
    Column("received_at", UtcDateTime(), nullable=False),
    Column("raw", Text),
    Index(None, "received_at"),
    comment="inbound texts that are not opt-outs, for operators to read",
)

inbound_ids = Table(
    "inbound_ids",
    metadata,
    # An SMSC sends a deliver_sm again when our answer was lost, Twilio retries a webhook: the
    # (gateway, id) pair is the text's once, so it is opted out or kept once (migration 0016).
    Column("gateway", String(32), primary_key=True),
    Column("provider_id", String(64), primary_key=True, comment="MessageSid; SMPP: a digest"),
    Column("received_at", UtcDateTime(), nullable=False),
    comment="the ids of the inbound texts handled, so a text delivered twice is handled once",
    sqlite_with_rowid=False,
)

leases = Table(
    "leases",
    metadata,
    Column("name", String(64), primary_key=True, comment="what is led: 'scheduler'"),
    Column("holder", String(120), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False),
    Column("acquired_at", UtcDateTime(), nullable=False),
)

schedules = Table(
    "schedules",
    metadata,
    Column("name", String(80), primary_key=True, comment="the file stem in schedules/"),
    Column("definition", JSON, nullable=False, comment="the parsed file"),
    Column("origin", String(300), nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("state", String(20), nullable=False, comment="pending_approval, active, disabled, removed"),
    Column("synced_by", String(80), nullable=False),
    Column("synced_at", UtcDateTime(), nullable=False),
    Column("approved_by", String(80)),
    Column("approved_at", UtcDateTime()),
)

schedule_runs = Table(
    "schedule_runs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("schedule", String(80), nullable=False),
    Column("run_at", UtcDateTime(), nullable=False, comment="the fire time the trigger gave"),
    Column("outcome", String(20), nullable=False, comment="started, missed, empty, no_alert"),
    Column("blast_id", Integer),
    Column("recorded_at", UtcDateTime(), nullable=False),
    UniqueConstraint("schedule", "run_at"),
)

rate_buckets = Table(
    "rate_buckets",
    metadata,
    Column("name", String(64), primary_key=True, comment="'gateway:file', 'parts:file', 'blast:12'"),
    Column("next_free", Float, nullable=False, comment="epoch seconds from which the next unit may go"),
)

# What went through a rate limit, for its last second: a chunk counts from its admission until a
# second after its send returned (until then, the carrier may have counted it in any second).
rate_chunks = Table(
    "rate_chunks",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("bucket", String(64), nullable=False, index=True, comment="the rate_buckets name"),
    Column("weight", Float, nullable=False, comment="messages or parts"),
    Column("started_at", Float, nullable=False, comment="epoch seconds of admission"),
    Column("ended_at", Float, comment="epoch seconds its send returned; empty while in flight"),
)

# APScheduler's SQLAlchemy job store, as it creates it itself, so migrations own the schema.
scheduler_jobs = Table(
    "scheduler_jobs",
    metadata,
    Column("id", String(191), primary_key=True),
    Column("next_run_time", Float(25), index=True),
    Column("job_state", LargeBinary, nullable=False),
)

# A gateway's OAuth tokens (migration 0013; Zalo's). A refresh token works once, so the pair a
# refresh returns is committed here before it is used, and the refresh is announced first
# (refreshing_by/since): a worker that finds an announcement older than a refresh can take knows
# that one was cut short, while the access token it still holds keeps working.
gateway_tokens = Table(
    "gateway_tokens",
    metadata,
    Column("gateway", String(32), primary_key=True, comment="the [gateways.<name>] section"),
    Column("access_token", Text, comment="empty until the first refresh"),
    Column("access_expires_at", UtcDateTime()),
    Column("refresh_token", Text, nullable=False, comment="the newest one; it works once"),
    Column("seed_hash", String(64), nullable=False, comment="SHA-256 of the refresh token the environment gave"),
    Column("refreshed_at", UtcDateTime()),
    Column("refreshing_by", String(120), comment="the process refreshing now, if any"),
    Column("refreshing_since", UtcDateTime()),
    Column("problem", String(300), comment="why the last refresh failed; empty once one worked"),
    comment="OAuth token pairs of gateways that refresh them (Zalo): shared by every worker",
)

# Who may use the console and the API (migration 0015). Sessions and tokens are kept as the
# SHA-256 of their secret: the secret lives only in the cookie or with the API client.
users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("display_name", String(120), nullable=False),
    Column("password_hash", String(200), comment="argon2id; NULL: may not sign in with a password"),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("password_changed_at", UtcDateTime()),
    Column("disabled_at", UtcDateTime()),
    comment="people who use the console, the API or the CLI under their own name",
)

user_roles = Table(
    "user_roles",
    metadata,
    Column("user_id", Integer, ForeignKey("users.id"), primary_key=True),
    Column("role", String(16), primary_key=True),
)

web_sessions = Table(
    "web_sessions",
    metadata,
    Column("id_hash", String(64), primary_key=True, comment="SHA-256 of the cookie's secret"),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False, index=True),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("last_seen_at", UtcDateTime(), nullable=False),
    Column("address", String(64), nullable=False),
    Column("ended_at", UtcDateTime(), comment="logout, password change or user disabled"),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False),
    Column("name", String(80), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True, comment="SHA-256 of the token"),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("last_used_at", UtcDateTime()),
    Column("revoked_at", UtcDateTime()),
)

login_failures = Table(
    "login_failures",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("username", String(64), nullable=False),
    Column("address", String(64), nullable=False),
    Column("at", UtcDateTime(), nullable=False),
    Index(None, "username", "at"),
    Index(None, "address", "at"),
)


# Reach reports (migration 0019). The rollup job (dispatcher/rollups.py) adds each delivery once,
# when it is final, to daily facts; what a report reads never rescans `deliveries`, so a purge of
# old deliveries leaves every figure as it was. Days are local dates (yyyymmdd integers) in the
# deployment's time zone; a commune of 0 is "not known".
def _fact_dimensions() -> tuple[Column[Any], ...]:
    return (
    Column("day", Integer, primary_key=True, comment="local date yyyymmdd the message went (or ended)"),
    Column("blast_id", Integer, primary_key=True),
    Column("alert_id", Integer, primary_key=True),
    Column("province_code", Integer, primary_key=True),
    Column("commune_code", Integer, primary_key=True, comment="0: not known"),
    Column("carrier", String(16), primary_key=True),
    Column("channel", String(8), primary_key=True, comment="sms, zalo, zalo_sms (fell back to SMS)"),
    Column("status", String(16), primary_key=True),
    Column("audience_mask", Integer, primary_key=True, comment="the subscriber's, when rolled up"),
    )  # fmt: skip


def _fact_table(name: str, comment: str) -> Table:
    return Table(
        name,
        metadata,
        *_fact_dimensions(),
        Column("messages", Integer, nullable=False),
        Column("sent", Integer, nullable=False, comment="of them, handed to a gateway"),
        Column("parts", Integer, nullable=False, comment="parts of those sent"),
        comment=comment,
    )


delivery_facts = _fact_table("delivery_facts", "final deliveries added up by day and every dimension a report shows")
rollup_pending = _fact_table(
    "rollup_pending", "deliveries of open blasts not final yet, as of the last rollup (replaced at each run)"
)

rollup_blasts = Table(
    "rollup_blasts",
    metadata,
    Column("blast_id", Integer, primary_key=True),
    Column("rolled_at", UtcDateTime(), nullable=False, comment="the last run that looked at it"),
    Column("closed_at", UtcDateTime(), comment="ended and every delivery final and counted: never read again"),
    comment="which blasts the rollup job has looked at, and those it is done with",
)

rollup_seen = Table(
    "rollup_seen",
    metadata,
    Column("delivery_id", Integer, primary_key=True),
    Column("blast_id", Integer, nullable=False, index=True),
    comment="final deliveries of open blasts already added to the facts; dropped when the blast closes",
    sqlite_with_rowid=False,
)

# One row per person, day and alert version reached (a delivered message). `prev_*` is the day
# (yyyymmdd, 0: none) this person was last reached before this row — by anything, about the same
# method, by the same alert — so a period FROM..TO counts each person once: the rows inside it
# whose previous reach lies before FROM.
reach_rows = Table(
    "reach_rows",
    metadata,
    Column("subscriber_id", Integer, primary_key=True),
    Column("day", Integer, primary_key=True),
    Column("alert_id", Integer, primary_key=True),
    Column("method", String(60), nullable=False),
    Column("province_code", Integer, nullable=False),
    Column("commune_code", Integer, nullable=False),
    Column("audience_mask", Integer, nullable=False),
    Column("prev_any", Integer, nullable=False),
    Column("prev_method", Integer, nullable=False),
    Column("prev_alert", Integer, nullable=False),
    Index(None, "subscriber_id", "method", "day", "alert_id"),
    Index(None, "subscriber_id", "alert_id", "day"),
    comment="people reached, by day and alert version, with the day each was reached before",
)

reach_counts = Table(
    "reach_counts",
    metadata,
    Column("scope", String(8), primary_key=True, comment="all, method, alert"),
    Column("key", String(60), primary_key=True, comment="'' for all, the method, the alert id"),
    Column("day", Integer, primary_key=True),
    Column("prev_day", Integer, primary_key=True),
    Column("province_code", Integer, primary_key=True),
    Column("commune_code", Integer, primary_key=True),
    Column("audience_mask", Integer, primary_key=True),
    Column("people", Integer, nullable=False),
    comment="reach_rows counted by scope, day and previous day: unique people of any period in one small sum",
)

# Statutory reports prepared ahead of their deadlines (migration 0023): each preparation a new
# version, its rendered files kept byte for byte in the database so every host serves the same.
prepared_reports = Table(
    "prepared_reports",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String(8), nullable=False, comment="h1 (6-month) or year (annual)"),
    Column("year", Integer, nullable=False),
    Column("province", String(80), nullable=False, comment="as asked; '' for the whole area"),
    Column("version", Integer, nullable=False, comment="1, 2, … per kind, year and province"),
    Column("place", String(200), nullable=False, comment="the area as the report names it"),
    Column("period_first", Date, nullable=False),
    Column("period_last", Date, nullable=False, comment="figures up to the end of this local day"),
    Column("deadline", Date, nullable=False, comment="the statutory deadline it serves"),
    Column("prepared_at", UtcDateTime(), nullable=False),
    Column("prepared_by", String(120), nullable=False, comment="'scheduler' or the user"),
    UniqueConstraint("kind", "year", "province", "version"),
    comment="statutory reports as prepared: a new version each time, never changed",
)

prepared_report_files = Table(
    "prepared_report_files",
    metadata,
    Column("report_id", Integer, ForeignKey("prepared_reports.id"), primary_key=True),
    Column("format", String(8), primary_key=True, comment="json, csv, html, xlsx, pdf"),
    Column("size", Integer, nullable=False, comment="bytes, so a listing reads no content"),
    Column("content", LargeBinary, nullable=False),
    comment="the rendered files of a prepared report, byte for byte as prepared",
)

# A purge runs in slices, each its own transaction; the run it belongs to keeps its running totals
# in the slice's transaction, so a purge killed between slices is finished, and audited once with
# everything it deleted, by the next one (migration 0027).
purge_runs = Table(
    "purge_runs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("started_at", UtcDateTime(), nullable=False),
    Column("actor", String(120), nullable=False, comment="who started it; the audit log says who finished it"),
    Column("cutoff", UtcDateTime(), nullable=False, comment="the latest cutoff applied"),
    Column("slices", Integer, nullable=False),
    Column("deliveries", Integer, nullable=False),
    Column("inbox", Integer, nullable=False),
    Column("blast_ids", Text, nullable=False, comment="comma-separated: the blasts whose deliveries went"),
    Column("finished_at", UtcDateTime(), comment="NULL: killed between slices; the next purge carries it on"),
    comment="retention purges, with what each deleted so far",
)

job_marks = Table(
    "job_marks",
    metadata,
    Column("job", String(64), primary_key=True, comment="rollup, purge, prepare:h1, prepare:year"),
    Column("mark", String(32), nullable=False, comment="the last slot run; sortable text"),
    Column("ran_at", UtcDateTime(), nullable=False),
    comment="the last run of each periodic job of the scheduler: a slot is claimed once",
)

# Subscriber imports uploaded in the console (migration 0026): kept here, not in the memory of
# the web process that took the upload, so that any `canhbao web` process answers their page.
import_jobs = Table(
    "import_jobs",
    metadata,
    Column("id", String(24), primary_key=True, comment="random, in the job's address"),
    Column("actor", String(120), nullable=False, comment="who uploaded: only they may follow it"),
    Column("name", String(255), nullable=False, comment="the file's name as sent"),
    Column("size", BigInteger, nullable=False, comment="bytes"),
    Column("rows", Integer, nullable=False, comment="rows read so far (stored while importing where it can be)"),
    Column("summary", JSON, comment="what the import did, once it ended well"),
    Column("error", Text, comment="why it was refused or failed, once it ended badly"),
    Column("started_at", UtcDateTime(), nullable=False),
    Column("ended_at", UtcDateTime()),
    comment="subscriber imports running off the request in a web process, readable by every web process",
)
