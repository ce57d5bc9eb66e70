"""The Twilio gateway against a loopback Twilio: requests as Twilio's API describes them, its answers as our errors."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import structlog
from pydantic import SecretStr
from sqlalchemy import select

from dispatcher import blasts
from dispatcher.config import Settings, TwilioSettings, load_settings
from dispatcher.dispatch import Worker
from dispatcher.errors import ConfigError
from dispatcher.gateways import build
from dispatcher.gateways.base import (
    GatewayDisabledError,
    GatewayError,
    NotSentError,
    OptedOutError,
    OutgoingMessage,
    PermanentError,
    SendResult,
    TemporaryError,
    ThrottledError,
    UnknownOutcomeError,
)
from dispatcher.gateways.twilio import TwilioGateway, retry_after, validity
from dispatcher.models import audit_log, deliveries, delivery_attempts, subscribers
from dispatcher.segments import SegmentSpec, resolve
from dispatcher.smstext import Encoding
from tests.clock import Clock
from tests.twilio_fake import ACCOUNT_SID, AUTH_TOKEN, SERVICE_SID, TwilioFake, check_form
from tests.world import approved_blast, catalogue, people

PUBLIC = "https://canhbao.example.vn"


@pytest.fixture
def fake() -> Iterator[TwilioFake]:
    """A loopback Twilio for the test."""
    with TwilioFake() as server:
        yield server


def _settings(fake: TwilioFake, **keys: object) -> TwilioSettings:
    values = {"account_sid": ACCOUNT_SID, "auth_token": SecretStr(AUTH_TOKEN), "messaging_service_sid": SERVICE_SID,
              "base_url": fake.base_url, "public_url": PUBLIC, **keys}  # fmt: skip
    return TwilioSettings(**values)


def _message(i: int, not_after: datetime | None = None, text: str = "Cảnh báo lừa đảo") -> OutgoingMessage:
    return OutgoingMessage(i, f"+8490512{i:04d}", text, Encoding.UCS2, 1, "viettel", not_after=not_after)


def _send(gateway: TwilioGateway, messages: list[OutgoingMessage]) -> list[object]:
    async def go() -> list[object]:
        try:
            return await gateway.send_batch(messages)
        finally:
            await gateway.close()

    return asyncio.run(go())


def test_a_message_goes_as_twilios_api_describes_it(fake: TwilioFake, now: datetime) -> None:
    """To, Body, the Messaging Service, the status callback at the public URL and the time left as ValidityPeriod."""
    gateway = TwilioGateway(_settings(fake), clock=lambda: now)
    [outcome] = _send(gateway, [_message(1, not_after=now + timedelta(minutes=30))])
    assert fake.violations == []
    [sent] = fake.messages
    assert outcome == SendResult(sent["sid"], 1)
    assert sent == {"To": "+84905120001", "Body": "Cảnh báo lừa đảo", "MessagingServiceSid": SERVICE_SID,
                    "StatusCallback": f"{PUBLIC}/hooks/twilio/status", "ValidityPeriod": "1800",
                    "sid": sent["sid"]}  # fmt: skip


def test_a_number_of_our_own_is_the_sender_without_a_messaging_service(fake: TwilioFake) -> None:
    """Without a Messaging Service the message goes From our number; without not_after, no ValidityPeriod."""
    gateway = TwilioGateway(_settings(fake, messaging_service_sid="", from_number="+12025550100"))
    _send(gateway, [_message(1)])
    assert fake.violations == []
    assert fake.messages[0]["From"] == "+12025550100" and "ValidityPeriod" not in fake.messages[0]


def test_validity_stays_within_twilios_range(now: datetime) -> None:
    """ValidityPeriod is the seconds left, at least 1 and at most 36,000."""
    assert validity(now + timedelta(seconds=0.2), now) == 1
    assert validity(now - timedelta(seconds=5), now) == 1
    assert validity(now + timedelta(hours=3), now) == 10_800
    assert validity(now + timedelta(days=2), now) == 36_000


def test_the_fake_refuses_what_twilios_description_does_not_allow() -> None:
    """The fake's check names unknown fields, a ValidityPeriod out of range, a bad SID and a missing sender."""
    problems = check_form({"To": ["+84905123456"], "Body": ["x"], "ValidityPeriod": ["40000"], "Colour": ["red"],
                           "MessagingServiceSid": ["MG123"]})  # fmt: skip
    assert any("Colour" in p for p in problems) and any("ValidityPeriod" in p for p in problems)
    assert any("MessagingServiceSid" in p for p in problems)
    assert any("From or MessagingServiceSid" in p for p in check_form({"To": ["+84905123456"], "Body": ["x"]}))
    assert any("callback" in p for p in check_form({"To": ["+84905123456"], "Body": ["x"], "From": ["+12025550100"],
                                                    "StatusCallback": ["http://my_host/x"]}))  # fmt: skip


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [(21211, 400, PermanentError), (21614, 400, PermanentError), (21635, 400, PermanentError),
     (21610, 400, OptedOutError), (21408, 400, GatewayDisabledError), (20003, 401, GatewayDisabledError),
     (20429, 429, ThrottledError), (20500, 500, TemporaryError), (20503, 503, TemporaryError),
     (21602, 400, PermanentError)],
)  # fmt: skip
def test_twilios_errors_map_to_ours(fake: TwilioFake, code: int, status: int, kind: type) -> None:
    """Each of Twilio's answers becomes the error class that carries our decision, with Twilio's code."""
    fake.refuse_next(1, code, status)
    [outcome] = _send(TwilioGateway(_settings(fake)), [_message(1)])
    assert type(outcome) is kind and outcome.code == str(code)
    assert outcome.retryable is (kind in (ThrottledError, TemporaryError))


