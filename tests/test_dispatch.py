"""The dispatch loop: every message sent exactly once, retried or failed by the gateway's word."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, event, func, select, text

from dispatcher import blasts, db, queue
from dispatcher.config import Settings, load_settings
from dispatcher.db import executemany
from dispatcher.dispatch import RELEASE_SQL, Unrecorded, Worker
from dispatcher.domain import BlastState
from dispatcher.gateways.base import (
    DeliveryReport,
    OutgoingMessage,
    PermanentError,
    ReportStatus,
    TemporaryError,
    ThrottledError,
)
from dispatcher.gateways.fake import FakeGateway
from dispatcher.gateways.simulator import SimulatorGateway
from dispatcher.gateways.smpp import id_forms
from dispatcher.models import (
    claims,
    deliveries,
    delivery_attempts,
    delivery_queue,
    delivery_reports,
    rate_buckets,
    rate_chunks,
    receipt_waits,
    subscribers,
)
from dispatcher.queue import apply_reports
from dispatcher.segments import SegmentSpec, resolve
from dispatcher.smstext import Encoding
from tests.clock import Clock
from tests.world import StampingGateway, busiest_second, catalogue, people

ALERT = "gia-danh-cong-an-goi-video"


async def _no_sleep(_seconds: float) -> None:
    """Time is the test's clock: nothing waits for real."""


def _settings(**environ: str) -> Settings:
    # Reports are the test's to deliver: --until-idle must not wait for them in real time.
    base = {"CANHBAO_ROUTES": '{"default": ["fake"]}', "CANHBAO_DISPATCH__REPORT_WAIT_SECONDS": "0"}
    return load_settings(None, {**base, **environ})


def _populate(engine: Engine, regions, now: datetime, tmp_path: Path, count: int) -> None:
    people(engine, regions, now, tmp_path, count, seed=2)
    catalogue(engine, now, [ALERT])


def _blast(engine: Engine, regions, settings: Settings, now: datetime, **request) -> int:
    segment = resolve(SegmentSpec(provinces=("Đà Nẵng",)), regions)
    with engine.begin() as conn:
        blast_id, _ = blasts.create(conn, blasts.BlastRequest(ALERT, segment, **request), "liaison", settings,
                                    regions, now)  # fmt: skip
        blasts.approve(conn, blast_id, "chief", now)
    return blast_id


def _counts(engine: Engine, blast_id: int) -> dict[str, int]:
    with engine.connect() as conn:
        return {k: v for k, v in blasts.counts(conn, blast_id).items() if v}


def _state(engine: Engine, blast_id: int) -> str:
    with engine.connect() as conn:
        return blasts.get(conn, blast_id)["state"]


def _claimed(world, regions) -> tuple[int, list, list[int]]:
    """A blast started and one batch of it claimed by the world's worker: (blast id, rows, claim ids)."""
    engine, settings, clock, _, worker = world
    blast_id = _blast(engine, regions, settings, clock())
    with engine.begin() as conn:
        blasts.start_due(conn, settings, clock())
    claimed, claim_ids = worker._claim(clock())
    return blast_id, claimed, claim_ids


@pytest.fixture
def world(engine: Engine, regions, now, tmp_path):
    """300 subscribers in Đà Nẵng, an approved alert, and a fake gateway behind every carrier."""
    _populate(engine, regions, now, tmp_path, 300)
    settings = _settings()
    clock = Clock(now)
    fake = FakeGateway()
    worker = Worker(engine, {"fake": fake}, settings, regions, clock, "w1", sleep=_no_sleep)
    return engine, settings, clock, fake, worker


def test_every_recipient_gets_one_message_and_the_blast_completes(world, regions) -> None:
    """A run sends each delivery once, records it sent, and completes the blast."""
    engine, settings, clock, fake, worker = world
    blast_id = _blast(engine, regions, settings, clock())
    asyncio.run(worker.run(until_idle=True))
    counts = _counts(engine, blast_id)
    assert counts == {"sent": counts["sent"]} and counts["sent"] > 250
    assert len(fake.sent) == counts["sent"] == len({m.delivery_id for m in fake.sent})
    assert _state(engine, blast_id) == BlastState.COMPLETED.value


def test_a_blasts_own_rate_holds_and_its_limit_goes_when_it_completes(engine, regions, now, tmp_path) -> None:
    """--rate 100 on a gateway without a limit: no second above 100, and the finished blast leaves no bucket."""
    _populate(engine, regions, now, tmp_path, 300)
    settings, gateway = _settings(), StampingGateway()
    blast_id = _blast(engine, regions, settings, now, rate=100)
    started = time.monotonic()

    def moving() -> datetime:  # the test's day, at the real pace: the worker sleeps for real
        return now + timedelta(seconds=time.monotonic() - started)

    worker = Worker(engine, {"fake": gateway}, settings, regions, moving, "w1")
    asyncio.run(worker.run(until_idle=True))
    assert _state(engine, blast_id) == BlastState.COMPLETED.value and len(gateway.times) > 250
    assert busiest_second(gateway.times) <= 100
    with engine.connect() as conn:
        assert conn.execute(select(rate_buckets.c.name)).scalars().all() == []
        assert conn.execute(select(rate_chunks.c.id)).all() == []


def test_messages_are_rendered_for_the_recipients_region(world, regions) -> None:
    """{ten_tinh} becomes the recipient's province name, and parts are counted on the real text."""
    engine, settings, clock, fake, worker = world
    _blast(engine, regions, settings, clock())
    asyncio.run(worker.run(until_idle=True))
    message = fake.sent[0]
    assert message.text.startswith("Công an Thành phố Đà Nẵng cảnh báo")
    assert (str(message.encoding), message.parts) == ("UCS-2", 3)


