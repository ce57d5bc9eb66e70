"""An opt-out, from any face or gateway, cancels in the same transaction that person's messages of
live blasts no worker has claimed yet, with the reason in the delivery log."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, update

from dispatcher import blasts, db
from dispatcher.config import DatabaseSettings, load_settings
from dispatcher.dispatch import Worker
from dispatcher.gateways.base import OptedOutError
from dispatcher.gateways.fake import FakeGateway
from dispatcher.inbound import receive
from dispatcher.models import audit_log, deliveries, receipt_waits, subscribers
from dispatcher.segments import SegmentSpec, resolve
from dispatcher.subscribers import set_opt_out
from tests.clock import Clock
from tests.conftest import Cli
from tests.world import catalogue, people

ALERTS = ["gia-danh-cong-an-goi-video", "dau-tu-tien-ao-ngoai-hoi"]


def _blast(engine: Engine, regions, now: datetime, alert: str, start: bool = True) -> int:
    """A blast of `alert` to Đà Nẵng, approved (and started at `now`, its messages queued, when `start`)."""
    settings = load_settings(None, {"CANHBAO_ROUTES": '{"default": ["fake"]}'})
    segment = resolve(SegmentSpec(provinces=("Đà Nẵng",)), regions)
    with engine.begin() as conn:
        blast_id, _ = blasts.create(conn, blasts.BlastRequest(alert, segment), "liaison", settings, regions, now)
        blasts.approve(conn, blast_id, "chief", now)
        if start:
            assert blast_id in blasts.start_due(conn, settings, now)
    return blast_id


@pytest.fixture
def world(engine: Engine, regions, now: datetime, tmp_path: Path) -> tuple[Engine, str, int]:
    """Six people, two running blasts to all of them; (engine, one person's number, their id)."""
    people(engine, regions, now, tmp_path, 6, seed=2)
    catalogue(engine, now, ALERTS)
    for alert in ALERTS:
        _blast(engine, regions, now, alert)
    with engine.connect() as conn:
        msisdn, subscriber_id = conn.execute(select(subscribers.c.msisdn, subscribers.c.id).limit(1)).one()
    return engine, msisdn, subscriber_id


def _states(engine: Engine) -> dict[tuple[int, str], tuple[str, str | None, str | None]]:
    """(blast, number) → (state, error code, error) of every delivery."""
    d = deliveries.c
    with engine.connect() as conn:
        rows = conn.execute(select(d.blast_id, d.msisdn, d.status, d.error_code, d.error)).all()
    return {(blast_id, msisdn): tuple(rest) for blast_id, msisdn, *rest in rows}


def test_an_inbound_opt_out_cancels_that_persons_queued_messages_of_every_live_blast(world, now) -> None:
    """Their messages of both running blasts are cancelled with the reason; nobody else's message changes."""
    engine, msisdn, _ = world
    before = _states(engine)
    with engine.begin() as conn:
        receive(conn, msisdn, "HUY", "viettel", now)
    after = _states(engine)
    theirs = {key for key in before if key[1] == msisdn}
    assert len(theirs) == 2 and {after[key] for key in theirs} == {
        ("cancelled", "OPTED-OUT", "person opted out: inbound via viettel")
    }
    assert {key: after[key] for key in before if key not in theirs} == {k: before[k] for k in before if k not in theirs}


def test_the_audit_of_an_opt_out_counts_the_messages_it_cancelled(world, now) -> None:
    """The audit entry says how many queued messages the refusal cancelled."""
    engine, msisdn, _ = world
    with engine.begin() as conn:
        set_opt_out(conn, msisdn, True, now, "operator")
        entry = conn.execute(select(audit_log.c.detail).where(audit_log.c.action == "subscriber.opt_out")).scalar()
    assert entry == {"outcome": "subscriber", "cancelled_messages": 2}


def test_a_claimed_or_sent_message_is_not_cancelled(world, now) -> None:
    """Only messages still waiting to be claimed are cancelled: one in flight and one sent keep their state."""
    engine, msisdn, _ = world
    with engine.begin() as conn:
        ids = conn.execute(select(deliveries.c.id).where(deliveries.c.msisdn == msisdn)).scalars().all()
        for delivery_id, state in zip(sorted(ids), ("sending", "sent"), strict=True):
            conn.execute(update(deliveries).where(deliveries.c.id == delivery_id).values(status=state))
        set_opt_out(conn, msisdn, True, now, "operator")
    assert sorted(s for (_, m), (s, *_) in _states(engine).items() if m == msisdn) == ["sending", "sent"]


def test_an_opt_out_rolled_back_cancels_nothing(world, now) -> None:
    """The cancellation is part of the opt-out's transaction: when it rolls back, the messages stay queued."""
    engine, msisdn, _ = world
    with pytest.raises(RuntimeError), engine.begin() as conn:
        set_opt_out(conn, msisdn, True, now, "operator")
        raise RuntimeError("the request failed after the opt-out")
    assert {s for (_, m), (s, *_) in _states(engine).items() if m == msisdn} == {"queued"}


def test_a_zalo_message_awaiting_its_receipt_does_not_fall_back_to_sms_after_an_opt_out(world, now) -> None:
    """A refusal also ends the wait for a Zalo receipt, so no SMS follows to a person who refused."""
    engine, msisdn, _ = world
    with engine.begin() as conn:
        delivery_id, blast_id = conn.execute(
            select(deliveries.c.id, deliveries.c.blast_id).where(deliveries.c.msisdn == msisdn).limit(1)
        ).one()
        conn.execute(update(deliveries).where(deliveries.c.id == delivery_id).values(status="sent"))
        conn.execute(receipt_waits.insert().values(delivery_id=delivery_id, blast_id=blast_id, due_at=now))
        set_opt_out(conn, msisdn, True, now, "operator")
        assert conn.execute(select(receipt_waits)).first() is None


def test_a_refusal_reported_by_a_gateway_cancels_the_persons_messages_of_a_paused_blast(world, regions, now) -> None:
    """Twilio's 21610 opts the person out as the worker records results: their paused blast's message is cancelled."""
    engine, msisdn, _ = world
    with engine.begin() as conn:
        paused = conn.execute(select(deliveries.c.blast_id).order_by(deliveries.c.blast_id.desc())).scalar()
        blasts.pause(conn, paused, "operator", now)
    twilio = FakeGateway("fake")
    twilio.fail_when(lambda m: m.msisdn == msisdn, OptedOutError("Attempt to send to unsubscribed recipient", "21610"))
    settings = load_settings(None, {"CANHBAO_ROUTES": '{"default": ["fake"]}'})
    asyncio.run(Worker(engine, {"fake": twilio}, settings, regions, Clock(now), "w1").run(until_idle=True))
    assert _states(engine)[(paused, msisdn)] == ("cancelled", "OPTED-OUT", "person opted out: gateway:fake")


def test_subscribers_opt_out_on_the_command_line_shows_the_cancellation_in_the_log(cli: Cli, regions, now) -> None:
    """`subscribers opt-out` cancels the person's queued message; `canhbao log` shows it cancelled with its reason."""
    engine = db.make_engine(DatabaseSettings(url=f"sqlite:///{cli.root / 'canhbao.db'}"))
    people(engine, regions, now, cli.root, 3, seed=2)
    catalogue(engine, now, ALERTS[:1])
    _blast(engine, regions, now - timedelta(minutes=1), ALERTS[0])
    with engine.connect() as conn:
        msisdn = conn.execute(select(subscribers.c.msisdn).limit(1)).scalar_one()
    assert cli("subscribers", "opt-out", msisdn)[0] == 0
    code, rows = cli.json("log", "--status", "cancelled")
    assert code == 0 and [(r["status"], r["error_code"], r["error"]) for r in rows] == [
        ("cancelled", "OPTED-OUT", "person opted out: tester")
    ]
    code, out, _ = cli("log", "--status", "cancelled")
    assert code == 0 and "OPTED-OUT" in out