def test_one_refusal_does_not_stop_the_rest_of_the_batch(fake: TwilioFake) -> None:
    """A batch gets one outcome per message, in order, whatever happened to the others."""
    fake.refuse("+84905120002", 21211)
    outcomes = _send(TwilioGateway(_settings(fake)), [_message(i) for i in (1, 2, 3)])
    assert [type(o) for o in outcomes] == [SendResult, PermanentError, SendResult]
    assert len(fake.messages) == 2


def test_wrong_credentials_stop_the_gateway_and_say_so(fake: TwilioFake) -> None:
    """A wrong auth token is Twilio's 20003: the gateway is to be stopped, and an error is logged for the operator."""
    gateway = TwilioGateway(_settings(fake, auth_token=SecretStr("wrong")))
    with structlog.testing.capture_logs() as logs:
        [outcome] = _send(gateway, [_message(1)])
    assert isinstance(outcome, GatewayDisabledError) and outcome.code == "20003"
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["twilio.gateway_disabled"]


def test_twilio_out_of_reach_keeps_the_message_queued() -> None:
    """Nothing listening at base_url: nothing was sent, the message is not sent (it stays queued)."""
    settings = TwilioSettings(account_sid=ACCOUNT_SID, auth_token=SecretStr(AUTH_TOKEN),
                              messaging_service_sid=SERVICE_SID, base_url="http://127.0.0.1:9")  # fmt: skip
    [outcome] = _send(TwilioGateway(settings), [_message(1)])
    assert isinstance(outcome, NotSentError) and outcome.code == "connect"


def test_no_answer_in_time_leaves_the_outcome_unknown() -> None:
    """Twilio slower than timeout_seconds: it may have the message, so it is never sent again on its own."""
    with TwilioFake(latency_ms=500) as fake:
        [outcome] = _send(TwilioGateway(_settings(fake, timeout_seconds=0.1)), [_message(1)])
        time.sleep(0.6)
        assert isinstance(outcome, UnknownOutcomeError) and not outcome.retryable
        assert len(fake.messages) == 1  # it did reach Twilio: sending it again would send it twice