def test_a_temporary_error_is_retried_after_a_backoff(world, regions) -> None:
    """A temporary failure requeues the message for later; once due, it is sent on the next attempt."""
    engine, settings, clock, fake, worker = world
    blast_id = _blast(engine, regions, settings, clock())
    fake.fail_next(5, TemporaryError("link down", "T1"))
    asyncio.run(worker.run(until_idle=True))
    assert _counts(engine, blast_id)["queued"] == 5
    clock.advance(settings.dispatch.backoff_base_seconds * 2)
    asyncio.run(worker.run(until_idle=True))
    assert "queued" not in _counts(engine, blast_id)
    with engine.connect() as conn:
        retried = conn.execute(select(func.count()).where(deliveries.c.attempts == 2)).scalar()
        outcomes = dict(conn.execute(select(delivery_attempts.c.outcome, func.count()).group_by("outcome")).all())
    assert retried == 5 and outcomes["temporary"] == 5


def test_a_throttle_waits_at_least_its_retry_after(world, regions) -> None:
    """A throttled message is not due again before the provider's retry-after."""
    engine, settings, clock, fake, worker = world
    _blast(engine, regions, settings, clock())
    fake.fail_next(1, ThrottledError("slow down", "429", retry_after=7200))
    asyncio.run(worker.run(until_idle=True))
    with engine.connect() as conn:
        due = conn.execute(select(deliveries.c.next_attempt_at).where(deliveries.c.status == "queued")).scalar_one()
    assert blasts.utc(due) >= clock() + timedelta(seconds=7200)


def test_a_permanent_error_fails_at_once(world, regions) -> None:
    """A permanent refusal is never retried."""
    engine, settings, clock, fake, worker = world
    blast_id = _blast(engine, regions, settings, clock())
    fake.fail_next(3, PermanentError("invalid number", "21211"))
    asyncio.run(worker.run(until_idle=True))
    assert _counts(engine, blast_id)["failed"] == 3
    with engine.connect() as conn:
        codes = conn.execute(select(deliveries.c.error_code).where(deliveries.c.status == "failed")).scalars().all()
    assert set(codes) == {"21211"}


def _zalo_world(
    engine: Engine, regions, now: datetime, tmp_path: Path, **environ: str
) -> tuple[Settings, SimulatorGateway, Worker]:
    """300 people; the simulator behind every carrier and behind Zalo, where 30 % of numbers are not.

    By default no delivery reports and no wait for Zalo's receipts; time passes only while the worker waits.
    """
    _populate(engine, regions, now, tmp_path, 300)
    settings = _settings(**{
        "CANHBAO_ROUTES": '{"default": ["simulator"], "zalo": ["simulator"]}',
        "CANHBAO_GATEWAYS__SIMULATOR__NOT_ON_ZALO": "0.3",
        "CANHBAO_GATEWAYS__SIMULATOR__REPORTS": "false",
        "CANHBAO_DISPATCH__RECEIPT_TIMEOUT_SECONDS": "0",
        **environ,
    })  # fmt: skip
    clock = Clock(now)

    async def passing(seconds: float) -> None:
        clock.advance(seconds)

    simulator = SimulatorGateway(settings.gateways.simulator, clock)
    return settings, simulator, Worker(engine, {"simulator": simulator}, settings, regions, clock, "w1",
                                       sleep=passing)  # fmt: skip


def test_zalo_then_sms_sends_by_sms_whoever_zalo_cannot_reach(engine, regions, now, tmp_path) -> None:
    """Not on Zalo (-118) or not taking Zalo at all: one SMS instead; the others one Zalo message; nobody both."""
    settings, simulator, worker = _zalo_world(engine, regions, now, tmp_path)
    blast_id = _blast(engine, regions, settings, now, channel="zalo_then_sms")
    asyncio.run(worker.run(until_idle=True))
    with engine.connect() as conn:
        rows = conn.execute(select(deliveries.c.id, deliveries.c.channel, deliveries.c.status)
                            .where(deliveries.c.blast_id == blast_id)).all()  # fmt: skip
        mask = conn.execute(select(deliveries.c.id, subscribers.c.channel_mask)
                            .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)).all()  # fmt: skip
        fallbacks = conn.execute(select(delivery_attempts.c.delivery_id, delivery_attempts.c.error_code)
                                 .where(delivery_attempts.c.outcome == "fallback")).all()  # fmt: skip
    assert {status for _, _, status in rows} == {"sent"}
    accepted = {m.delivery_id: m.channel for m in simulator.accepted}
    assert len(simulator.accepted) == len(accepted) == len(rows)  # one message each
    refused = {m.delivery_id for m in simulator.attempts if m.channel == "zalo" and m.delivery_id not in
               {a.delivery_id for a in simulator.accepted if a.channel == "zalo"}}  # fmt: skip
    no_zalo = {delivery_id for delivery_id, channels in mask if not channels & 2}
    assert refused and no_zalo and not refused & no_zalo
    assert {i for i, channel in accepted.items() if channel == "sms"} == refused | no_zalo
    assert {i for i, channel, _ in rows if channel == "sms"} == refused | no_zalo
    assert not {m.delivery_id for m in simulator.attempts if m.channel == "zalo"} & no_zalo  # never tried on Zalo
    assert {tuple(f) for f in fallbacks} == {(i, "-118") for i in refused}


def test_a_zalo_blast_does_not_fall_back(engine, regions, now, tmp_path) -> None:
    """Channel `zalo` alone: a number not on Zalo fails, and no SMS goes out."""
    settings, simulator, worker = _zalo_world(engine, regions, now, tmp_path)
    blast_id = _blast(engine, regions, settings, now, channel="zalo")
    asyncio.run(worker.run(until_idle=True))
    counts = _counts(engine, blast_id)
    assert counts["failed"] > 0 and counts["sent"] > 0
    assert {m.channel for m in simulator.attempts} == {"zalo"}
    with engine.connect() as conn:
        codes = set(conn.execute(select(deliveries.c.error_code).where(deliveries.c.status == "failed")).scalars())
    assert codes == {"-118"}


def _sends(simulator: SimulatorGateway) -> dict[int, list[str]]:
    """The channels each delivery was accepted on, in order."""
    sends: dict[int, list[str]] = {}
    for message in simulator.accepted:
        sends.setdefault(message.delivery_id, []).append(message.channel)
    return sends


