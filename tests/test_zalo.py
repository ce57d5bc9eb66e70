"""The Zalo gateway against a loopback Zalo (tests/zalo_fake.py): sends, errors, templates, tokens, webhooks."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, delete, select, update

from dispatcher import blasts, queue
from dispatcher.config import GatewaysSettings, ZaloGatewaySettings, load_settings
from dispatcher.dispatch import Worker
from dispatcher.gateways import build
from dispatcher.gateways.base import (
    ChannelClosedError,
    ChannelUnavailableError,
    GatewayDisabledError,
    OutgoingMessage,
    PermanentError,
    ReportStatus,
    SendResult,
    TemporaryError,
    ThrottledError,
)
from dispatcher.gateways.simulator import SimulatorGateway
from dispatcher.gateways.zalo import WebhookRejected, ZaloGateway, parse_webhook
from dispatcher.models import deliveries, delivery_reports, gateway_tokens, provider_refs, utc
from dispatcher.segments import SegmentSpec, resolve
from dispatcher.smstext import Encoding
from tests.clock import Clock
from tests.world import catalogue, people
from tests.zalo_fake import APP_ID, APP_SECRET, OA_ID, TEMPLATE, ZaloFake

ALERT = "gia-danh-cong-an-goi-video"  # its [zalo] block: template 301245, ten_tinh and noi_dung = title
PHONE = "+84905123456"
DATA = {"ten_tinh": "Thành phố Đà Nẵng", "noi_dung": "Giả danh công an gọi video"}


@pytest.fixture
def fake() -> Iterator[ZaloFake]:
    """A loopback Zalo, template API and OAuth on one port."""
    server = ZaloFake().start()
    yield server
    server.stop()


@pytest.fixture
def clock() -> Clock:
    """The gateway's clock, from now (the fake's tokens expire in real time): 09:00 in Vietnam."""
    today = datetime.now(UTC).date()
    return Clock(datetime(today.year, today.month, today.day, 2, 0, tzinfo=UTC))


def _settings(fake: ZaloFake, **overrides: object) -> ZaloGatewaySettings:
    values = {"app_id": APP_ID, "oa_id": OA_ID, "app_secret": APP_SECRET, "refresh_token": "refresh-0",
              "base_url": fake.url, "oauth_url": fake.url, **overrides}  # fmt: skip
    return ZaloGatewaySettings(**values)


def _gateway(fake: ZaloFake, engine: Engine, clock: Clock, holder: str = "w1", **overrides: object) -> ZaloGateway:
    gateway = ZaloGateway(_settings(fake, **overrides), engine, clock, holder)
    gateway.name = "zalo"
    return gateway


def _message(delivery_id: int = 1, phone: str = PHONE, data: dict[str, str] | None = None) -> OutgoingMessage:
    template = {"template_id": TEMPLATE, "template_data": DATA if data is None else data}
    return OutgoingMessage(delivery_id, phone, "Công an cảnh báo", Encoding.UCS2, 1, "viettel", "zalo", template)


def _send(gateway: ZaloGateway, *messages: OutgoingMessage) -> list[object]:
    async def go() -> list[object]:
        try:
            return await gateway.send_batch(messages)
        finally:
            await gateway.close()

    return asyncio.run(go())


def _stored(engine: Engine) -> dict[str, object]:
    with engine.connect() as conn:
        return dict(conn.execute(select(gateway_tokens)).mappings().one())


# -- sending ----------------------------------------------------------------------------------


def test_a_template_message_goes_with_the_phone_as_84_and_our_delivery_id_as_tracking_id(
    fake: ZaloFake, sqlite_engine: Engine, clock: Clock
) -> None:
    """The request carries 84…, the template's id and data, our delivery id; Zalo's msg_id is the provider id."""
    (outcome,) = _send(_gateway(fake, sqlite_engine, clock), _message(41))
    assert isinstance(outcome, SendResult) and outcome.parts == 1 and len(outcome.provider_id) == 20
    assert fake.sent == [{"phone": "84905123456", "template_id": TEMPLATE, "template_data": DATA,
                          "tracking_id": "41"}]  # fmt: skip


def test_the_gateway_is_built_from_its_section_with_the_database(fake: ZaloFake, sqlite_engine: Engine) -> None:
    """`[gateways.zalo-oa]` of kind zalo builds a ZaloGateway named after its section."""
    settings = GatewaysSettings.model_validate({"zalo-oa": {"kind": "zalo", "app_id": APP_ID, "base_url": fake.url}})
    gateway = build("zalo-oa", settings, sqlite_engine)
    assert isinstance(gateway, ZaloGateway) and gateway.name == "zalo-oa"


def test_the_remaining_quota_is_logged(fake: ZaloFake, sqlite_engine: Engine, clock: Clock) -> None:
    """Each batch logs the lowest remainingQuota Zalo gave."""
    from structlog.testing import capture_logs

    fake.remaining_quota = 500
    with capture_logs() as logs:
        _send(_gateway(fake, sqlite_engine, clock), _message(1), _message(2))
    assert [e["remaining_quota"] for e in logs if e["event"] == "zalo.quota"] == ["498"]


def test_the_template_parameters_are_asked_of_zalo_once(fake: ZaloFake, sqlite_engine: Engine, clock: Clock) -> None:
    """A batch of 50 messages of one template asks /template/info/v2 once."""
    outcomes = _send(_gateway(fake, sqlite_engine, clock), *(_message(i) for i in range(50)))
    assert all(isinstance(o, SendResult) for o in outcomes)
    assert fake.calls["/template/info/v2"] == 1 and fake.calls["/message/template"] == 50


def test_a_value_longer_than_the_template_allows_is_refused_before_sending(
    fake: ZaloFake, sqlite_engine: Engine, clock: Clock
) -> None:
    """A value over maxLength, a missing one and an unknown one: one permanent error naming all three, nothing sent."""
    data = {"ten_tinh": "x" * 31, "chu_ky": "Công an"}
    (outcome,) = _send(_gateway(fake, sqlite_engine, clock), _message(data=data))
    assert isinstance(outcome, PermanentError) and outcome.code == "ZALO-PARAMS"
    assert "'ten_tinh' dài 31 ký tự, mẫu cho tối đa 30" in outcome.message
    assert "thiếu tham số bắt buộc 'noi_dung'" in outcome.message and "'chu_ky'" in outcome.message
    assert fake.calls["/message/template"] == 0


def test_a_template_whose_parameters_changed_is_asked_again(
    fake: ZaloFake, sqlite_engine: Engine, clock: Clock
) -> None:
    """Zalo shortens a parameter after we cached its list: -1121 makes us ask again; the next is refused here."""
    gateway = _gateway(fake, sqlite_engine, clock)

    async def go() -> list[object]:
        first = await gateway.send_batch([_message(1)])
        fake.templates[TEMPLATE]["listParams"][1]["maxLength"] = 10
        second = await gateway.send_batch([_message(2)])
        third = await gateway.send_batch([_message(3)])
        await gateway.close()
        return first + second + third

    first, second, third = asyncio.run(go())
    assert isinstance(first, SendResult)
    assert isinstance(second, PermanentError) and second.code == "-1121"
    assert isinstance(third, PermanentError) and third.code == "ZALO-PARAMS" and "tối đa 10" in third.message
    assert fake.calls["/template/info/v2"] == 2 and fake.calls["/message/template"] == 2


def test_a_message_without_a_zalo_template_is_refused(fake: ZaloFake, sqlite_engine: Engine, clock: Clock) -> None:
    """An alert without a [zalo] block cannot go by Zalo: a permanent error that says so."""
    message = _message()._replace(template=None)
    (outcome,) = _send(_gateway(fake, sqlite_engine, clock), message)
    assert isinstance(outcome, PermanentError) and "[zalo]" in outcome.message


# -- the error table --------------------------------------------------------------------------


@pytest.mark.parametrize("code", [-118, -108, -110, -114, -119, -139, -141])
def test_a_person_zalo_cannot_reach_is_channel_unavailable(
    fake: ZaloFake, sqlite_engine: Engine, clock: Clock, code: int
) -> None:
    """Not on Zalo, an app too old, a refusal: ChannelUnavailableError, so zalo_then_sms sends an SMS instead."""
    fake.errors_by_phone["84905123456"] = code
    (outcome,) = _send(_gateway(fake, sqlite_engine, clock), _message())
    assert type(outcome) is ChannelUnavailableError and outcome.code == str(code) and not outcome.retryable


@pytest.mark.parametrize(
    ("code", "kind"),
    [(-100, TemporaryError), (-32, ThrottledError), (-1121, PermanentError), (-116, PermanentError),
     (-999, PermanentError)],
)  # fmt: skip
def test_other_codes_map_to_their_class(fake: ZaloFake, sqlite_engine: Engine, clock: Clock, code: int, kind) -> None:
    """Retry later, slow down, fix the payload; a code not in the table is permanent and says so."""
    fake.next_errors.append(code)
    (outcome,) = _send(_gateway(fake, sqlite_engine, clock), _message())
    assert type(outcome) is kind and outcome.code == str(code)


def test_a_night_refusal_waits_until_six_in_the_morning(fake: ZaloFake, sqlite_engine: Engine, clock: Clock) -> None:
    """-133 at 23:00 in Vietnam: the channel is closed for 7 hours (SMS instead in zalo_then_sms, else a retry then)."""
    clock.now = clock.now.replace(hour=16)  # 23:00 in Hà Nội
    fake.next_errors.append(-133)
    (outcome,) = _send(_gateway(fake, sqlite_engine, clock), _message())
    assert isinstance(outcome, ChannelClosedError) and outcome.retryable and outcome.retry_after == 7 * 3600


def test_a_used_up_daily_quota_stops_the_gateway_until_tomorrow(
    fake: ZaloFake, sqlite_engine: Engine, clock: Clock
) -> None:
    """-144: the rest wait for midnight in Vietnam without asking Zalo; after it, sending goes on."""
    gateway = _gateway(fake, sqlite_engine, clock)
    fake.remaining_quota = 1

    async def go() -> tuple[list[object], list[object]]:
        today = await gateway.send_batch([_message(1), _message(2), _message(3)])
        asked = fake.calls["/message/template"]
        later = await gateway.send_batch([_message(4)])
        assert fake.calls["/message/template"] == asked
        clock.advance(15 * 3600 + 120)  # 00:02 the next day
        fake.remaining_quota = 100
        tomorrow = await gateway.send_batch([_message(5)])
        await gateway.close()
        return today + later, tomorrow

    today, tomorrow = asyncio.run(go())
    assert sum(isinstance(o, SendResult) for o in today) == 1
    closed = [o for o in today if not isinstance(o, SendResult)]
    assert all(isinstance(o, ChannelClosedError) and o.code == "-144" for o in closed) and len(closed) == 3
    assert 14 * 3600 < closed[-1].retry_after <= 15 * 3600 + 60
    assert isinstance(tomorrow[0], SendResult)


def test_a_template_zalo_has_not_approved_stops_that_template(
    fake: ZaloFake, sqlite_engine: Engine, clock: Clock
) -> None:
    """-131: GatewayDisabledError telling the operator; the template's next messages are not sent to Zalo."""
    gateway = _gateway(fake, sqlite_engine, clock)
    fake.next_errors.append(-131)

    async def go() -> list[object]:
        outcomes = await gateway.send_batch([_message(1)])
        outcomes += await gateway.send_batch([_message(2)])
        await gateway.close()
        return outcomes

    outcomes = asyncio.run(go())
    assert all(isinstance(o, GatewayDisabledError) and "chưa được Zalo duyệt" in o.message for o in outcomes)
    assert "cần quản trị viên" in outcomes[0].message and fake.calls["/message/template"] == 1