def test_check_fetches_the_account_and_says_what_is_wrong(fake: TwilioFake) -> None:
    """check() fetches the account without sending; a wrong token or no Twilio at all is said in Vietnamese."""

    async def check(settings: TwilioSettings) -> str | Exception:
        gateway = TwilioGateway(settings)
        try:
            return await gateway.check()
        except GatewayError as error:
            return error
        finally:
            await gateway.close()

    assert asyncio.run(check(_settings(fake))).startswith(f"Tài khoản Twilio {ACCOUNT_SID} hoạt động")
    wrong = asyncio.run(check(_settings(fake, auth_token=SecretStr("wrong"))))
    assert isinstance(wrong, GatewayDisabledError) and "auth token" in str(wrong)
    away = asyncio.run(check(_settings(fake, base_url="http://127.0.0.1:9")))
    assert isinstance(away, NotSentError) and "Không kết nối được" in str(away)
    assert fake.messages == []


def test_a_429_keeps_twilios_retry_after(fake: TwilioFake) -> None:
    """429 with Retry-After: 120 is throttled, Twilio's code kept and the 120 s carried to the retry decision."""
    fake.throttle_next(1, "120")
    [outcome] = _send(TwilioGateway(_settings(fake)), [_message(1)])
    assert type(outcome) is ThrottledError and outcome.code == "20429" and outcome.retry_after == 120


def test_retry_after_is_read_in_seconds_or_as_an_http_date(now: datetime) -> None:
    """Both forms of RFC 9110's Retry-After; an absent or unreadable one is None."""
    assert retry_after("30") == 30
    assert retry_after(format_datetime(now + timedelta(seconds=90), usegmt=True), now) == 90
    assert retry_after(None) is None and retry_after("soon") is None


def test_after_a_429_the_next_sends_wait_out_a_short_retry_after(fake: TwilioFake) -> None:
    """Retry-After: 1, one request at a time: the next message reaches Twilio only a second after the 429."""
    fake.throttle_next(1, "1")
    outcomes = _send(TwilioGateway(_settings(fake, concurrency=1)), [_message(1), _message(2)])
    assert [type(o) for o in outcomes] == [ThrottledError, SendResult]
    assert fake.arrivals[1] - fake.arrivals[0] >= 1.0


def test_after_a_429_with_a_long_retry_after_the_rest_goes_back_unsent(fake: TwilioFake) -> None:
    """Retry-After: 120: the messages after it are not sent to Twilio; they come back throttled, to wait as long."""
    fake.throttle_next(1, "120")
    outcomes = _send(TwilioGateway(_settings(fake, concurrency=1)), [_message(i) for i in (1, 2, 3)])
    assert [type(o) for o in outcomes] == [ThrottledError] * 3 and fake.requests == 1
    assert all(o.retry_after > 110 for o in outcomes)


def test_messages_go_at_most_concurrency_at_once(now: datetime) -> None:
    """With concurrency 4 and 100 ms per request, 12 messages take three rounds, not one."""
    with TwilioFake(latency_ms=100) as fake:
        gateway = TwilioGateway(_settings(fake, concurrency=4))
        started = datetime.now(UTC)
        outcomes = _send(gateway, [_message(i) for i in range(12)])
        took = (datetime.now(UTC) - started).total_seconds()
    assert all(isinstance(o, SendResult) for o in outcomes)
    assert took >= 0.3


def test_a_section_that_cannot_send_is_refused_when_built() -> None:
    """No auth token in the environment and no sender: one Vietnamese message naming both."""
    settings = load_settings(None, {"CANHBAO_GATEWAYS__TWILIO__ACCOUNT_SID": ACCOUNT_SID})
    with pytest.raises(ConfigError, match="AUTH_TOKEN.*messaging_service_sid hoặc from_number"):
        build("twilio", settings.gateways)