def _rows(engine: Engine, blast_id: int) -> dict[int, tuple]:
    """id → (status, channel, sent_at) of the blast's deliveries."""
    d = deliveries.c
    with engine.connect() as conn:
        found = conn.execute(select(d.id, d.status, d.channel, d.sent_at).where(d.blast_id == blast_id)).all()
    return {i: (status, channel, blasts.utc(sent_at)) for i, status, channel, sent_at in found}


def _fallbacks(engine: Engine) -> dict[int, tuple[str, str]]:
    """delivery id → (error code, provider id) of each fallback attempt."""
    a = delivery_attempts.c
    with engine.connect() as conn:
        found = conn.execute(select(a.delivery_id, a.error_code, a.provider_id).where(a.outcome == "fallback")).all()
    return {i: (code, provider_id) for i, code, provider_id in found}


def _receipts_run(engine: Engine, regions, now: datetime, tmp_path: Path, **environ: str) -> tuple:
    """A zalo_then_sms blast run to its end with Zalo's receipts on: (blast id, rows, sends, fallbacks)."""
    settings, simulator, worker = _zalo_world(engine, regions, now, tmp_path, **{
        "CANHBAO_GATEWAYS__SIMULATOR__NOT_ON_ZALO": "0", "CANHBAO_GATEWAYS__SIMULATOR__REPORTS": "true",
        "CANHBAO_DISPATCH__REPORT_WAIT_SECONDS": "10", **environ})  # fmt: skip
    blast_id = _blast(engine, regions, settings, now, channel="zalo_then_sms")
    asyncio.run(worker.run(until_idle=True))
    return blast_id, _rows(engine, blast_id), _sends(simulator), _fallbacks(engine)


def test_zalo_then_sms_sends_an_sms_when_zalo_never_confirms(engine, regions, now, tmp_path) -> None:
    """No receipt within receipt_timeout_seconds: one SMS, then; those Zalo confirmed get nothing more."""
    blast_id, rows, sends, fallbacks = _receipts_run(
        engine, regions, now, tmp_path, CANHBAO_GATEWAYS__SIMULATOR__ZALO_UNCONFIRMED="0.3",
        CANHBAO_DISPATCH__RECEIPT_TIMEOUT_SECONDS="30",
    )  # fmt: skip
    unconfirmed = {i for i, channels in sends.items() if channels == ["zalo", "sms"]}
    assert unconfirmed and set(fallbacks) == unconfirmed
    assert all(channels in (["zalo"], ["sms"], ["zalo", "sms"]) for channels in sends.values())  # never twice
    assert {code for code, _ in fallbacks.values()} == {"NO-RECEIPT"}
    for i, (status, channel, sent_at) in rows.items():
        if i in unconfirmed:  # the SMS went once the wait was over, and was delivered
            assert (status, channel) == ("delivered", "sms") and sent_at >= now + timedelta(seconds=30)
        else:
            assert status == "delivered"
    assert _state(engine, blast_id) == BlastState.COMPLETED.value
    with engine.connect() as conn:  # what `blast status` shows
        shown = blasts.channels(conn, blasts.get(conn, blast_id))
    zalo = sum(1 for channels in sends.values() if channels == ["zalo"])
    assert shown == {"by_channel": {"zalo": zalo, "sms": len(rows) - zalo}, "awaiting_receipt": 0}
    with engine.begin() as conn:  # Zalo's receipt, late after all: the row is the SMS's now
        at = now + timedelta(hours=1)
        late = [DeliveryReport(p, ReportStatus.UNDELIVERABLE, at, gateway="fake") for _, p in fallbacks.values()]
        assert apply_reports(conn, late) == 0
        assert conn.execute(select(func.count()).select_from(receipt_waits)).scalar() == 0


def test_zalo_then_sms_sends_an_sms_at_once_when_zalo_reports_a_failure(engine, regions, now, tmp_path) -> None:
    """A Zalo message reported undelivered goes by SMS at the next look, long before the wait is over."""
    blast_id, rows, sends, fallbacks = _receipts_run(
        engine, regions, now, tmp_path, CANHBAO_GATEWAYS__SIMULATOR__UNDELIVERABLE="1",
        CANHBAO_DISPATCH__RECEIPT_TIMEOUT_SECONDS="3600",
    )  # fmt: skip
    tried_on_zalo = {i for i, channels in sends.items() if channels[0] == "zalo"}
    assert tried_on_zalo and set(fallbacks) == tried_on_zalo
    assert {code for code, _ in fallbacks.values()} == {"SIM-UNDELIV"}
    assert all(sends[i] == ["zalo", "sms"] for i in tried_on_zalo)
    # The SMS is reported undeliverable too: that is final, there is no third channel.
    assert {(status, channel) for status, channel, _ in rows.values()} == {("undeliverable", "sms")}
    assert max(sent_at for _, _, sent_at in rows.values()) < now + timedelta(seconds=60)
    assert _state(engine, blast_id) == BlastState.COMPLETED.value


def test_a_cancelled_blast_sends_no_sms_for_unconfirmed_zalo_messages(engine, regions, now, tmp_path) -> None:
    """Cancelling ends the waits: Zalo messages never confirmed get no SMS after the cancel."""
    settings, simulator, worker = _zalo_world(
        engine, regions, now, tmp_path, CANHBAO_GATEWAYS__SIMULATOR__NOT_ON_ZALO="0",
        CANHBAO_DISPATCH__RECEIPT_TIMEOUT_SECONDS="30",
    )  # fmt: skip
    blast_id = _blast(engine, regions, settings, now, channel="zalo_then_sms")
    while asyncio.run(worker.tick()):
        pass
    with engine.connect() as conn:
        waiting = conn.execute(select(func.count()).select_from(receipt_waits)).scalar()
        assert waiting > 0 and blasts.channels(conn, blasts.get(conn, blast_id))["awaiting_receipt"] == waiting
    with engine.begin() as conn:
        blasts.cancel(conn, blast_id, "liaison", now)
    worker.clock.advance(60)
    asyncio.run(worker.run(until_idle=True))
    assert all(len(channels) == 1 for channels in _sends(simulator).values())
    assert _fallbacks(engine) == {}
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(receipt_waits)).scalar() == 0
    assert _state(engine, blast_id) == BlastState.CANCELLED.value


