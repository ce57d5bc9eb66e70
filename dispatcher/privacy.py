"""Full phone numbers, for the roles that need them: each reveal given a reason and kept in the audit log.

Everywhere else a number is shown masked (`+8490****567`, dispatcher/phones.py). An operator who
must call a person back, or check a failure with the carrier, reveals one number at a time and
says why; the audit log keeps who saw which number, when and why, never the number itself.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, Table, select

from dispatcher.audit import audit
from dispatcher.errors import InputRejected, NotFound
from dispatcher.models import deliveries, inbox
from dispatcher.phones import mask_digits

REVEAL_ROLES = frozenset({"operator"})
MIN_REASON = 5


def _reason(text: str) -> str:
    reason = " ".join(text.split())
    if len(reason) < MIN_REASON:
        raise InputRejected(f"Cần ghi lý do xem số đầy đủ (ít nhất {MIN_REASON} ký tự).")
    return reason[:300]


def reveal_delivery(conn: Connection, now: datetime, actor: str, delivery_id: int, reason: str) -> str:
    """The full number a delivery went to; the reveal is audited."""
    return _reveal(conn, now, actor, reason, deliveries, delivery_id, "delivery", f"Không có tin số {delivery_id}.")


def reveal_inbox(conn: Connection, now: datetime, actor: str, message_id: int, reason: str) -> str:
    """The full number an inbound text came from; the reveal is audited."""
    return _reveal(conn, now, actor, reason, inbox, message_id, "inbox", f"Không có tin đến số {message_id}.")


def _reveal(
    conn: Connection, now: datetime, actor: str, reason: str, table: Table, row_id: int, kind: str, missing: str
) -> str:
    why = _reason(reason)
    msisdn = conn.execute(select(table.c.msisdn).where(table.c.id == row_id)).scalar()
    if msisdn is None:
        raise NotFound(missing)
    audit(conn, now, actor, "number.reveal", f"{kind}:{row_id}", {"reason": why, "masked": mask_digits(msisdn)},
          reason=why)  # fmt: skip
    return msisdn