def _blast_through(engine, regions, now: datetime, fake: TwilioFake) -> int:
    """An approved blast to everyone, sent by a worker (on the test's clock) through Twilio at `fake` until idle."""
    environ = {"CANHBAO_ROUTES": '{"default": ["twilio"]}', "CANHBAO_DISPATCH__REPORT_WAIT_SECONDS": "0",
               "CANHBAO_GATEWAYS__TWILIO__ACCOUNT_SID": ACCOUNT_SID, "CANHBAO_GATEWAYS__TWILIO__AUTH_TOKEN": AUTH_TOKEN,
               "CANHBAO_GATEWAYS__TWILIO__MESSAGING_SERVICE_SID": SERVICE_SID,
               "CANHBAO_GATEWAYS__TWILIO__BASE_URL": fake.base_url,
               "CANHBAO_GATEWAYS__TWILIO__PUBLIC_URL": PUBLIC}  # fmt: skip
    settings = load_settings(None, environ)
    segment = resolve(SegmentSpec(provinces=("Đà Nẵng",)), regions)
    with engine.begin() as conn:
        request = blasts.BlastRequest("gia-danh-cong-an-goi-video", segment, not_after=now + timedelta(hours=2))
        blast_id, _ = blasts.create(conn, request, "liaison", settings, regions, now)
        blasts.approve(conn, blast_id, "chief", now)
    clock = Clock(now)
    worker = Worker(engine, {"twilio": build("twilio", settings.gateways)}, settings, regions, clock, "w1")
    worker.gateways["twilio"].clock = clock

    async def run() -> None:
        try:
            await worker.run(until_idle=True)
        finally:
            await worker.gateways["twilio"].close()

    asyncio.run(run())
    return blast_id


def test_a_blast_goes_through_twilio_and_a_refusal_at_twilio_opts_the_person_out(
    engine, regions, now, tmp_path
) -> None:
    """The worker sends a blast through Twilio; a 21610 answer fails that message and records the opt-out."""
    people(engine, regions, now, tmp_path, 20, seed=3)
    catalogue(engine, now, ["gia-danh-cong-an-goi-video"])
    with TwilioFake() as fake:
        with engine.connect() as conn:
            refusing = conn.execute(select(subscribers.c.msisdn).limit(1)).scalar_one()
        fake.refuse(refusing, 21610)
        _blast_through(engine, regions, now, fake)
    assert fake.violations == []
    with engine.connect() as conn:
        rows = conn.execute(select(deliveries.c.msisdn, deliveries.c.status, deliveries.c.provider_id)).all()
        opted = conn.execute(select(subscribers.c.opted_out_at).where(subscribers.c.msisdn == refusing)).scalar_one()
        audited = conn.execute(select(audit_log.c.actor).where(audit_log.c.action == "subscriber.opt_out")).scalars()
        audited = list(audited)
    sids = {m["sid"] for m in fake.messages}
    assert {status for msisdn, status, _ in rows if msisdn != refusing} == {"sent"}
    assert {pid for msisdn, _, pid in rows if msisdn != refusing} == sids and len(sids) == len(rows) - 1
    assert [status for msisdn, status, _ in rows if msisdn == refusing] == ["failed"]
    assert opted is not None and audited == ["gateway:twilio"]
    assert {m["ValidityPeriod"] for m in fake.messages} == {"7200"}


def test_a_throttled_message_waits_at_least_twilios_retry_after(engine, regions, now, tmp_path) -> None:
    """A blast whose first request Twilio answers 429 with Retry-After: 600: that message is queued ≥ 600 s later."""
    people(engine, regions, now, tmp_path, 20, seed=3)
    catalogue(engine, now, ["gia-danh-cong-an-goi-video"])
    with TwilioFake() as fake:
        fake.throttle_next(1, "600")
        _blast_through(engine, regions, now, fake)
    with engine.connect() as conn:
        rows = conn.execute(select(deliveries.c.status, deliveries.c.next_attempt_at, deliveries.c.error_code)).all()
        outcomes = conn.execute(select(delivery_attempts.c.outcome)).scalars().all()
    [(_, due, code)] = [row for row in rows if row.status == "queued"]
    assert blasts.utc(due) >= now + timedelta(seconds=599) and code == "20429" and outcomes == ["throttled"]
    assert sorted(status for status, _, _ in rows) == ["queued"] + ["sent"] * (len(rows) - 1)


# -- a 429 holds every worker of the gateway ---------------------------------------------------