def test_a_disabled_template_in_the_list_is_refused_before_sending(
    fake: ZaloFake, sqlite_engine: Engine, clock: Clock
) -> None:
    """A template /template/info/v2 calls DISABLE (-146 earlier): refused, the operator told, nothing sent."""
    fake.templates[TEMPLATE]["status"] = "DISABLE"
    outcomes = _send(_gateway(fake, sqlite_engine, clock), _message(1), _message(2))
    assert all(isinstance(o, GatewayDisabledError) and "ENABLE" in o.message for o in outcomes)
    assert fake.calls["/message/template"] == 0


def test_a_wrong_oa_stops_the_whole_gateway(fake: ZaloFake, sqlite_engine: Engine, clock: Clock) -> None:
    """-125: every later message is refused without asking Zalo, with the same message for the operator."""
    gateway = _gateway(fake, sqlite_engine, clock)
    fake.next_errors.append(-125)

    async def go() -> list[object]:
        first = await gateway.send_batch([_message(1)])
        rest = await gateway.send_batch([_message(2), _message(3)])
        await gateway.close()
        return first + rest

    outcomes = asyncio.run(go())
    assert all(isinstance(o, GatewayDisabledError) and "mã OA không hợp lệ" in o.message for o in outcomes)
    assert fake.calls["/message/template"] == 1


