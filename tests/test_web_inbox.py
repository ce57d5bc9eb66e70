"""The inbox page: texts people sent, numbers masked, filters, a number searched by POST, a reveal with a reason."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, select

from dispatcher.config import load_settings
from dispatcher.inbound import receive
from dispatcher.models import audit_log
from tests.clock import Clock
from tests.web_helpers import make_app, signed_in

SENDER = "+84905123456"


@pytest.fixture
def app(sqlite_engine: Engine, now: datetime) -> FastAPI:
    return make_app(load_settings(None, {}), sqlite_engine, Clock(now))


@pytest.fixture
def texts(sqlite_engine: Engine, now: datetime) -> None:
    """Two texts through two gateways, one naming another number."""
    with sqlite_engine.begin() as conn:
        receive(conn, SENDER, "Có người giả danh công an gọi tôi, số 0912 345 678", "viettel", now)
        receive(conn, "+84977000111", "Cho hỏi tổng đài", "twilio", now + timedelta(hours=1))


def test_texts_show_with_numbers_masked(app: FastAPI, sqlite_engine: Engine, texts: None) -> None:
    """The sender and any number written in a text are masked; full numbers appear nowhere on the page."""
    page = signed_in(app, sqlite_engine, "van-hanh", "operator").get("/inbox")
    assert page.status_code == 200 and "+8490****456" in page.text and "giả danh công an" in page.text
    assert SENDER not in page.text and "0912 345 678" not in page.text


def test_filters_narrow_the_inbox(app: FastAPI, sqlite_engine: Engine, texts: None) -> None:
    """A gateway and words each narrow the texts shown."""
    operator = signed_in(app, sqlite_engine, "van-hanh", "operator")
    by_gateway = operator.get("/inbox", params={"gateway": "twilio"}).text
    assert "Cho hỏi tổng đài" in by_gateway and "giả danh" not in by_gateway
    by_words = operator.get("/inbox", params={"contains": "công an"}).text
    assert "giả danh" in by_words and "Cho hỏi" not in by_words
    assert "Không có tin nào khớp." in operator.get("/inbox", params={"contains": "không có"}).text


def test_a_number_is_searched_by_post_not_in_the_url(app: FastAPI, sqlite_engine: Engine, texts: None) -> None:
    """The texts of one number come back from a POST; a bad number is a 400 saying so."""
    operator = signed_in(app, sqlite_engine, "van-hanh", "operator")
    found = operator.post("/inbox/search", data={"msisdn": "0905 123 456"})
    assert found.status_code == 200 and "giả danh" in found.text and "Cho hỏi" not in found.text
    assert "0905" not in str(found.url)
    assert operator.post("/inbox/search", data={"msisdn": "12345"}).status_code == 400


def test_pages_go_by_key(app: FastAPI, sqlite_engine: Engine, now: datetime) -> None:
    """Fifty texts a page, the next page by the last id seen."""
    with sqlite_engine.begin() as conn:
        for i in range(55):
            receive(conn, SENDER, f"tin số {i}", "viettel", now + timedelta(seconds=i))
    operator = signed_in(app, sqlite_engine, "van-hanh", "operator")
    first = operator.get("/inbox")
    assert first.text.count("tin số") == 50 and "/inbox?before=6" in first.text
    assert operator.get("/inbox", params={"before": 6}).text.count("tin số") == 5


def test_a_reveal_needs_a_reason_and_is_audited(app: FastAPI, sqlite_engine: Engine, texts: None) -> None:
    """With a reason the operator sees the full number and the audit keeps who, why and from where, not the number."""
    operator = signed_in(app, sqlite_engine, "van-hanh", "operator")
    refused = operator.post("/inbox/1/reveal", data={"reason": "xem"})
    assert refused.status_code == 400 and "Cần ghi lý do" in refused.text
    shown = operator.post("/inbox/1/reveal", data={"reason": "gọi lại cho người báo tin"})
    assert shown.status_code == 200 and SENDER in shown.text and 'href="/inbox"' in shown.text
    with sqlite_engine.connect() as conn:
        entry = conn.execute(select(audit_log).where(audit_log.c.action == "number.reveal")).mappings().one()
    assert (entry["actor"], entry["source"], entry["reason"]) == ("van-hanh", "web", "gọi lại cho người báo tin")
    assert SENDER not in str(dict(entry))
    assert operator.post("/inbox/99/reveal", data={"reason": "gọi lại cho người báo tin"}).status_code == 404


def test_the_cli_reads_the_same_filtered_inbox(cli) -> None:
    """`canhbao inbox --gateway … --contains …` narrows through the same query, numbers masked."""
    from dispatcher import db
    from dispatcher.config import DatabaseSettings

    engine = db.make_engine(DatabaseSettings(url=f"sqlite:///{cli.root / 'canhbao.db'}"))
    with engine.begin() as conn:
        receive(conn, SENDER, "Có người giả danh công an", "viettel", datetime(2026, 11, 23, 2, tzinfo=UTC))
        receive(conn, "+84977000111", "Cho hỏi tổng đài", "twilio", datetime(2026, 11, 23, 3, tzinfo=UTC))
    engine.dispose()
    code, rows = cli.json("inbox", "--gateway", "viettel", "--contains", "công an")
    assert code == 0 and [(r["msisdn"], r["gateway"]) for r in rows] == [("+8490****456", "viettel")]
    code, out, _err = cli("inbox", "--msisdn", "0977000111", "--since", "23/11/2026 11:00")
    assert code == 0 and "Không có tin nào khớp." in out