def _worker_of(engine, regions, fake: TwilioFake, clock: Clock, name: str, batch: int) -> Worker:  # type: ignore[no-untyped-def]
    """A worker with a Twilio gateway of its own (one request at a time), on `clock`, claiming `batch` at once."""
    environ = {"CANHBAO_ROUTES": '{"default": ["twilio"]}', "CANHBAO_DISPATCH__REPORT_WAIT_SECONDS": "0",
               "CANHBAO_DISPATCH__BATCH_SIZE": str(batch), "CANHBAO_GATEWAYS__TWILIO__CONCURRENCY": "1",
               "CANHBAO_GATEWAYS__TWILIO__ACCOUNT_SID": ACCOUNT_SID, "CANHBAO_GATEWAYS__TWILIO__AUTH_TOKEN": AUTH_TOKEN,
               "CANHBAO_GATEWAYS__TWILIO__MESSAGING_SERVICE_SID": SERVICE_SID,
               "CANHBAO_GATEWAYS__TWILIO__BASE_URL": fake.base_url}  # fmt: skip
    settings = load_settings(None, environ)
    worker = Worker(engine, {"twilio": build("twilio", settings.gateways)}, settings, regions, clock, name)
    worker.gateways["twilio"].clock = clock
    return worker


def _approved_blast(engine, regions, now: datetime, tmp_path, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    """Twenty people of Đà Nẵng and an approved blast to them, started by the first worker's tick."""
    people(engine, regions, now, tmp_path, 20, seed=3)
    catalogue(engine, now, ["gia-danh-cong-an-goi-video"])
    approved_blast(engine, regions, settings, now)


async def _closing(workers: list[Worker], steps: Callable[[], Awaitable[None]]) -> None:
    try:
        await steps()
    finally:
        for worker in workers:
            await worker.gateways["twilio"].close()


def test_a_429_holds_the_other_workers_of_the_gateway_until_it_ends(engine, regions, now, tmp_path) -> None:
    """Worker A gets 429 with Retry-After: 600; worker B sends Twilio nothing until then, its messages queued
    for the hold's end with no attempt spent, and everything goes once it has passed."""
    clock = Clock(now)
    with TwilioFake() as fake:
        a, b = (_worker_of(engine, regions, fake, clock, name, batch) for name, batch in (("a", 1), ("b", 5)))
        _approved_blast(engine, regions, now, tmp_path, a.settings)
        fake.throttle_next(1, "600")

        async def steps() -> None:
            await a.tick()
            clock.advance(10)
            await b.tick()
            assert fake.requests == 1
            with engine.connect() as conn:
                held = conn.execute(select(deliveries.c.id, deliveries.c.next_attempt_at).where(
                    deliveries.c.attempts == 0, deliveries.c.next_attempt_at > now)).all()  # fmt: skip
                tried = conn.execute(select(delivery_attempts.c.delivery_id)).scalars().all()
            assert len(held) == 5 and all(blasts.utc(due) >= now + timedelta(seconds=599) for _, due in held)
            assert len(tried) == 1 and tried[0] not in {i for i, _ in held}
            clock.advance(600)
            await b.run(until_idle=True)

        asyncio.run(_closing([a, b], steps))
    with engine.connect() as conn:
        statuses = conn.execute(select(deliveries.c.status)).scalars().all()
    assert set(statuses) == {"sent"} and fake.requests == len(statuses) + 1 and fake.violations == []


def test_a_short_hold_is_waited_out_by_the_other_workers(engine, regions, now, tmp_path) -> None:
    """Retry-After: 3 at worker A: worker B first waits the three seconds left, then sends its batch."""
    clock, slept = Clock(now), []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(seconds)

    with TwilioFake() as fake:
        a, b = (_worker_of(engine, regions, fake, clock, name, batch) for name, batch in (("a", 1), ("b", 5)))
        _approved_blast(engine, regions, now, tmp_path, a.settings)
        b.sleep = sleep
        fake.throttle_next(1, "3")

        async def steps() -> None:
            await a.tick()
            await b.tick()

        asyncio.run(_closing([a, b], steps))
    with engine.connect() as conn:
        sent = conn.execute(select(deliveries.c.sent_at).where(deliveries.c.status == "sent")).scalars().all()
    assert slept == [pytest.approx(3.0)] and fake.requests == 6
    assert len(sent) == 5 and all(blasts.utc(at) >= now + timedelta(seconds=3) for at in sent)