# -- tokens -----------------------------------------------------------------------------------


def test_the_first_refresh_is_committed_with_the_new_pair(fake: ZaloFake, sqlite_engine: Engine, clock: Clock) -> None:
    """The environment's refresh token is spent once; the row holds the new pair and the message used its token."""
    _send(_gateway(fake, sqlite_engine, clock), _message())
    row = _stored(sqlite_engine)
    assert row["refresh_token"] in fake.refresh_tokens and "refresh-0" not in fake.refresh_tokens
    assert fake.used_access == [row["access_token"]] * 2  # the template's info, then the send
    assert row["seed_hash"] == hashlib.sha256(b"refresh-0").hexdigest() and row["refreshing_by"] is None


def test_an_expired_access_token_is_refreshed_and_the_message_sent_once(
    fake: ZaloFake, sqlite_engine: Engine, clock: Clock
) -> None:
    """Zalo answers -124: one refresh, the same message asked once more, taken once."""
    gateway = _gateway(fake, sqlite_engine, clock)

    async def go() -> list[object]:
        await gateway.send_batch([_message(1)])
        fake.revoke_access()
        outcome = await gateway.send_batch([_message(2)])
        await gateway.close()
        return outcome

    (outcome,) = asyncio.run(go())
    assert isinstance(outcome, SendResult)
    assert [s["tracking_id"] for s in fake.sent] == ["1", "2"] and fake.calls["/v4/oa/access_token"] == 2