def test_retries_stop_at_the_configured_attempts(world, regions) -> None:
    """A message that keeps failing temporarily fails after max_attempts."""
    engine, settings, clock, fake, worker = world
    blast_id = _blast(engine, regions, settings, clock())
    fake.fail_when(lambda m: m.delivery_id == 1, TemporaryError("always down"))
    for _ in range(settings.dispatch.max_attempts + 1):
        asyncio.run(worker.run(until_idle=True))
        clock.advance(settings.dispatch.backoff_max_seconds * 2)
    with engine.connect() as conn:
        row = conn.execute(select(deliveries.c.status, deliveries.c.attempts).where(deliveries.c.id == 1)).one()
    assert tuple(row) == ("failed", settings.dispatch.max_attempts)
    assert _state(engine, blast_id) == BlastState.COMPLETED.value


def test_a_message_past_not_after_expires_and_is_never_sent(world, regions) -> None:
    """What is still queued when the blast's not_after passes becomes expired, not sent late."""
    engine, settings, clock, fake, worker = world
    blast_id = _blast(engine, regions, settings, clock(), not_after=clock() + timedelta(hours=1))
    fake.fail_next(10, TemporaryError("link down"))
    asyncio.run(worker.run(until_idle=True))
    clock.advance(2 * 3600)
    sent_before = len(fake.sent)
    asyncio.run(worker.run(until_idle=True))
    assert _counts(engine, blast_id)["expired"] == 10
    assert len(fake.sent) == sent_before


def test_delivery_reports_move_forward_only(world, regions) -> None:
    """A report moves sent → delivered; a later or duplicate report never changes a final state."""
    engine, settings, clock, fake, worker = world
    blast_id = _blast(engine, regions, settings, clock())
    asyncio.run(worker.run(until_idle=True))
    first, second = fake.sent[0].delivery_id, fake.sent[1].delivery_id
    with engine.begin() as conn:
        reports = [
            DeliveryReport(f"fake-{first}", ReportStatus.DELIVERED, clock(), gateway="fake"),
            DeliveryReport(f"fake-{first}", ReportStatus.UNDELIVERABLE, clock(), gateway="fake"),  # late, out of order
            DeliveryReport(f"fake-{second}", ReportStatus.UNDELIVERABLE, clock(), gateway="fake"),
            DeliveryReport("fake-unknown-id", ReportStatus.DELIVERED, clock(), gateway="fake"),
        ]
        for report in reports:
            apply_reports(conn, [report])
    with engine.connect() as conn:
        states = dict(conn.execute(select(deliveries.c.id, deliveries.c.status).where(
            deliveries.c.id.in_([first, second]))).all())  # fmt: skip
    assert states == {first: "delivered", second: "undeliverable"}
    assert _counts(engine, blast_id)["delivered"] == 1


def test_simulator_reports_arrive_later_and_out_of_order(engine, regions, now, tmp_path) -> None:
    """With the simulator, reports come after the send and turn sent rows into delivered or undeliverable."""
    _populate(engine, regions, now, tmp_path, 200)
    settings = _settings(CANHBAO_ROUTES='{"default": ["simulator"]}', CANHBAO_GATEWAYS__SIMULATOR__UNDELIVERABLE="0.2")
    clock = Clock(now)
    simulator = SimulatorGateway(settings.gateways.simulator, clock=clock)
    worker = Worker(engine, {"simulator": simulator}, settings, regions, clock, "w1", sleep=_no_sleep)
    blast_id = _blast(engine, regions, settings, now)
    asyncio.run(worker.run(until_idle=True))
    assert set(_counts(engine, blast_id)) == {"sent"}
    clock.advance(5)
    asyncio.run(worker.tick())
    counts = _counts(engine, blast_id)
    assert set(counts) == {"delivered", "undeliverable"}
    assert 0.1 < counts["undeliverable"] / sum(counts.values()) < 0.3


@pytest.mark.postgres
def test_a_claim_its_result_and_its_report_rewrite_each_row_on_its_own_page(pg_engine, regions, now, tmp_path) -> None:
    """On PostgreSQL every update of the sending path is HOT: each delivery stays on the page it was written to.

    A version that has to go to another page adds an entry to every index of deliveries; the
    fill factor leaves room for the claimed, sent and reported versions (migration 0009).
    """
    engine = pg_engine
    with engine.begin() as conn:  # a vacuum's snapshot would keep the old versions from being pruned mid-test
        conn.exec_driver_sql("ALTER TABLE deliveries SET (autovacuum_enabled = false)")
    _populate(engine, regions, now, tmp_path, 400)
    settings = _settings(CANHBAO_ROUTES='{"default": ["simulator"]}', CANHBAO_GATEWAYS__SIMULATOR__UNDELIVERABLE="0.2")
    clock = Clock(now)
    simulator = SimulatorGateway(settings.gateways.simulator, clock=clock)
    # As long a name as a worker on a real host gets (host:pid).
    worker = Worker(engine, {"simulator": simulator}, settings, regions, clock, "canhbao-worker-01:4194304",
                    sleep=_no_sleep)  # fmt: skip
    blast_id = _blast(engine, regions, settings, now)
    with engine.begin() as conn:
        blasts.start_due(conn, settings, now)
    pages = "SELECT id, (ctid::text::point)[0] FROM deliveries WHERE blast_id = :b ORDER BY id"
    with engine.connect() as conn:
        written = conn.execute(text(pages), {"b": blast_id}).all()
    asyncio.run(worker.run(until_idle=True))
    clock.advance(5)
    asyncio.run(worker.tick())
    with engine.connect() as conn:
        assert conn.execute(text(pages), {"b": blast_id}).all() == written
    assert set(_counts(engine, blast_id)) == {"delivered", "undeliverable"} and len(written) > 350


