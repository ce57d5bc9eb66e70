"""Failover: a gateway that keeps failing is taken out for a cool-down, the next of its route carries
the messages, and when every gateway is out the messages wait; the circuit lives in the database."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from dispatcher import blasts, health
from dispatcher.config import GatewayLimits, Settings, load_settings
from dispatcher.dispatch import Worker
from dispatcher.gateways.base import GatewayDisabledError, Outcome, OutgoingMessage, TemporaryError
from dispatcher.gateways.fake import FakeGateway
from dispatcher.health import CircuitState
from dispatcher.models import deliveries, delivery_attempts
from dispatcher.segments import SegmentSpec, resolve
from dispatcher.smstext import Encoding
from tests.clock import Clock
from tests.world import catalogue, people

ALERT = "gia-danh-cong-an-goi-video"
COOLDOWN = 600


async def _no_sleep(_seconds: float) -> None:
    """Time is the test's clock: nothing waits for real."""


def _settings(route: Sequence[str] = ("primary", "backup")) -> Settings:
    """Two named gateways (their kind only matters for the config: the test hands in fakes) on one route."""
    limits = {"kind": "simulator", "circuit_cooldown_seconds": COOLDOWN, "circuit_probe_messages": 10}
    return load_settings(None, {
        "CANHBAO_GATEWAYS": f'{{"primary": {_json(limits)}, "backup": {_json(limits)}}}',
        "CANHBAO_ROUTES": f'{{"default": {list(route)!r}}}'.replace("'", '"'),
        "CANHBAO_DISPATCH__REPORT_WAIT_SECONDS": "0",
    })  # fmt: skip


def _json(value: dict) -> str:
    return repr(value).replace("'", '"')


class RefusingGateway(FakeGateway):
    """A gateway whose link cannot be made: every batch raises, as an SMPP bind refused would."""

    async def send_batch(self, messages: Sequence[OutgoingMessage]) -> list[Outcome]:
        """Refuse the whole batch."""
        self.sent.extend(messages)
        raise TemporaryError("bind refused", "ESME_RBINDFAIL")


@pytest.fixture
def failover(engine: Engine, regions, now: datetime, tmp_path: Path):
    """300 people, an approved blast to them, a primary that fails everything and a healthy backup."""
    people(engine, regions, now, tmp_path, 300, seed=2)
    catalogue(engine, now, [ALERT])
    settings, clock = _settings(), Clock(now)
    primary, backup = FakeGateway("primary"), FakeGateway("backup")
    primary.fail_when(lambda m: True, TemporaryError("link down", "T1"))
    worker = Worker(engine, {"primary": primary, "backup": backup}, settings, regions, clock, "w1", sleep=_no_sleep)
    blast_id = _blast(engine, regions, settings, now)
    return engine, clock, primary, backup, worker, blast_id


def _blast(engine: Engine, regions, settings: Settings, now: datetime) -> int:
    segment = resolve(SegmentSpec(provinces=("Đà Nẵng",)), regions)
    with engine.begin() as conn:
        blast_id, _ = blasts.create(conn, blasts.BlastRequest(ALERT, segment), "liaison", settings, regions, now)
        blasts.approve(conn, blast_id, "chief", now)
    return blast_id


def _run(worker: Worker) -> None:
    asyncio.run(worker.run(until_idle=True))


def _health(engine: Engine, name: str) -> health.Health:
    with engine.connect() as conn:
        return health.load(conn)[name]


def _counts(engine: Engine, blast_id: int) -> dict[str, int]:
    with engine.connect() as conn:
        return {k: v for k, v in blasts.counts(conn, blast_id).items() if v}


def _outcomes(engine: Engine) -> dict[tuple[str, str], int]:
    a = delivery_attempts.c
    with engine.connect() as conn:
        rows = conn.execute(select(a.gateway, a.outcome, func.count()).group_by(a.gateway, a.outcome)).all()
    return {(gateway, outcome): n for gateway, outcome, n in rows}


def test_a_failing_gateway_opens_and_the_next_of_the_route_carries_the_messages(failover) -> None:
    """Errors past the threshold open the primary; the retries go through the backup, and the attempts say why."""
    engine, clock, primary, backup, worker, blast_id = failover
    _run(worker)
    opened = _health(engine, "primary")
    assert opened.state is CircuitState.OPEN and opened.until == clock() + timedelta(seconds=COOLDOWN)
    assert opened.last_error == "T1: link down" and opened.trips == 1
    clock.advance(120)  # past every backoff, not past the cool-down
    sent_to_primary = len(primary.sent)
    _run(worker)
    total = len(backup.sent)
    assert len(primary.sent) == sent_to_primary and _counts(engine, blast_id) == {"sent": total}
    with engine.connect() as conn:
        carriers = set(conn.execute(select(deliveries.c.gateway)).scalars())
    assert carriers == {"backup"}
    assert _outcomes(engine) == {("primary", "temporary"): total, ("primary", "circuit_open"): total}