def test_a_token_near_its_expiry_is_refreshed_before_it_expires(
    fake: ZaloFake, sqlite_engine: Engine, clock: Clock
) -> None:
    """Less than refresh_margin_seconds left: the next send refreshes first, Zalo never says -124."""
    gateway = _gateway(fake, sqlite_engine, clock)

    async def go() -> None:
        await gateway.send_batch([_message(1)])
        clock.advance(90_000 - 6 * 3600 + 1)
        await gateway.send_batch([_message(2)])
        await gateway.close()

    asyncio.run(go())
    assert fake.calls["/v4/oa/access_token"] == 2 and len(fake.sent) == 2


def test_a_revoked_refresh_token_stops_the_gateway_with_what_to_do(
    fake: ZaloFake, sqlite_engine: Engine, clock: Clock
) -> None:
    """Zalo refuses the refresh token and no access token works: nothing sent, the operator told how to re-consent."""
    _send(_gateway(fake, sqlite_engine, clock), _message(1))
    fake.refresh_tokens.clear()
    fake.revoke_access()
    gateway = _gateway(fake, sqlite_engine, clock)
    (outcome,) = _send(gateway, _message(2))
    assert isinstance(outcome, GatewayDisabledError) and "CANHBAO_GATEWAYS__ZALO__REFRESH_TOKEN" in outcome.message
    assert len(fake.sent) == 1
    with pytest.raises(GatewayDisabledError, match="cấp quyền"):
        asyncio.run(gateway.check())


def test_a_new_refresh_token_in_the_environment_replaces_the_stored_pair(
    fake: ZaloFake, sqlite_engine: Engine, clock: Clock
) -> None:
    """After a new consent the operator sets a new REFRESH_TOKEN: the gateway starts over from it."""
    fake.refresh_tokens.clear()
    _send(_gateway(fake, sqlite_engine, clock), _message(1))
    fake.refresh_tokens.add("refresh-new")
    (outcome,) = _send(_gateway(fake, sqlite_engine, clock, refresh_token="refresh-new"), _message(2))
    assert isinstance(outcome, SendResult) and "refresh-new" not in fake.refresh_tokens


def test_wrong_app_secret_is_a_clear_error(fake: ZaloFake, sqlite_engine: Engine, clock: Clock) -> None:
    """A wrong app secret: the refresh is refused and the error names the variable to fix."""
    (outcome,) = _send(_gateway(fake, sqlite_engine, clock, app_secret="wrong"), _message())
    assert isinstance(outcome, GatewayDisabledError) and "CANHBAO_GATEWAYS__ZALO__APP_SECRET" in outcome.message
    assert "refresh-0" in fake.refresh_tokens and not fake.sent


def test_check_says_the_token_and_quota_in_vietnamese(fake: ZaloFake, sqlite_engine: Engine, clock: Clock) -> None:
    """`check()` refreshes if due and reads the quota: a Vietnamese line."""
    fake.remaining_quota = 4321
    gateway = _gateway(fake, sqlite_engine, clock)

    async def go() -> str:
        try:
            return await gateway.check()
        finally:
            await gateway.close()

    said = asyncio.run(go())
    assert said.startswith(f"Zalo OA {OA_ID}: mã truy cập dùng được đến ") and "còn 4321/1000000 tin" in said