def test_an_expired_lease_makes_the_message_unknown_not_resent(world, regions) -> None:
    """Rows a dead worker left 'sending' become 'unknown' and are sent again only on request."""
    engine, settings, clock, fake, worker = world
    fake.confirms = False  # a gateway that cannot tell what it accepted
    blast_id, claimed, _ = _claimed(world, regions)  # a worker that claims, then dies before sending
    clock.advance(settings.dispatch.lease_seconds + 1)
    asyncio.run(worker.run(until_idle=True))
    assert _counts(engine, blast_id)["unknown"] == len(claimed)
    assert not {m.delivery_id for m in fake.sent} & {row.id for row in claimed}
    with engine.begin() as conn:
        assert blasts.resend_unknown(conn, blast_id, "operator", clock()) == len(claimed)
    asyncio.run(worker.run(until_idle=True))
    assert "unknown" not in _counts(engine, blast_id)
    assert len(fake.sent) == len({m.delivery_id for m in fake.sent})


def test_a_receipt_that_came_while_sending_settles_the_message_its_dead_worker_left(world, regions) -> None:
    """A receipt naming our delivery (Zalo's tracking_id) that came while it was `sending` waits; when the worker
    dies and the reaper makes the message `unknown`, the receipt says what became of it."""
    engine, settings, clock, fake, worker = world
    fake.confirms = False
    blast_id, claimed, _ = _claimed(world, regions)  # a worker that claims, hands one over, then dies
    early = DeliveryReport("zalo-msg-1", ReportStatus.DELIVERED, clock(), gateway="fake", delivery_id=claimed[0].id)
    with engine.begin() as conn:
        assert apply_reports(conn, [early]) == 0  # still sending: its provider id is not recorded yet
    clock.advance(settings.dispatch.lease_seconds + 1)
    asyncio.run(worker.run(until_idle=True))
    with engine.connect() as conn:
        status = conn.execute(select(deliveries.c.status).where(deliveries.c.id == claimed[0].id)).scalar_one()
        r = delivery_reports.c
        kept = conn.execute(select(r.delivery_id).where(r.provider_id == "zalo-msg-1")).scalars().all()
    assert status == "delivered" and kept == [claimed[0].id]
    assert _counts(engine, blast_id)["unknown"] == len(claimed) - 1


