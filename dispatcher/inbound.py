"""What people send us: an opt-out keyword refuses our messages, any other text waits in the inbox.

The keywords are those carriers and Decree 91/2020 practice use: HUY/HỦY, TU CHOI/TỪ CHỐI, TC and
STOP, in any case, with or without accents, anywhere in the text, but only as words of their own:
"TC" inside "ATCB" or "HUY" inside "HUYỆN" is not a refusal, nor is "không từ chối" (a denial).
Every gateway that receives texts (SMPP deliver_sm, Twilio's inbound webhook) ends here.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

import structlog
from sqlalchemy import Connection, Select, insert, select
from sqlalchemy.dialects import postgresql, sqlite

from dispatcher.errors import UsageError
from dispatcher.models import inbound_ids, inbox
from dispatcher.phones import InvalidNumber, PhoneBook, mask_digits, mask_text
from dispatcher.subscribers import set_opt_out

log = structlog.get_logger(__name__)

# On the accent-free upper-case text: a keyword between non-alphanumerics (or the ends).
OPT_OUT = re.compile(r"(?<![A-Z0-9])(?:HUY|TU\s*CHOI|TC|STOP)(?![A-Z0-9])")
# "không từ chối", "đừng hủy", "don't stop": a keyword after one of these says the opposite.
NEGATIONS = frozenset({"KHONG", "KO", "K", "DUNG", "CHUA", "CHANG", "DON'T", "DONT", "NOT"})
ACTOR = "inbound"  # who the audit log says acted: the person, by a text to one of our gateways


class Received(StrEnum):
    """What became of an inbound text."""

    OPTED_OUT = "opted_out"
    """It refused our messages: the number is opted out."""
    KEPT = "kept"
    """Anything else: kept in the inbox for operators."""
    DUPLICATE = "duplicate"
    """A text already handled, delivered again (an SMSC's resend, a webhook retried): ignored."""


def is_opt_out(text: str) -> bool:
    """Whether `text` asks to stop our messages (an opt-out keyword as a word of its own)."""
    plain = _plain(text)
    return any(not _negated(plain[: match.start()]) for match in OPT_OUT.finditer(plain))


def _negated(before: str) -> bool:
    """Whether the word just before a keyword denies it."""
    words = re.findall(r"[A-Z0-9']+", before)
    return bool(words) and words[-1] in NEGATIONS


def receive(
    conn: Connection,
    msisdn: str,
    text: str,
    gateway: str,
    now: datetime,
    raw: str | None = None,
    provider_id: str | None = None,
) -> Received:
    """Handle one text from `msisdn` that arrived through `gateway` at `now`, in the caller's transaction.

    A text whose `provider_id` this gateway gave before is a copy of one handled: it changes nothing.
    """
    if provider_id is not None and not _first_time(conn, gateway, provider_id, now):
        log.info("inbound.duplicate", gateway=gateway, provider_id=provider_id)
        return Received.DUPLICATE
    number = _e164(msisdn)
    if number is not None and is_opt_out(text):
        set_opt_out(conn, number, True, now, ACTOR, {"via": "inbound", "gateway": gateway})
        log.info("inbound.opt_out", gateway=gateway, msisdn=number)
        return Received.OPTED_OUT
    values = {"msisdn": (number or msisdn)[:16], "text": text, "gateway": gateway, "received_at": now, "raw": raw}
    conn.execute(insert(inbox).values(values))
    log.info("inbound.kept", gateway=gateway, msisdn=number or msisdn)
    return Received.KEPT


@dataclass(frozen=True)
class InboxFilter:
    """Which inbound texts to read, newest first; each field set narrows them (`msisdn` in E.164)."""

    gateway: str | None = None
    msisdn: str | None = None
    contains: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    before_id: int | None = None  # a page: older than this one (paging by key, never OFFSET)
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise UsageError(f"Số tin tối đa phải từ 1 trở lên (nhận được {self.limit}).")
        if self.since is not None and self.until is not None and self.until <= self.since:
            raise UsageError("Thời điểm kết thúc phải sau thời điểm bắt đầu.")


def _query(found: InboxFilter) -> Select[Any]:
    c = inbox.c
    conditions = [column == value for column, value in ((c.gateway, found.gateway), (c.msisdn, found.msisdn)) if value]
    if found.contains:
        conditions.append(c.text.icontains(found.contains, autoescape=True))
    if found.since is not None:
        conditions.append(c.received_at >= found.since)
    if found.until is not None:
        conditions.append(c.received_at < found.until)
    if found.before_id is not None:
        conditions.append(c.id < found.before_id)
    return select(inbox).where(*conditions).order_by(c.id.desc()).limit(found.limit)


def read(conn: Connection, found: InboxFilter) -> list[dict[str, Any]]:
    """The texts `found` asks for, newest first, masked for showing (see `shown`)."""
    return [shown(dict(row)) for row in conn.execute(_query(found)).mappings()]


def page(conn: Connection, found: InboxFilter, size: int = 50) -> tuple[list[dict[str, Any]], int | None]:
    """One page of the inbox, masked, newest first; and the key of the next (older) page, or None."""
    rows = read(conn, replace(found, limit=size + 1))
    return rows[:size], (rows[size - 1]["id"] if len(rows) > size else None)


def _first_time(conn: Connection, gateway: str, provider_id: str, now: datetime) -> bool:
    """Record that this text was handled; False when it already was."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    seen = dialect.insert(inbound_ids).values(gateway=gateway, provider_id=provider_id[:64], received_at=now)
    return conn.execute(seen.on_conflict_do_nothing().execution_options(preserve_rowcount=True)).rowcount == 1


def gateways(conn: Connection) -> list[str]:
    """The gateways texts came in through, for a filter's choices."""
    return list(conn.execute(select(inbox.c.gateway).distinct().order_by(inbox.c.gateway)).scalars())


def shown(message: dict[str, Any]) -> dict[str, Any]:
    """A text as people see it: the sender masked (a brandname as it is), numbers in the words masked, no raw."""
    sender = message["msisdn"]
    masked = sender if any(ch.isalpha() for ch in sender) else mask_digits(sender)
    return {**{k: v for k, v in message.items() if k != "raw"}, "msisdn": masked, "text": mask_text(message["text"])}


def _plain(text: str) -> str:
    """Upper-case, accent-free: HỦY, Hủy and huy read alike."""
    decomposed = unicodedata.normalize("NFD", text.replace("đ", "d").replace("Đ", "D"))
    return "".join(c for c in decomposed if not unicodedata.combining(c)).upper()


def _e164(msisdn: str) -> str | None:
    """The sender as E.164 (SMSCs write 84…, Twilio +84…); None for what is no Vietnamese mobile."""
    try:
        return PhoneBook().normalize(msisdn).e164
    except InvalidNumber:
        return None