def test_workers_share_one_token_pair_and_refresh_it_once(fake: ZaloFake, engine: Engine, clock: Clock) -> None:
    """Two workers on one database (SQLite and PostgreSQL): one refresh for both, then one when it is due."""
    first, second = _gateway(fake, engine, clock, "w1"), _gateway(fake, engine, clock, "w2")

    async def go() -> list[object]:
        outcomes = await first.send_batch([_message(1)])
        outcomes += await second.send_batch([_message(2)])
        assert fake.calls["/v4/oa/access_token"] == 1
        clock.advance(90_000 - 3600)
        both = await asyncio.gather(first.send_batch([_message(3)]), second.send_batch([_message(4)]))
        await first.close()
        await second.close()
        return outcomes + [o for batch in both for o in batch]

    outcomes = asyncio.run(go())
    assert all(isinstance(o, SendResult) for o in outcomes)
    assert fake.calls["/v4/oa/access_token"] == 2 and len(fake.sent) == 4


# -- a worker killed while it refreshes -------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from dispatcher import db
    from dispatcher.config import DatabaseSettings, ZaloGatewaySettings
    from dispatcher.gateways.base import OutgoingMessage
    from dispatcher.gateways.zalo import ZaloGateway
    from dispatcher.smstext import Encoding
    url, base, margin = sys.argv[1], sys.argv[2], float(sys.argv[3])
    settings = ZaloGatewaySettings(app_id="{app_id}", app_secret="{secret}", refresh_token="refresh-0",
                                   base_url=base, oauth_url=base, refresh_margin_seconds=margin)
    gateway = ZaloGateway(settings, db.make_engine(DatabaseSettings(url=url)), holder="doomed")
    template = {{"template_id": "{template}", "template_data": {data!r}}}
    message = OutgoingMessage(9, "+84905123456", "x", Encoding.UCS2, 1, "viettel", "zalo", template)
    asyncio.run(gateway.send_batch([message]))
    """
)


def _doomed_worker(fake: ZaloFake, url: str, margin: float) -> None:
    """Run a worker process until the fake holds its request at the dangerous moment, then SIGKILL it."""
    script = CHILD.format(app_id=APP_ID, secret=APP_SECRET, template=TEMPLATE, data=DATA)
    child = subprocess.Popen([sys.executable, "-c", script, url, fake.url, str(margin)],
                             env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})  # fmt: skip
    try:
        assert fake.held.wait(30), "the worker never reached the held request"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    fake.held.clear()
    fake.hold_refresh, fake.hold_path = None, None


@pytest.mark.parametrize("moment", ["before", "after"])
def test_a_worker_killed_while_it_refreshes_does_not_lock_us_out(
    fake: ZaloFake, sqlite_engine: Engine, clock: Clock, moment: str
) -> None:
    """SIGKILL before Zalo spent the refresh token, or after (its answer lost): the next worker still sends, once.

    Before: the stored token still works and is refreshed. After: the access token held since the
    last refresh still works (a refresh starts hours before expiry), and the operator is told.
    """
    _send(_gateway(fake, sqlite_engine, clock), _message(1))  # a pair, as a running deployment has
    fake.hold_refresh = moment
    _doomed_worker(fake, str(sqlite_engine.url), margin=100_000)  # its token is due for a refresh
    assert _stored(sqlite_engine)["refreshing_by"] == "doomed"
    clock.now = datetime.now(UTC) + timedelta(minutes=2)  # the announcement is stale now
    gateway = _gateway(fake, sqlite_engine, clock, refresh_margin_seconds=100_000)
    (outcome,) = _send(gateway, _message(2))
    assert isinstance(outcome, SendResult) and [s["tracking_id"] for s in fake.sent] == ["1", "2"]
    row = _stored(sqlite_engine)
    assert row["refreshing_by"] is None
    if moment == "before":
        assert row["refresh_token"] in fake.refresh_tokens and row["problem"] is None
    else:
        assert "cấp quyền" in row["problem"]


def test_the_new_pair_is_committed_before_it_is_used(fake: ZaloFake, sqlite_engine: Engine) -> None:
    """SIGKILL while the first call with the new token is at Zalo: the row already holds the pair it came with."""
    fake.hold_path = "/template/info/v2"  # the first call that uses the new access token
    _doomed_worker(fake, str(sqlite_engine.url), margin=0)
    row = _stored(sqlite_engine)
    assert fake.used_access[-1] == row["access_token"] and row["refresh_token"] in fake.refresh_tokens


# -- the webhook ------------------------------------------------------------------------------


def _event(now: datetime, **overrides: object) -> dict[str, object]:
    stamp = str(int(now.timestamp() * 1000))
    event = {"app_id": APP_ID, "sender": {"id": OA_ID}, "recipient": {"id": "84905123456"},
             "event_name": "user_received_message", "timestamp": stamp,
             "message": {"delivery_time": stamp, "msg_id": "15a0cc0bbb13bd4ce403", "tracking_id": "41"}}  # fmt: skip
    return {**event, **overrides}


def _signed(body: bytes, event: dict[str, object], first: str = APP_ID, secret: str = APP_SECRET) -> dict[str, str]:
    mac = hashlib.sha256(first.encode() + body + str(event["timestamp"]).encode() + secret.encode()).hexdigest()
    return {"X-ZEvent-Signature": f"mac={mac}", "X-ZEvent-Server": "ZNS"}


def _webhook(fake: ZaloFake, now: datetime, **overrides: object) -> tuple[ZaloGatewaySettings, bytes, dict]:
    event = _event(now, **overrides)
    body = json.dumps(event, ensure_ascii=False).encode()
    return _settings(fake), body, _signed(body, event)


def test_a_signed_delivery_receipt_is_a_delivered_report(fake: ZaloFake, now: datetime) -> None:
    """Zalo's user_received_message: delivered at its delivery_time, by msg_id, the raw body kept."""
    settings, body, headers = _webhook(fake, now)
    (report,) = parse_webhook(settings, headers, body, now + timedelta(seconds=3), gateway="zalo-oa")
    assert report.provider_id == "15a0cc0bbb13bd4ce403" and report.status is ReportStatus.DELIVERED
    assert report.at == now and report.gateway == "zalo-oa" and report.raw == body.decode()