def test_every_gateway_out_makes_the_messages_wait_not_fail(engine, regions, now, tmp_path) -> None:
    """A route whose only gateway is open sends nothing and keeps its messages queued until the cool-down ends."""
    people(engine, regions, now, tmp_path, 300, seed=2)
    catalogue(engine, now, [ALERT])
    settings, clock, primary = _settings(("primary",)), Clock(now), FakeGateway("primary")
    primary.fail_when(lambda m: True, TemporaryError("link down", "T1"))
    worker = Worker(engine, {"primary": primary, "backup": FakeGateway("backup")}, settings, regions, clock, "w1",
                    sleep=_no_sleep)  # fmt: skip
    blast_id = _blast(engine, regions, settings, now)
    _run(worker)
    clock.advance(120)
    tried = len(primary.sent)
    _run(worker)
    assert len(primary.sent) == tried and set(_counts(engine, blast_id)) == {"queued"}
    with engine.connect() as conn:
        due = set(conn.execute(select(deliveries.c.next_attempt_at)).scalars())
    assert {blasts.utc(d) for d in due} == {_health(engine, "primary").until}


def test_after_the_cool_down_one_small_probe_closes_a_healed_gateway(failover) -> None:
    """Once the cool-down is over one worker probes with a few messages; their success closes the circuit."""
    engine, clock, primary, backup, worker, blast_id = failover
    _run(worker)
    clock.advance(COOLDOWN + 1)
    primary._rules.clear()  # the link is back
    tried = len(primary.sent)
    _run(worker)
    assert len(primary.sent) - tried == 10  # the probe alone: the rest of the batch took the backup
    assert _health(engine, "primary").state is CircuitState.CLOSED
    counts = _counts(engine, blast_id)
    assert set(counts) == {"sent"} and len(backup.sent) == counts["sent"] - 10


def test_a_failed_probe_opens_the_gateway_again(failover) -> None:
    """A probe that meets the same errors takes the gateway out for another cool-down."""
    engine, clock, primary, backup, worker, _ = failover
    _run(worker)
    clock.advance(COOLDOWN + 1)
    _run(worker)
    again = _health(engine, "primary")
    assert again.state is CircuitState.OPEN and again.trips == 2
    assert again.until == clock() + timedelta(seconds=COOLDOWN)


def test_a_gateway_the_provider_disabled_opens_at_once_and_its_message_is_not_failed(engine, regions, now,
                                                                                      tmp_path) -> None:  # fmt: skip
    """One GatewayDisabledError takes the gateway out; that message goes through the backup instead of failing."""
    people(engine, regions, now, tmp_path, 50, seed=2)
    catalogue(engine, now, [ALERT])
    settings, clock = _settings(), Clock(now)
    primary, backup = FakeGateway("primary"), FakeGateway("backup")
    primary.fail_next(1, GatewayDisabledError("template not approved", "-131"))
    worker = Worker(engine, {"primary": primary, "backup": backup}, settings, regions, clock, "w1", sleep=_no_sleep)
    blast_id = _blast(engine, regions, settings, now)
    _run(worker)
    assert _health(engine, "primary").state is CircuitState.OPEN
    assert set(_counts(engine, blast_id)) == {"sent"}
    assert [m.delivery_id for m in backup.sent] == [primary.sent[0].delivery_id]
    assert _outcomes(engine) == {("primary", "disabled"): 1, ("primary", "circuit_open"): 1}


def test_a_link_that_cannot_be_made_counts_against_the_gateway(engine, regions, now, tmp_path) -> None:
    """A send_batch that raises (a bind refused) fails each of its messages temporarily and opens the circuit."""
    people(engine, regions, now, tmp_path, 50, seed=2)
    catalogue(engine, now, [ALERT])
    settings, clock = _settings(), Clock(now)
    refusing = RefusingGateway("primary")
    worker = Worker(engine, {"primary": refusing, "backup": FakeGateway("backup")}, settings, regions, clock, "w1",
                    sleep=_no_sleep)  # fmt: skip
    blast_id = _blast(engine, regions, settings, now)
    _run(worker)
    assert set(_counts(engine, blast_id)) == {"queued"}
    assert _health(engine, "primary").last_error == "ESME_RBINDFAIL: bind refused"
    assert _health(engine, "primary").state is CircuitState.OPEN


