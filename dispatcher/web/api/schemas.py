"""What the API reads and answers, as pydantic models: they are its OpenAPI schema, with examples.

Times are ISO 8601 with an offset; phone numbers are masked (`+8490****567`) everywhere.
Documents the domain builds with many keys (a blast's preview) are typed on their main keys and
keep the rest as they are (`additionalProperties`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from dispatcher.alerts import SLUG

Priority = Literal["normal", "urgent"]
ChannelPolicy = Literal["sms", "zalo", "zalo_then_sms"]
Encoding = Literal["auto", "unicode", "ascii"]
Name = Field(max_length=200)


class Request(BaseModel):
    """A request body: unknown fields are refused (a typo never passes silently)."""

    model_config = ConfigDict(extra="forbid")


# -- alerts -------------------------------------------------------------------------------


class AlertSummary(BaseModel):
    """The newest version of one alert, as the list shows it."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"id": "gia-danh-cong-an", "version": 2, "versions": 2, "status": "approved",
         "method": "impersonating_authorities", "priority": "urgent", "title": "Giả danh công an gọi điện",
         "author": "lan", "approver": "minh"}]})  # fmt: skip

    id: str
    version: int
    versions: int
    status: str
    method: str
    priority: str
    title: str
    author: str
    approver: str | None


class Rendering(BaseModel):
    """One way the alert travels: its text, encoding, characters and SMS parts (longest region names)."""

    text: str
    encoding: str
    characters: int
    units: int
    parts: int


class Renderings(BaseModel):
    """With diacritics (`unicode`) and without (`ascii`, không dấu)."""

    unicode: Rendering
    ascii: Rendering


class Alert(BaseModel):
    """One version of an alert with both renderings and the price of a part per carrier."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"id": "gia-danh-cong-an", "version": 1, "status": "draft", "method": "impersonating_authorities",
         "title": "Giả danh công an gọi điện", "priority": "urgent", "valid_days": 180, "audiences": ["public"],
         "variables": {}, "source": "Kế hoạch 89/KH-TBATANM", "author": "lan", "approver": None, "zalo": None,
         "renderings": {
             "unicode": {"text": "CẢNH BÁO: …", "encoding": "UCS-2", "characters": 120, "units": 120, "parts": 2},
             "ascii": {"text": "CANH BAO: …", "encoding": "GSM-7", "characters": 120, "units": 120, "parts": 1}},
         "currency": "VND", "cost_per_part": {"viettel": 300.0, "default": 350.0}}]})  # fmt: skip

    id: str
    version: int
    status: str
    method: str
    title: str
    priority: str
    valid_days: int
    audiences: list[str]
    variables: dict[str, str]
    source: str
    author: str
    approver: str | None
    zalo: dict[str, Any] | None
    renderings: Renderings
    currency: str
    cost_per_part: dict[str, float]


class AlertCreate(Request):
    """A new alert (police): stored as a draft and written to the catalogue folder, as `canhbao alerts add` does."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"id": "gia-danh-cong-an", "method": "impersonating_authorities", "title": "Giả danh công an gọi điện",
         "body": "CẢNH BÁO: Công an không bao giờ gọi điện yêu cầu chuyển tiền. Gọi 113 khi nghi ngờ.",
         "source": "Kế hoạch 89/KH-TBATANM", "audiences": ["public"], "priority": "urgent",
         "valid_days": 180}]})  # fmt: skip

    id: str = Field(pattern=SLUG.pattern, description="lower-case letters without accents, digits and '-'")
    method: str = Field(min_length=1, max_length=60)
    title: str = Field(min_length=1, max_length=200)
    body: str = Field(min_length=1, max_length=2000)
    source: str = Field(min_length=1, max_length=500)
    audiences: list[str] = Field(default_factory=lambda: ["public"], max_length=20)
    priority: Priority = "normal"
    valid_days: int = Field(180, ge=1, le=3650)
    body_ascii: str | None = Field(None, max_length=2000)
    variables: dict[str, str] = Field(default_factory=dict, max_length=20)