def test_a_receipt_names_our_delivery_by_its_tracking_id(fake: ZaloFake, now: datetime) -> None:
    """tracking_id is the delivery id we sent: the report carries it; one that is not ours carries none."""
    settings, body, headers = _webhook(fake, now)
    assert [r.delivery_id for r in parse_webhook(settings, headers, body, now)] == [41]
    message = {"delivery_time": str(int(now.timestamp() * 1000)), "msg_id": "m1", "tracking_id": "camp42-x"}
    settings, body, headers = _webhook(fake, now, message=message)
    assert [r.delivery_id for r in parse_webhook(settings, headers, body, now)] == [None]


@pytest.mark.parametrize("fault", ["unsigned", "forged", "tampered", "not json"])
def test_a_webhook_that_is_not_zalos_is_rejected(fake: ZaloFake, now: datetime, fault: str) -> None:
    """No signature, a wrong one, a body changed after signing, or no JSON: WebhookRejected saying which."""
    settings, body, headers = _webhook(fake, now)
    if fault == "unsigned":
        headers = {}
    elif fault == "forged":
        headers = {"X-ZEvent-Signature": "mac=" + "0" * 64}
    elif fault == "tampered":
        body = body.replace(b"15a0cc0bbb13bd4ce403", b"15a0cc0bbb13bd4ce404")
    else:
        body = b"<xml/>"
    with pytest.raises(WebhookRejected, match="signature|Signature|JSON"):
        parse_webhook(settings, headers, body, now)


def test_an_event_older_than_five_minutes_is_rejected(fake: ZaloFake, now: datetime) -> None:
    """A correctly signed event replayed six minutes later is refused."""
    settings, body, headers = _webhook(fake, now)
    assert parse_webhook(settings, headers, body, now + timedelta(minutes=4, seconds=59))
    with pytest.raises(WebhookRejected, match="5 minutes"):
        parse_webhook(settings, headers, body, now + timedelta(minutes=6))


def test_the_signature_formula_is_configurable(fake: ZaloFake, now: datetime) -> None:
    """oa_id first and the OA secret key: refused by the default formula, accepted once configured."""
    event = _event(now)
    body = json.dumps(event).encode()
    headers = _signed(body, event, first=OA_ID, secret="oa-secret-key")
    with pytest.raises(WebhookRejected):
        parse_webhook(_settings(fake), headers, body, now)
    configured = _settings(fake, webhook_signature="oa_id+body+timestamp+secret", webhook_secret="oa-secret-key")
    assert len(parse_webhook(configured, headers, body, now)) == 1


def test_other_events_and_oa_chat_deliveries_give_no_report(fake: ZaloFake, now: datetime) -> None:
    """A template status change, and an OA chat delivery (no delivery_time), are signed but no receipts."""
    for overrides in ({"event_name": "change_template_status"}, {"message": {"msg_id": "abc"}}):
        settings, body, headers = _webhook(fake, now, **overrides)
        assert parse_webhook(settings, headers, body, now) == []


def test_a_bad_signature_formula_is_a_config_error() -> None:
    """webhook_signature must join known terms with '+' and include the body and the secret."""
    with pytest.raises(ValueError, match="body và secret"):
        ZaloGatewaySettings(webhook_signature="app_id+timestamp")


# -- through the dispatch loop ----------------------------------------------------------------


