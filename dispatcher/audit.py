"""The audit log: who did what to which alert, subscriber list or blast, and when."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert

from dispatcher.models import audit_log


def audit(conn: Connection, now: datetime, actor: str, action: str, subject: str, detail: dict[str, Any]) -> None:
    """Append one entry, in the caller's transaction."""
    conn.execute(insert(audit_log).values(at=now, actor=actor, action=action, subject=subject, detail=detail))