def test_a_circuit_one_worker_opened_holds_for_every_worker(failover, regions) -> None:
    """The circuit is in the database: a second worker, with gateways of its own, skips the open primary too."""
    engine, clock, primary, backup, worker, blast_id = failover
    _run(worker)
    clock.advance(120)
    own_primary, own_backup = FakeGateway("primary"), FakeGateway("backup")
    other = Worker(engine, {"primary": own_primary, "backup": own_backup}, worker.settings, regions, clock, "w2",
                   sleep=_no_sleep)  # fmt: skip
    _run(other)
    assert own_primary.sent == [] and len(own_backup.sent) == _counts(engine, blast_id)["sent"]


def test_scattered_errors_below_the_share_keep_the_gateway_in(engine, regions, now, tmp_path) -> None:
    """Errors that are a small share of a window's sends do not open the circuit."""
    people(engine, regions, now, tmp_path, 300, seed=2)
    catalogue(engine, now, [ALERT])
    settings, clock = _settings(), Clock(now)
    primary = FakeGateway("primary")
    primary.fail_when(lambda m: m.delivery_id % 10 == 0, TemporaryError("timeout", "T2"))
    worker = Worker(engine, {"primary": primary, "backup": FakeGateway("backup")}, settings, regions, clock, "w1",
                    sleep=_no_sleep)  # fmt: skip
    _blast(engine, regions, settings, now)
    _run(worker)
    state = _health(engine, "primary")
    assert state.state is CircuitState.CLOSED and state.errors >= 20 and state.last_error == "T2: timeout"


def test_a_dead_workers_message_the_backup_accepted_is_sent_not_resent(failover) -> None:
    """A lease that expires after the backup took a message: the backup's word settles it, not the primary's."""
    engine, clock, primary, backup, worker, blast_id = failover
    primary._rules.clear()
    with engine.begin() as conn:
        blasts.start_due(conn, worker.settings, clock())
    claimed, _ = worker._claim(clock())  # a worker that claims, fails over, then dies before recording
    handed = [OutgoingMessage(r.id, r.msisdn, "x", Encoding.GSM7, 1, r.carrier) for r in claimed]
    asyncio.run(backup.send_batch(handed))
    clock.advance(worker.settings.dispatch.lease_seconds + 1)
    _run(worker)
    assert set(_counts(engine, blast_id)) == {"sent"} and primary.sent == []
    with engine.connect() as conn:
        carriers = set(conn.execute(select(deliveries.c.gateway)).scalars())
    assert carriers == {"backup"}


def test_a_zalo_then_sms_message_goes_by_sms_when_every_zalo_gateway_is_out(engine, regions, now, tmp_path) -> None:
    """Zalo's gateways all out: a zalo_then_sms blast does not wait for them, it sends its messages by SMS."""
    people(engine, regions, now, tmp_path, 100, seed=2)
    catalogue(engine, now, [ALERT])
    settings = load_settings(None, {
        "CANHBAO_GATEWAYS": '{"primary": {"kind": "simulator"}, "backup": {"kind": "simulator"}}',
        "CANHBAO_ROUTES": '{"default": ["backup"], "zalo": ["primary"]}',
        "CANHBAO_DISPATCH__REPORT_WAIT_SECONDS": "0", "CANHBAO_DISPATCH__RECEIPT_TIMEOUT_SECONDS": "0",
    })  # fmt: skip
    with engine.begin() as conn:
        health.record(conn, "primary", health.Tally(1, 1, "-131: template not approved", True), now,
                      settings.gateways.get("primary"), probing=False)  # fmt: skip
    primary, backup = FakeGateway("primary"), FakeGateway("backup")
    worker = Worker(engine, {"primary": primary, "backup": backup}, settings, regions, Clock(now), "w1",
                    sleep=_no_sleep)  # fmt: skip
    segment = resolve(SegmentSpec(provinces=("Đà Nẵng",)), regions)
    with engine.begin() as conn:
        blast_id, _ = blasts.create(conn, blasts.BlastRequest(ALERT, segment, channel="zalo_then_sms"), "liaison",
                                    settings, regions, now)  # fmt: skip
        blasts.approve(conn, blast_id, "chief", now)
    _run(worker)
    counts = _counts(engine, blast_id)
    assert primary.sent == [] and set(counts) == {"sent"} and len(backup.sent) == counts["sent"]
    assert _outcomes(engine)[("primary", "fallback")] > 0


def test_the_circuit_a_callback_opened_keeps_its_cool_down(engine: Engine, now: datetime) -> None:
    """A second refusal reported while the gateway is out does not push its cool-down further away."""
    limits = GatewayLimits(circuit_cooldown_seconds=30)
    with engine.begin() as conn:
        first = health.disable(conn, "twilio", "30007: filtered", now, limits)
        again = health.disable(conn, "twilio", "30007: filtered again", now + timedelta(seconds=10), limits)
    assert again.until == first.until == now + timedelta(seconds=30) and again.trips == 1
    assert again.last_error == "30007: filtered again"