def _zalo_blast(
    engine: Engine, regions, fake: ZaloFake, tmp_path: Path, channel: str, now: datetime, **environ: str
) -> tuple[Worker, SimulatorGateway, int]:
    """200 people of Đà Nẵng, a running blast of an alert with a [zalo] block, a worker: Zalo, else the simulator."""
    people(engine, regions, now, tmp_path, 200, seed=3)
    catalogue(engine, now, [ALERT])
    settings = load_settings(None, {
        "CANHBAO_ROUTES": '{"default": ["simulator"], "zalo": ["zalo"]}', "CANHBAO_GATEWAYS__ZALO__KIND": "zalo",
        "CANHBAO_GATEWAYS__ZALO__BASE_URL": fake.url, "CANHBAO_GATEWAYS__ZALO__OAUTH_URL": fake.url,
        "CANHBAO_GATEWAYS__ZALO__APP_ID": APP_ID, "CANHBAO_GATEWAYS__ZALO__APP_SECRET": APP_SECRET,
        "CANHBAO_GATEWAYS__ZALO__REFRESH_TOKEN": "refresh-0", "CANHBAO_GATEWAYS__SIMULATOR__REPORTS": "false",
        "CANHBAO_DISPATCH__RECEIPT_TIMEOUT_SECONDS": "0", "CANHBAO_DISPATCH__REPORT_WAIT_SECONDS": "0", **environ,
    })  # fmt: skip
    clock = Clock(now)

    async def passing(seconds: float) -> None:
        clock.advance(seconds)

    segment = resolve(SegmentSpec(provinces=("Đà Nẵng",)), regions)
    with engine.begin() as conn:
        request = blasts.BlastRequest(ALERT, segment, channel=channel)
        blast_id, _ = blasts.create(conn, request, "liaison", settings, regions, now)
        blasts.approve(conn, blast_id, "chief", now)
    simulator = SimulatorGateway(settings.gateways.simulator, clock)
    zalo = ZaloGateway(settings.gateways.get("zalo"), engine, clock, "w1")  # type: ignore[arg-type]
    zalo.name = "zalo"
    gateways = {"zalo": zalo, "simulator": simulator}
    return Worker(engine, gateways, settings, regions, clock, "w1", sleep=passing), simulator, blast_id


def _run(worker: Worker) -> None:
    async def go() -> None:
        await worker.run(until_idle=True)
        for gateway in worker.gateways.values():
            await gateway.close()

    asyncio.run(go())


def test_a_zalo_blast_carries_the_alerts_template_and_data(engine: Engine, regions, fake, tmp_path, now) -> None:
    """The worker sends each Zalo message with the alert's template id and its params filled per region, once."""
    worker, _, blast_id = _zalo_blast(engine, regions, fake, tmp_path, "zalo", now)
    _run(worker)
    with engine.connect() as conn:
        rows = conn.execute(select(deliveries.c.id, deliveries.c.status).where(deliveries.c.blast_id == blast_id)).all()
    assert rows and {status for _, status in rows} == {"sent"}
    assert sorted(int(s["tracking_id"]) for s in fake.sent) == sorted(i for i, _ in rows)
    assert {json.dumps(s["template_data"], ensure_ascii=False) for s in fake.sent} == {
        json.dumps({"ten_tinh": "Thành phố Đà Nẵng", "noi_dung": "Giả danh công an gọi video"}, ensure_ascii=False)
    }


def test_a_zalo_blast_refused_at_night_waits_until_six(engine: Engine, regions, fake, tmp_path, now) -> None:
    """-133 in a `zalo` blast: the messages stay queued, due at 06:00 in Vietnam, not failed."""
    worker, _, blast_id = _zalo_blast(engine, regions, fake, tmp_path, "zalo", now)
    fake.next_errors = [-133] * 1000
    _run(worker)
    with engine.connect() as conn:
        rows = conn.execute(select(deliveries.c.status, deliveries.c.next_attempt_at)
                            .where(deliveries.c.blast_id == blast_id)).all()  # fmt: skip
    morning = datetime(2026, 11, 23, 23, 0, tzinfo=UTC)  # 06:00 on the 24th in Hà Nội
    assert {status for status, _ in rows} == {"queued"}
    assert {utc(at) for _, at in rows} == {morning}


