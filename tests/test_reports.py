"""Delivery reports keyed per gateway, kept raw, and never lost when they come early or for an id we never sent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, insert, select

from dispatcher import queue
from dispatcher.gateways.base import DeliveryReport, ReportStatus
from dispatcher.models import deliveries, delivery_reports

AT = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)


def _sending(engine: Engine, *ids: int) -> None:
    """Deliveries `ids`, handed to a gateway and not yet answered."""
    rows = [{"id": i, "blast_id": 1, "subscriber_id": i, "alert_id": 1, "msisdn": f"+8490{i:07d}", "carrier": "viettel",
             "province_code": 48, "priority": 0, "status": "sending", "attempts": 1, "next_attempt_at": AT}
            for i in ids]  # fmt: skip
    with engine.begin() as conn:
        conn.execute(insert(deliveries), rows)


def _status(engine: Engine) -> dict[int, str]:
    with engine.connect() as conn:
        return dict(conn.execute(select(deliveries.c.id, deliveries.c.status)).all())


def _kept(engine: Engine) -> list[tuple]:
    r = delivery_reports.c
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(select(r.gateway, r.provider_id, r.delivery_id, r.status, r.raw)
                                                   .order_by(r.id))]  # fmt: skip


def test_two_gateways_may_give_the_same_id(engine: Engine) -> None:
    """Viettel's and MobiFone's SMSCs both answer id 1A: a report of one moves only its own message."""
    _sending(engine, 1, 2)
    with engine.begin() as conn:
        queue.record_sent(conn, "viettel", AT, [(1, "1A", 1)])
        queue.record_sent(conn, "mobifone", AT, [(2, "1A", 1)])
        changed = queue.apply_reports(conn, [DeliveryReport("1A", ReportStatus.UNDELIVERABLE, AT, "001", "mobifone")])
    assert changed == 1 and _status(engine) == {1: "sent", 2: "undeliverable"}


def test_a_report_keeps_its_raw_text_beside_its_delivery(engine: Engine) -> None:
    """The receipt as the SMSC wrote it is stored with the delivery it was about."""
    _sending(engine, 1)
    raw = "id:1A sub:001 dlvrd:001 submit date:2611230900 done date:2611230901 stat:DELIVRD err:000 text:"
    with engine.begin() as conn:
        queue.record_sent(conn, "viettel", AT, [(1, "1A", 1)])
        queue.apply_reports(conn, [DeliveryReport("1A", ReportStatus.DELIVERED, AT, None, "viettel", raw)])
    assert _kept(engine) == [("viettel", "1A", 1, "delivered", raw)] and _status(engine) == {1: "delivered"}


def test_a_report_that_comes_before_its_id_is_recorded_is_applied_when_it_is(engine: Engine) -> None:
    """A fast SMSC's receipt, before the worker committed the id: kept unmatched, applied by record_sent."""
    _sending(engine, 1, 2)
    early = DeliveryReport("7F", ReportStatus.UNDELIVERABLE, AT, "011", "viettel", "id:7F stat:UNDELIV err:011")
    with engine.begin() as conn:
        assert queue.apply_reports(conn, [early]) == 0
    assert _kept(engine) == [("viettel", "7F", None, "undeliverable", early.raw)]
    with engine.begin() as conn:
        queue.record_sent(conn, "viettel", AT + timedelta(seconds=1), [(1, "7F", 1), (2, "80", 1)])
    assert _status(engine) == {1: "undeliverable", 2: "sent"}
    assert _kept(engine) == [("viettel", "7F", 1, "undeliverable", early.raw)]


def test_a_report_for_an_id_we_never_sent_is_kept_for_reconciliation(engine: Engine) -> None:
    """Nothing crashes and nothing moves: the report waits, unmatched, with its raw text."""
    _sending(engine, 1)
    stray = DeliveryReport("DEAD", ReportStatus.DELIVERED, AT, None, "viettel", "id:DEAD stat:DELIVRD")
    with engine.begin() as conn:
        queue.record_sent(conn, "viettel", AT, [(1, "1A", 1)])
        assert queue.apply_reports(conn, [stray]) == 0
        queue.record_sent(conn, "mobifone", AT, [])
    assert _status(engine) == {1: "sent"} and _kept(engine) == [("viettel", "DEAD", None, "delivered", stray.raw)]


def test_an_early_report_of_another_gateway_waits_for_its_own(engine: Engine) -> None:
    """An early report of Viettel's id 1A is not applied when MobiFone records its own 1A."""
    _sending(engine, 1, 2)
    with engine.begin() as conn:
        queue.apply_reports(conn, [DeliveryReport("1A", ReportStatus.DELIVERED, AT, None, "viettel")])
        queue.record_sent(conn, "mobifone", AT, [(2, "1A", 1)])
        queue.record_sent(conn, "viettel", AT, [(1, "1A", 1)])
    assert _status(engine) == {1: "delivered", 2: "sent"}