def test_an_expired_lease_is_settled_by_the_gateways_own_account(world, regions) -> None:
    """A gateway that confirms by our id: what it accepted becomes sent, what it never saw goes again, once."""
    engine, settings, clock, fake, worker = world
    blast_id, claimed, _ = _claimed(world, regions)
    handed = [OutgoingMessage(r.id, r.msisdn, "x", Encoding.GSM7, 1, r.carrier) for r in claimed[: len(claimed) // 2]]
    asyncio.run(fake.send_batch(handed))  # the worker died after handing over half of its batch
    clock.advance(settings.dispatch.lease_seconds + 1)
    asyncio.run(worker.run(until_idle=True))
    counts = _counts(engine, blast_id)
    assert "unknown" not in counts and "sending" not in counts
    assert len(fake.sent) == len({m.delivery_id for m in fake.sent})
    with engine.connect() as conn:
        attempts = dict(conn.execute(select(deliveries.c.id, deliveries.c.attempts)).all())
    assert all(attempts[m.delivery_id] == 1 for m in handed)


def test_a_dead_workers_sms_fallbacks_are_confirmed_by_the_sms_gateway(engine, regions, now, tmp_path) -> None:
    """Zalo and SMS on different gateways: a fallback SMS left `sending` is asked of the SMS gateway, not Zalo's."""
    settings, simulator, worker = _zalo_world(
        engine, regions, now, tmp_path, CANHBAO_ROUTES='{"default": ["fake"], "zalo": ["simulator"]}',
        CANHBAO_GATEWAYS__SIMULATOR__NOT_ON_ZALO="1",
    )  # fmt: skip
    fake = FakeGateway()
    worker.gateways["fake"] = fake
    blast_id = _blast(engine, regions, settings, now, channel="zalo_then_sms")
    asyncio.run(worker.tick())  # Zalo refuses everyone: they are queued again, for SMS
    claimed, _ = worker._claim(worker.clock())
    assert claimed and {row.channel for row in claimed} == {"sms"}
    handed = [OutgoingMessage(r.id, r.msisdn, "x", Encoding.GSM7, 1, r.carrier) for r in claimed[: len(claimed) // 2]]
    asyncio.run(fake.send_batch(handed))  # the worker died after handing over half of its batch
    worker.clock.advance(settings.dispatch.lease_seconds + 1)
    asyncio.run(worker.run(until_idle=True))
    counts = _counts(engine, blast_id)
    assert "unknown" not in counts and "sending" not in counts
    assert len(fake.sent) == len({m.delivery_id for m in fake.sent}) == sum(counts.values())


def test_an_expired_claim_is_taken_over_by_one_reaper_only(world, regions) -> None:
    """Two workers find the same dead claim: the first takes it over, the second finds nothing to do."""
    engine, settings, clock, fake, worker = world
    _, claimed, claim_ids = _claimed(world, regions)
    clock.advance(settings.dispatch.lease_seconds + 1)
    later = clock() + timedelta(seconds=settings.dispatch.lease_seconds)
    with engine.begin() as conn:
        first = queue.take_expired(conn, "w2", clock(), later)
    with engine.begin() as conn:
        second = queue.take_expired(conn, "w3", clock(), later)
    assert [claim_id for claim_id, _ in first] == claim_ids and second == []
    assert sorted(i for _, ids in first for i in ids) == sorted(row.id for row in claimed)


def test_a_stale_queue_row_sends_nothing_and_is_dropped(world, regions) -> None:
    """A queue row whose delivery left `queued` by another way is skipped by the claim and removed."""
    engine, settings, clock, fake, worker = world
    blast_id = _blast(engine, regions, settings, clock())
    with engine.begin() as conn:
        blasts.start_due(conn, settings, clock())
        first = conn.execute(select(func.min(deliveries.c.id))).scalar_one()
        conn.execute(deliveries.update().where(deliveries.c.id == first).values(status="cancelled"))
    asyncio.run(worker.run(until_idle=True))
    assert first not in {m.delivery_id for m in fake.sent}
    assert _counts(engine, blast_id)["cancelled"] == 1
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(delivery_queue)).scalar_one() == 0
    assert _state(engine, blast_id) == BlastState.COMPLETED.value


def test_a_blast_completes_only_when_no_claim_holds_its_messages(world, regions) -> None:
    """Another worker's batch still in flight keeps the blast running; once recorded, it completes."""
    engine, settings, clock, fake, worker = world
    blast_id = _blast(engine, regions, settings, clock())
    other = Worker(engine, {"fake": fake}, settings, regions, clock, "w2", sleep=_no_sleep)
    with engine.begin() as conn:
        blasts.start_due(conn, settings, clock())
    held, held_claims = other._claim(clock())  # w2 holds a batch, not yet recorded
    asyncio.run(worker.tick())
    asyncio.run(worker.tick())
    assert _state(engine, blast_id) == BlastState.RUNNING.value
    assert not worker.idle()
    batch = asyncio.run(other._dispatch(held, held_claims))
    other._write(Unrecorded([batch]))
    asyncio.run(worker.tick())
    assert _state(engine, blast_id) == BlastState.COMPLETED.value
    assert len(fake.sent) == len({m.delivery_id for m in fake.sent})


def test_provider_ids_of_any_shape_are_recorded_and_found_by_their_reports(world, regions) -> None:
    """Commas, quotes and even the separator of the bulk statements in a gateway's id: reports still match."""
    engine, settings, clock, fake, worker = world
    blast_id, claimed, claim_ids = _claimed(world, regions)
    shapes = [lambda i: f"SM{i:032x}", lambda i: f"{i},'x'{{}}\\", lambda i: f"{i}\x1f{i}"]
    odd = {row.id: shapes[row.id % 3](row.id) for row in claimed}
    with engine.begin() as conn:
        for shape in range(3):  # the bulk statements, and the row-by-row one an id with the separator needs
            sent = [(i, p, 3) for i, p in odd.items() if i % 3 == shape]
            assert queue.record_sent(conn, "fake", clock(), sent) == len(sent)
        queue.drop(conn, claim_ids)
    reports = [DeliveryReport(p, ReportStatus.UNDELIVERABLE if i % 2 == 0 else ReportStatus.DELIVERED, clock(),
                              "E3" if i % 2 == 0 else None, "fake") for i, p in odd.items()]  # fmt: skip
    with engine.begin() as conn:
        for separator in (False, True):
            group = [r for r in reports if ("\x1f" in r.provider_id) is separator]
            assert queue.apply_reports(conn, group) == len(group)
        errors = dict(conn.execute(select(deliveries.c.id, deliveries.c.error_code).where(
            deliveries.c.status == "undeliverable")).all())  # fmt: skip
    assert errors == {i: "E3" for i in odd if i % 2 == 0}
    assert _counts(engine, blast_id)["delivered"] == len([i for i in odd if i % 2])


@pytest.mark.postgres
def test_a_batch_of_reports_reads_the_refs_of_its_own_messages_only(pg_engine: Engine) -> None:
    """On PostgreSQL reports look their provider ids up; they never read every ref of every message ever sent.

    The plan comes from PostgreSQL itself (auto_explain), for the statement `apply_reports` runs.
    As after a blast's start, the statistics are stale: they have not seen the refs.
    """
    engine = pg_engine
    sent, reported = 20_000, 5_000
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE provider_refs SET (autovacuum_enabled = false)")
        conn.exec_driver_sql(
            "INSERT INTO deliveries (id, blast_id, subscriber_id, alert_id, msisdn, carrier, province_code, priority, "
            "status, attempts, next_attempt_at) SELECT g, 1, g, 1, '+84900000000', 'viettel', 48, 0, 'sent', 1, now() "
            f"FROM generate_series(1, {sent}) AS g"
        )
        conn.exec_driver_sql(
            f"INSERT INTO provider_refs SELECT 'fake', 'SM' || g, g FROM generate_series(1, {sent}) AS g"
        )
    plans: list[dict] = []

    def plan(notice) -> None:
        if "plan:" in notice.message_primary:
            plans.append(json.loads(notice.message_primary.split("plan:", 1)[1])["Plan"])

    at = datetime(2026, 12, 1, 3, tzinfo=UTC)
    with engine.begin() as conn:
        conn.connection.driver_connection.add_notice_handler(plan)
        conn.exec_driver_sql(
            "LOAD 'auto_explain'; SET LOCAL auto_explain.log_min_duration = 0; "
            "SET LOCAL auto_explain.log_analyze = on; SET LOCAL auto_explain.log_format = 'json'; "
            "SET LOCAL auto_explain.log_level = 'notice'"
        )
        reports = [DeliveryReport(f"SM{i}", ReportStatus.DELIVERED, at, gateway="fake") for i in range(1, reported + 1)]
        assert apply_reports(conn, reports) == reported
    refs_read = [node["Actual Rows"] for node in _nodes(plans[-1])
                 if "provider_refs" in f"{node.get('Relation Name')} {node.get('Index Name')}"]  # fmt: skip
    assert refs_read and max(refs_read) <= reported


def _nodes(node: dict) -> Iterator[dict]:
    """A plan node and every node below it."""
    yield node
    for child in node.get("Plans", []):
        yield from _nodes(child)


def test_a_provider_id_given_again_goes_to_the_newest_message(world, regions) -> None:
    """A gateway whose counter restarted hands out an old id again: its report is for the newest message."""
    engine, settings, clock, fake, worker = world
    blast_id, claimed, claim_ids = _claimed(world, regions)
    old, new, *rest = (row.id for row in claimed)
    with engine.begin() as conn:
        assert queue.record_sent(conn, "fake", clock(), [(old, "42", 1)]) == 1
        assert queue.record_sent(conn, "fake", clock(), [(new, "42", 1)] + [(i, f"r{i}", 1) for i in rest]) == len(
            claimed) - 1  # fmt: skip
        queue.drop(conn, claim_ids)
    with engine.begin() as conn:
        assert queue.apply_reports(conn, [DeliveryReport("42", ReportStatus.DELIVERED, clock(), None, "fake")]) == 1
        delivered = conn.execute(select(deliveries.c.id).where(deliveries.c.status == "delivered")).scalars().all()
    assert delivered == [new]
    assert _counts(engine, blast_id) == {"sent": len(claimed) - 1, "delivered": 1}


def test_a_receipt_after_a_restart_finds_its_message_by_another_spelling_of_its_id(world, regions) -> None:
    """A one-part message the SMSC answered as hex 1A2B, its receipt (decimal 6699) come after the gateway forgot it."""
    engine, settings, clock, fake, worker = world
    blast_id, claimed, claim_ids = _claimed(world, regions)
    first, *rest = (row.id for row in claimed)
    with engine.begin() as conn:
        queue.record_sent(conn, "fake", clock(), [(first, "1A2B", 1)] + [(i, f"r{i}", 1) for i in rest])
        queue.drop(conn, claim_ids)
    receipt = DeliveryReport("6699", ReportStatus.DELIVERED, clock(), None, "fake", "id:6699 stat:DELIVRD",
                             part=True, aliases=tuple(id_forms("6699")))  # as the SMPP gateway hands it on  # fmt: skip
    with engine.begin() as conn:
        assert queue.apply_reports(conn, [receipt]) == 1
        delivered = conn.execute(select(deliveries.c.id).where(deliveries.c.status == "delivered")).scalars().all()
    assert delivered == [first]


def test_a_paused_blast_sends_nothing_until_resumed(world, regions) -> None:
    """Pause holds every queued message; resume lets them go."""
    engine, settings, clock, fake, worker = world
    blast_id = _blast(engine, regions, settings, clock())
    with engine.begin() as conn:
        blasts.start_due(conn, settings, clock())
        blasts.pause(conn, blast_id, "operator", clock())
    asyncio.run(worker.run(until_idle=True))
    assert fake.sent == []
    with engine.begin() as conn:
        blasts.resume(conn, blast_id, "operator", clock())
    asyncio.run(worker.run(until_idle=True))
    assert _state(engine, blast_id) == BlastState.COMPLETED.value and len(fake.sent) > 0


def test_rows_put_back_behind_the_last_claim_are_still_sent(world, regions) -> None:
    """Claims go on past the last row taken; what returns behind that place goes once the queue runs short."""
    engine, _, clock, fake, _ = world
    settings = _settings(CANHBAO_DISPATCH__BATCH_SIZE="40")
    worker = Worker(engine, {"fake": fake}, settings, regions, clock, "w1", sleep=_no_sleep)
    blast_id, claimed, claim_ids = _claimed((engine, settings, clock, fake, worker), regions)
    assert worker._after  # the next claim starts past these rows
    with engine.begin() as conn:  # a stop hands none of them over: back on the queue, behind that place
        executemany(conn, RELEASE_SQL, [{"i": r.id, "t": db.driver_time(conn.dialect.name, clock())} for r in claimed])
        queue.enqueue_ids(conn, [r.id for r in claimed])
        queue.drop(conn, claim_ids)
    asyncio.run(worker.run(until_idle=True))
    assert {r.id for r in claimed} <= {m.delivery_id for m in fake.sent}
    assert len(fake.sent) == len({m.delivery_id for m in fake.sent})
    assert _state(engine, blast_id) == BlastState.COMPLETED.value


def test_a_cancelled_blast_never_sends_what_was_queued(world, regions) -> None:
    """Cancel marks queued messages cancelled; the worker sends none of them."""
    engine, settings, clock, fake, worker = world
    blast_id = _blast(engine, regions, settings, clock())
    with engine.begin() as conn:
        blasts.start_due(conn, settings, clock())
        blasts.cancel(conn, blast_id, "operator", clock())
    asyncio.run(worker.run(until_idle=True))
    assert fake.sent == [] and set(_counts(engine, blast_id)) == {"cancelled"}


def test_a_blast_whose_time_has_not_come_waits(world, regions) -> None:
    """A blast scheduled for later is not started by an earlier tick."""
    engine, settings, clock, fake, worker = world
    blast_id = _blast(engine, regions, settings, clock(), start_at=clock() + timedelta(hours=2))
    asyncio.run(worker.run(until_idle=True))
    assert _state(engine, blast_id) == BlastState.SCHEDULED.value and fake.sent == []
    clock.advance(2 * 3600)
    asyncio.run(worker.run(until_idle=True))
    assert _state(engine, blast_id) == BlastState.COMPLETED.value


# -- a batch recorded while the next one goes out -------------------------------------------


class CountingGateway(FakeGateway):
    """Counts the batches it was given; with `stop`, sets it as the second batch goes out."""

    def __init__(self, stop: asyncio.Event | None = None) -> None:
        super().__init__()
        self.stop, self.batches = stop, 0

    async def send_batch(self, messages):
        self.batches += 1
        if self.stop is not None and self.batches == 2:
            self.stop.set()
        return await super().send_batch(messages)


def _pipelined(engine, regions, now, tmp_path, gateway: FakeGateway) -> tuple[Worker, int]:
    """300 people, batches of 100, a worker sending through `gateway`; (the worker, the blast)."""
    _populate(engine, regions, now, tmp_path, 300)
    settings = _settings(CANHBAO_DISPATCH__BATCH_SIZE="100")
    worker = Worker(engine, {"fake": gateway}, settings, regions, Clock(now), "w1", sleep=_no_sleep)
    return worker, _blast(engine, regions, settings, now)


def test_a_batch_is_recorded_while_the_next_one_goes_out(engine, regions, now, tmp_path) -> None:
    """A batch's record, on a thread of its own, stays open until the next batch went out; the run ends all recorded."""
    gateway = CountingGateway()
    worker, blast_id = _pipelined(engine, regions, now, tmp_path, gateway)
    seen: list[int] = []  # batches given to the gateway when each record on a thread committed

    def marked(conn, _cursor, statement, *_args) -> None:
        if "INSERT INTO provider_refs" in statement:  # recording what the gateway took
            conn.info["records"] = True

    def committing(conn) -> None:
        if conn.info.pop("records", False) and threading.current_thread() is not threading.main_thread():
            deadline = time.monotonic() + 10
            while gateway.batches <= len(seen) + 1 and time.monotonic() < deadline:
                time.sleep(0.005)  # the loop goes on meanwhile: the next batch goes out
            seen.append(gateway.batches)

    event.listen(engine, "before_cursor_execute", marked)
    event.listen(engine, "commit", committing)
    try:
        asyncio.run(worker.run(until_idle=True))
    finally:
        event.remove(engine, "before_cursor_execute", marked)
        event.remove(engine, "commit", committing)
    assert seen and all(batches > i + 1 for i, batches in enumerate(seen))
    counts = _counts(engine, blast_id)
    assert counts == {"sent": counts["sent"]} and counts["sent"] > 250
    assert _state(engine, blast_id) == BlastState.COMPLETED.value


def test_a_stop_records_the_batch_that_went_out_before_the_run_ends(engine, regions, now, tmp_path) -> None:
    """Stopped with a batch sent and its record not yet begun: the run records it before it returns."""
    stop = asyncio.Event()
    worker, blast_id = _pipelined(engine, regions, now, tmp_path, CountingGateway(stop))
    asyncio.run(worker.run(stop=stop))
    counts = _counts(engine, blast_id)
    assert counts["sent"] == len(worker.gateways["fake"].sent) == 200 and "sending" not in counts
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(claims)).scalar_one() == 0


def test_a_worker_dead_with_a_batch_unrecorded_leaves_it_to_the_reaper(world, regions) -> None:
    """A batch sent and never recorded (its worker died): the reaper settles it from the gateway's account, once."""
    engine, settings, clock, fake, worker = world
    blast_id = _blast(engine, regions, settings, clock())
    assert asyncio.run(worker._step(pipelined=True))  # sent; its record waits for the next step, which never comes
    handed = {m.delivery_id for m in fake.sent}
    assert _counts(engine, blast_id)["sending"] == len(handed)
    clock.advance(settings.dispatch.lease_seconds + 1)
    other = Worker(engine, {"fake": fake}, settings, regions, clock, "w2", sleep=_no_sleep)
    asyncio.run(other.run(until_idle=True))
    counts = _counts(engine, blast_id)
    assert set(counts) == {"sent"} and len(fake.sent) == len({m.delivery_id for m in fake.sent}) == counts["sent"]


# -- a real process killed mid-blast ------------------------------------------------------


def _cli_env(tmp_path: Path, database_url: str, record: Path, lease: str) -> dict[str, str]:
    return {
        **os.environ,
        "CANHBAO_DATABASE__URL": database_url,
        "CANHBAO_ROUTES": '{"default": ["simulator"]}',
        "CANHBAO_GATEWAYS__SIMULATOR__LATENCY_MS": "20",
        "CANHBAO_GATEWAYS__SIMULATOR__CONCURRENCY": "50",
        "CANHBAO_GATEWAYS__SIMULATOR__RECORD_PATH": str(record),
        "CANHBAO_DISPATCH__BATCH_SIZE": "100",
        "CANHBAO_DISPATCH__LEASE_SECONDS": lease,
        "CANHBAO_LOGGING__FORMAT": "json",
        # These run on the real clock: quiet hours would hold everything after 22:00 in Hà Nội.
        "CANHBAO_POLICY__QUIET_HOURS": '{"sms": "", "zalo": ""}',
    }


def test_sigkill_mid_blast_then_restart_sends_each_message_at_most_once(engine, regions, now, tmp_path) -> None:
    """A worker killed with SIGKILL and restarted: no duplicate, no loss, every row in one state."""
    _populate(engine, regions, now, tmp_path, 3000)
    blast_id = _blast(engine, regions, _settings(), datetime.now(now.tzinfo))
    url = engine.url.render_as_string(hide_password=False)
    record = tmp_path / "simulator-record.jsonl"
    env = _cli_env(tmp_path, url, record, lease="1")
    command = [sys.executable, "-m", "dispatcher", "worker"]
    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not record.exists() or record.stat().st_size < 20_000):
        time.sleep(0.05)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    time.sleep(1.2)  # let the dead worker's leases run out
    subprocess.run(
        [*command, "--until-idle"], env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )

    seen = [json.loads(line)["id"] for line in record.read_text().splitlines() if line.endswith("}")]  # not torn
    assert len(seen) == len(set(seen)), "the simulator accepted a message twice"
    with engine.connect() as conn:
        rows = dict(conn.execute(select(deliveries.c.id, deliveries.c.status).where(
            deliveries.c.blast_id == blast_id)).all())  # fmt: skip
    went = ("sent", "delivered", "undeliverable")
    assert all(status in went for status in rows.values())
    sent = {i for i, s in rows.items() if s in went}
    assert sent == set(seen), "a row says sent but the carrier never saw it, or the carrier saw it and it was lost"
    # The simulator confirms by our id what the dead worker had handed over: nothing is left unknown.
    assert "unknown" not in rows.values()


def test_the_worker_waits_out_a_locked_database(sqlite_engine, regions, now, tmp_path) -> None:
    """SQLite locked by another writer for two seconds: the worker waits, then finishes the blast."""
    _populate(sqlite_engine, regions, now, tmp_path, 200)
    blast_id = _blast(sqlite_engine, regions, _settings(), datetime.now(now.tzinfo))
    url = sqlite_engine.url.render_as_string(hide_password=False)
    env = _cli_env(tmp_path, url, tmp_path / "record.jsonl", lease="60")
    with sqlite_engine.begin() as blocker:
        blocker.exec_driver_sql("SELECT 1")  # the engine begins with BEGIN IMMEDIATE: the write lock is held
        worker = subprocess.Popen([sys.executable, "-m", "dispatcher", "worker", "--until-idle"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
        time.sleep(2)
        assert worker.poll() is None, "the worker gave up while the database was locked"
    _, stderr = worker.communicate(timeout=60)
    assert worker.returncode == 0, stderr
    assert set(_counts(sqlite_engine, blast_id)) <= {"sent", "delivered", "undeliverable"}