class AlertChange(BaseModel):
    """What a submit or an approval did."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"id": "gia-danh-cong-an", "version": 1, "status": "approved", "actor": "minh"}]})  # fmt: skip

    id: str
    version: int
    status: str
    actor: str


# -- blasts -------------------------------------------------------------------------------


class BlastSummary(BaseModel):
    """A blast as the list shows it."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"id": 7, "state": "pending_approval", "alert": "gia-danh-cong-an", "channel": "sms", "encoding": "auto",
         "recipients": None, "created_by": "hoa", "approved_by": None, "start_at": "2026-12-01T02:00:00+00:00",
         "segment": ["Quảng Nam (cũ), huyện Duy Xuyên"]}]})  # fmt: skip

    id: int
    state: str
    alert: str | None
    channel: str
    encoding: str
    recipients: int | None = Field(description="messages made when it started; None before")
    created_by: str
    approved_by: str | None
    start_at: datetime
    segment: list[str]


class Blast(BlastSummary):
    """A blast with its messages by state and by carrier, by channel, and the preview it was approved on."""

    not_after: datetime | None
    rate: float | None
    counts: dict[str, int]
    by_carrier: dict[str, dict[str, int]]
    by_channel: dict[str, int]
    awaiting_receipt: int
    held: dict[str, int]
    preview: dict[str, Any]


class BlastRequest(Request):
    """Who gets which alert, how and when: what `canhbao blast create` takes."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"alert": "gia-danh-cong-an", "legacy_districts": ["Quảng Nam (cũ), huyện Duy Xuyên"], "channel": "sms",
         "start_at": "2026-12-01T09:00:00+07:00", "not_after": "2026-12-01T17:00:00+07:00"}]})  # fmt: skip

    alert: str = Field(min_length=1, max_length=80, description="an approved alert's id")
    provinces: list[str] = Field(default_factory=list, max_length=100, description="names or codes, today's or old")
    communes: list[str] = Field(default_factory=list, max_length=500)
    legacy_districts: list[str] = Field(default_factory=list, max_length=100)
    audiences: list[str] = Field(default_factory=list, max_length=20, description="default: the alert's; 'all'")
    carriers: list[str] = Field(default_factory=list, max_length=10)
    channel: ChannelPolicy = "sms"
    encoding: Encoding = "auto"
    start_at: AwareDatetime | None = Field(None, description="default: as soon as approved")
    not_after: AwareDatetime | None = None
    rate: float | None = Field(None, gt=0, le=100_000, description="messages per second at most")


class Preview(BaseModel):
    """Recipients, exclusions by reason, by carrier and region, parts, cost by channel and time to send."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [
        {"recipients": 18250, "matched": 18400, "excluded": {"opted_out": 120, "no_channel": 0,
         "already_received": 30, "capped": 0}, "by_carrier": {"viettel": 9100, "vinaphone": 5150, "mobifone": 4000},
         "parts_per_message": 2, "total_parts": 36500, "cost": 10950000, "currency": "VND", "eta_seconds": 365,
         "warnings": []}]})  # fmt: skip

    recipients: int
    matched: int
    excluded: dict[str, int]
    by_carrier: dict[str, int]
    parts_per_message: int
    total_parts: int
    cost: float
    currency: str
    eta_seconds: float
    warnings: list[dict[str, Any]]


class CreatedBlast(Preview):
    """The preview of the blast just created, its number and state (waiting for a second person)."""

    blast_id: int
    state: str


class BlastChange(BaseModel):
    """What an approval, a pause, a resume or a cancel did."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"blast_id": 7, "state": "scheduled", "actor": "minh"}]})

    blast_id: int
    state: str
    actor: str


class Resent(BaseModel):
    """How many messages of unknown fate were queued again."""

    blast_id: int
    requeued: int


# -- deliveries ---------------------------------------------------------------------------


class Delivery(BaseModel):
    """One message of the delivery log; the number is masked."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"id": 1201, "blast_id": 7, "msisdn": "+8490****567", "carrier": "viettel", "province_code": 51,
         "channel": "sms", "status": "delivered", "attempts": 1, "gateway": "viettel-smpp",
         "provider_id": "a1b2c3", "error_code": None, "error": None, "queued_at": "2026-12-01T02:00:00+00:00",
         "sent_at": "2026-12-01T02:00:03+00:00", "finished_at": "2026-12-01T02:00:09+00:00"}]})  # fmt: skip

    id: int
    blast_id: int
    msisdn: str = Field(description="masked")
    carrier: str
    province_code: int
    channel: str
    status: str
    attempts: int
    gateway: str | None
    provider_id: str | None
    error_code: str | None
    error: str | None
    queued_at: datetime | None
    sent_at: datetime | None
    finished_at: datetime | None