def test_a_used_up_quota_in_zalo_then_sms_sends_sms_at_once(engine: Engine, regions, fake, tmp_path, now) -> None:
    """-144: Zalo is asked once (one request at a time here); every Zalo message goes by SMS instead, none twice."""
    one_at_a_time = {"CANHBAO_GATEWAYS__ZALO__CONCURRENCY": "1"}
    worker, simulator, blast_id = _zalo_blast(engine, regions, fake, tmp_path, "zalo_then_sms", now, **one_at_a_time)
    fake.remaining_quota = 0
    _run(worker)
    with engine.connect() as conn:
        rows = conn.execute(select(deliveries.c.id, deliveries.c.channel, deliveries.c.status)
                            .where(deliveries.c.blast_id == blast_id)).all()  # fmt: skip
    assert fake.calls["/message/template"] == 1 and not fake.sent
    assert {(channel, status) for _, channel, status in rows} == {("sms", "sent")}
    assert sorted(m.delivery_id for m in simulator.accepted) == sorted(i for i, _, _ in rows)


def _receipt(fake: ZaloFake, now: datetime, msg_id: str, delivery_id: int) -> list:
    """The reports of a signed delivery receipt for `msg_id`, tracking `delivery_id`."""
    event = _event(now, message={"delivery_time": str(int(now.timestamp() * 1000)), "msg_id": msg_id,
                                 "tracking_id": str(delivery_id)})  # fmt: skip
    body = json.dumps(event).encode()
    return parse_webhook(_settings(fake), _signed(body, event), body, now + timedelta(seconds=1))


def _lost_send(engine: Engine, blast_id: int, status: str) -> int:
    """One delivery of the blast as if its worker never recorded Zalo's answer: `status`, no provider id, no ref."""
    with engine.begin() as conn:
        delivery_id, provider_id = conn.execute(select(deliveries.c.id, deliveries.c.provider_id)
                                                .where(deliveries.c.blast_id == blast_id).limit(1)).one()  # fmt: skip
        conn.execute(delete(provider_refs).where(provider_refs.c.provider_id == provider_id))
        conn.execute(update(deliveries).where(deliveries.c.id == delivery_id).values(status=status, provider_id=None))
    return delivery_id


def test_a_receipt_for_a_send_not_recorded_is_matched_by_its_tracking_id(engine, regions, fake, tmp_path, now) -> None:
    """The worker died after Zalo took the message (left unknown): the receipt, by tracking_id, makes it delivered."""
    worker, _, blast_id = _zalo_blast(engine, regions, fake, tmp_path, "zalo", now)
    _run(worker)
    delivery_id = _lost_send(engine, blast_id, "unknown")
    with engine.begin() as conn:
        assert queue.apply_reports(conn, _receipt(fake, now, "never-recorded", delivery_id)) == 1
        assert conn.execute(select(deliveries.c.status).where(deliveries.c.id == delivery_id)).scalar() == "delivered"
        kept = conn.execute(select(delivery_reports.c.delivery_id, delivery_reports.c.provider_id)).all()
    assert (delivery_id, "never-recorded") in kept


def test_a_receipt_before_the_send_is_recorded_is_applied_when_it_is(engine, regions, fake, tmp_path, now) -> None:
    """A receipt for a message its worker has not recorded yet (still sending) waits, and applies once it is."""
    worker, _, blast_id = _zalo_blast(engine, regions, fake, tmp_path, "zalo", now)
    _run(worker)
    delivery_id = _lost_send(engine, blast_id, "sending")
    with engine.begin() as conn:
        assert queue.apply_reports(conn, _receipt(fake, now, "m-early", delivery_id)) == 0
        queue.record_sent(conn, "zalo", now, [(delivery_id, "m-early", 1)])
        assert conn.execute(select(deliveries.c.status).where(deliveries.c.id == delivery_id)).scalar() == "delivered"


def test_a_duplicated_receipt_changes_nothing(engine: Engine, regions, fake, tmp_path, now) -> None:
    """The same signed receipt twice (Zalo retries): delivered once, the second applies to nothing."""
    worker, _, blast_id = _zalo_blast(engine, regions, fake, tmp_path, "zalo", now)
    _run(worker)
    with engine.connect() as conn:
        delivery_id, provider_id = conn.execute(select(deliveries.c.id, deliveries.c.provider_id)
                                                .where(deliveries.c.blast_id == blast_id).limit(1)).one()  # fmt: skip
    event = _event(now, message={"delivery_time": str(int(now.timestamp() * 1000)), "msg_id": provider_id,
                                 "tracking_id": str(delivery_id)})  # fmt: skip
    body = json.dumps(event).encode()
    applied = []
    for _ in range(2):
        reports = parse_webhook(_settings(fake), _signed(body, event), body, now + timedelta(seconds=1))
        with engine.begin() as conn:
            applied.append(queue.apply_reports(conn, reports))
    with engine.connect() as conn:
        assert conn.execute(select(deliveries.c.status).where(deliveries.c.id == delivery_id)).scalar() == "delivered"
    assert applied == [1, 0]
