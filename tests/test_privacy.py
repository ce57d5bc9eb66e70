"""Revealing a full number: a reason is required, the audit log keeps who, when and why, never the number."""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy import Engine, insert, select

from dispatcher import privacy
from dispatcher.errors import InputRejected, NotFound
from dispatcher.models import audit_log, inbox


def test_a_reveal_needs_a_reason_and_is_audited_without_the_number(sqlite_engine: Engine, now: datetime) -> None:
    with sqlite_engine.begin() as conn:
        message_id = conn.execute(
            insert(inbox).values(msisdn="+84905123456", text="Cho hỏi", gateway="twilio", received_at=now)
        ).inserted_primary_key[0]
    with sqlite_engine.begin() as conn, pytest.raises(InputRejected, match="lý do"):
        privacy.reveal_inbox(conn, now, "van-hanh", message_id, "  ")
    with sqlite_engine.begin() as conn:
        assert privacy.reveal_inbox(conn, now, "van-hanh", message_id, "gọi lại cho người dân") == "+84905123456"
    with sqlite_engine.connect() as conn:
        entry = conn.execute(select(audit_log)).mappings().one()
    assert entry["actor"] == "van-hanh" and entry["action"] == "number.reveal"
    assert entry["detail"]["reason"] == "gọi lại cho người dân" and "+84905123456" not in str(dict(entry))


def test_revealing_what_does_not_exist_says_so(sqlite_engine: Engine, now: datetime) -> None:
    with sqlite_engine.begin() as conn, pytest.raises(NotFound):
        privacy.reveal_delivery(conn, now, "van-hanh", 999, "kiểm tra lỗi gửi")