class DeliveryPage(BaseModel):
    """One page of the log, newest first; `next_before` asks for the next (older) page, None at the end.

    Follow `next_before` until it is None: a page may hold fewer rows than asked when few match.
    """

    items: list[Delivery]
    next_before: int | None
    notes: list[str] = Field(description="what a former province or district asked for became")


class NumberSearch(Request):
    """The log of one number, posted so that the number stays out of URLs and proxies' logs."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"msisdn": "0905123456"}]})

    msisdn: str = Field(min_length=1, max_length=32)
    blast: int | None = Field(None, ge=1)
    status: str = Field("", max_length=30)
    carrier: str = Field("", max_length=30)
    gateway: str = Field("", max_length=64)
    before: int | None = Field(None, ge=1, le=2**62)
    limit: int = Field(50, ge=1, le=500)


# -- subscribers --------------------------------------------------------------------------


class RejectedRow(BaseModel):
    """A refused (or repeated) row of an import: its row number as a spreadsheet shows it, the value masked."""

    row: int
    msisdn: str = Field(description="as written, masked")
    reason: str


class ImportResult(BaseModel):
    """What an import did (as `canhbao subscribers import --json`), and its refused rows (the first 1,000)."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"rows": 3, "added": 2, "updated": 0, "unchanged": 0, "rejected": 1, "duplicates": 0,
         "refusals_applied": 0, "encoding": "utf-8", "ignored_columns": [],
         "rejects": [{"row": 4, "msisdn": "1234*", "reason": "số điện thoại không hợp lệ"}]}]})  # fmt: skip

    rows: int
    added: int
    updated: int
    unchanged: int
    rejected: int
    duplicates: int
    refusals_applied: int
    encoding: str | None
    ignored_columns: list[str]
    rejects: list[RejectedRow]


class ImportJob(BaseModel):
    """An import still going on (202), or how it ended: asked again at `href` until `state` is not `running`."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"id": "Zt3q9X1cK0aPq2Lm", "state": "running", "file": "thue-bao.csv", "rows_read": 120000,
         "href": "/api/v1/subscribers/imports/Zt3q9X1cK0aPq2Lm", "result": None, "error": None}]})  # fmt: skip

    id: str
    state: Literal["running", "done", "failed"]
    file: str
    rows_read: int = Field(description="rows read so far")
    href: str
    result: ImportResult | None = Field(None, description="once done: the same document as a quick import's answer")
    error: str | None = Field(None, description="once failed: why the file was refused (nothing stored)")


# -- schedules and audit ------------------------------------------------------------------


class Schedule(BaseModel):
    """A recurring campaign, its state and next runs (UTC)."""

    model_config = ConfigDict(extra="allow")

    name: str
    title: str | None
    state: str
    when: str
    timezone: str
    segment: list[str]
    content: list[str]
    rotation: bool
    channel: str
    last_run: datetime | None
    next_runs: list[datetime]
    synced_by: str = Field(description="who synced the campaign's current file")
    synced_at: datetime
    approved_by: str | None


class ScheduleChange(BaseModel):
    """What an approval did."""

    name: str
    state: str
    actor: str


class AuditEntry(BaseModel):
    """One entry of the audit log."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [
        {"id": 42, "at": "2026-12-01T02:05:00+00:00", "actor": "minh", "action": "blast.approve",
         "subject": "blast:7", "detail": {}, "source": "web", "via": "session", "address": "10.0.0.5",
         "before": {"state": "pending_approval"}, "after": {"state": "scheduled"}, "reason": None}]})  # fmt: skip

    id: int
    at: datetime
    actor: str
    action: str
    subject: str
    detail: dict[str, Any] | list[Any] | None
    source: str | None = Field(None, description="cli, web, api; null: the system (scheduler, worker, inbound texts)")
    via: str | None = Field(None, description="how the person proved who they are: 'session', 'token:12', '--as'")
    address: str | None = Field(None, description="the client's address (web and api)")
    before: dict[str, Any] | list[Any] | None = None
    after: dict[str, Any] | list[Any] | None = None
    reason: str | None = None


class AuditPage(BaseModel):
    """One page of the audit log, newest first; `next_before` asks for the next (older) page."""

    items: list[AuditEntry]
    next_before: int | None
