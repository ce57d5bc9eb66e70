"""The web face: /healthz, and Twilio's signed status callbacks and incoming messages, forged or true."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx2
import pytest
import structlog
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select, update
from structlog.testing import capture_logs
from twilio.request_validator import HMAC_SHA256

from dispatcher import blasts, db, health
from dispatcher.config import DatabaseSettings, Settings, load_settings
from dispatcher.dispatch import Worker
from dispatcher.gateways import build, twilio
from dispatcher.health import CircuitState
from dispatcher.models import audit_log, deliveries, delivery_reports, inbox, subscribers
from dispatcher.segments import SegmentSpec, resolve
from dispatcher.subscribers import find_subscriber, held_refusal
from dispatcher.web import create_app, hooks
from dispatcher.web.writer import ReportWriter
from tests.clock import Clock
from tests.twilio_fake import ACCOUNT_SID, AUTH_TOKEN, SERVICE_SID, TwilioFake
from tests.world import catalogue, people

PUBLIC = "https://canhbao.example.vn"
STATUS, INBOUND = f"{PUBLIC}/hooks/twilio/status", f"{PUBLIC}/hooks/twilio/inbound"


def _environ(fake: TwilioFake) -> dict[str, str]:
    return {"CANHBAO_ROUTES": '{"default": ["twilio"]}', "CANHBAO_DISPATCH__REPORT_WAIT_SECONDS": "0",
            "CANHBAO_GATEWAYS__TWILIO__ACCOUNT_SID": ACCOUNT_SID, "CANHBAO_GATEWAYS__TWILIO__AUTH_TOKEN": AUTH_TOKEN,
            "CANHBAO_GATEWAYS__TWILIO__MESSAGING_SERVICE_SID": SERVICE_SID,
            "CANHBAO_GATEWAYS__TWILIO__BASE_URL": fake.base_url,
            "CANHBAO_GATEWAYS__TWILIO__PUBLIC_URL": PUBLIC}  # fmt: skip


def send_blast(engine: Engine, regions: Any, settings: Settings, now: datetime,
               alert: str = "gia-danh-cong-an-goi-video") -> int:  # fmt: skip
    """An approved blast of `alert` to everyone imported, sent through the Twilio gateway by a worker until idle."""
    segment = resolve(SegmentSpec(provinces=("Đà Nẵng",)), regions)
    with engine.begin() as conn:
        request = blasts.BlastRequest(alert, segment, not_after=now + timedelta(hours=2))
        blast_id, _ = blasts.create(conn, request, "liaison", settings, regions, now)
        blasts.approve(conn, blast_id, "chief", now)
    worker = Worker(engine, {"twilio": build("twilio", settings.gateways)}, settings, regions, Clock(now), "w1")

    async def run() -> None:
        try:
            await worker.run(until_idle=True)
        finally:
            await worker.gateways["twilio"].close()

    asyncio.run(run())
    return blast_id


@pytest.fixture
def sent(engine: Engine, regions, now, tmp_path) -> Iterator[tuple[Engine, TwilioFake, Settings, TestClient]]:
    """Five people sent a blast through a loopback Twilio; the web app over the same database."""
    people(engine, regions, now, tmp_path, 5, seed=4)
    catalogue(engine, now, ["gia-danh-cong-an-goi-video"])
    with TwilioFake() as fake:
        settings = load_settings(None, _environ(fake))
        send_blast(engine, regions, settings, now)
        with TestClient(create_app(settings, engine, lambda: now + timedelta(minutes=1))) as client:
            yield engine, fake, settings, client


def _post(client: TestClient, fake: TwilioFake, form: dict[str, str], signature: str | None = "sign",
          url: str = STATUS) -> Any:  # fmt: skip
    """POST `form` as Twilio would to `url`, signed over that public URL (or with `signature` as given, None: none)."""
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if signature is not None:
        headers["X-Twilio-Signature"] = fake.sign(url, form) if signature == "sign" else signature
    return client.post(url.removeprefix(PUBLIC), content=urlencode(form), headers=headers)


def _rows(engine: Engine) -> dict[str, tuple[str, str | None]]:
    """provider id → (status, error code) of every delivery."""
    with engine.connect() as conn:
        found = conn.execute(select(deliveries.c.provider_id, deliveries.c.status, deliveries.c.error_code))
        return {pid: (status, code) for pid, status, code in found}


def test_healthz_answers_when_the_database_does(sqlite_engine: Engine) -> None:
    """GET /healthz is 200 with status ok."""
    with TestClient(create_app(load_settings(None, {}), sqlite_engine)) as client:
        response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_a_signed_callback_moves_the_message_on(sent) -> None:
    """`delivered` signed by Twilio over the public URL: 204 and the delivery is delivered."""
    engine, fake, _, client = sent
    sid = fake.messages[0]["sid"]
    assert _post(client, fake, fake.status_form(sid, "delivered")).status_code == 204
    assert _rows(engine)[sid] == ("delivered", None)


def test_failures_in_callbacks_are_read_by_twilios_error_code(sent) -> None:
    """30005 (unknown handset) can never arrive: undeliverable; 30003 (unreachable) is a failure that may pass."""
    engine, fake, _, client = sent
    first, second = fake.messages[0]["sid"], fake.messages[1]["sid"]
    assert _post(client, fake, fake.status_form(first, "undelivered", 30005)).status_code == 204
    assert _post(client, fake, fake.status_form(second, "failed", 30003)).status_code == 204
    rows = _rows(engine)
    assert rows[first] == ("undeliverable", "30005") and rows[second] == ("failed", "30003")


@pytest.mark.parametrize("how", ["unsigned", "forged", "tampered", "other url", "other account"])
def test_a_callback_twilio_did_not_sign_is_refused_and_changes_nothing(sent, how: str) -> None:
    """Unsigned, signed with another token, altered after signing, signed for another URL or account: 403."""
    engine, fake, _, client = sent
    form = fake.status_form(fake.messages[0]["sid"], "delivered")
    before = _rows(engine)
    signature = {"unsigned": None, "forged": TwilioFake(auth_token="not-ours").sign(STATUS, form),
                 "tampered": fake.sign(STATUS, {**form, "MessageStatus": "sent"}),
                 "other url": fake.sign("http://testserver/hooks/twilio/status", form),
                 "other account": "sign"}[how]  # fmt: skip
    if how == "other account":
        form["AccountSid"] = "AC" + "f" * 32
    with structlog.testing.capture_logs() as logs:
        response = _post(client, fake, form, signature)
    assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden"
    assert "X-Twilio-Signature" in response.json()["error"]["message"]
    assert _rows(engine) == before
    assert [e["event"] for e in logs] == ["webhook.refused"]


@pytest.mark.parametrize("declared", [True, False])
def test_a_callback_too_large_to_be_a_providers_is_refused_unread(sent, declared: bool) -> None:
    """A body past 64 KB (said in Content-Length, or streamed without it): 413, nothing changes."""
    engine, fake, _, client = sent
    form = {**fake.status_form(fake.messages[0]["sid"], "delivered"), "Padding": "x" * (hooks.HOOK_MAX_BYTES + 1)}
    before = _rows(engine)
    body = urlencode(form).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": fake.sign(STATUS, form)}
    content = body if declared else iter([body[i : i + 8192] for i in range(0, len(body), 8192)])
    response = client.post(STATUS.removeprefix(PUBLIC), content=content, headers=headers)
    assert response.status_code == 413 and response.json()["error"]["code"] == "too_large"
    assert "64 KB" in response.json()["error"]["message"]
    assert _rows(engine) == before


SHARED_KEY, SHARED_KEY_ID = "shared-key-secret-0123456789abcdef", "webhooks_sharedkey_0123"


def _shared_key_app(sent, now: datetime, **keys: str) -> TestClient:
    """The web app of `sent`, its Twilio gateway given a SharedKey (secret, and the other keys as given)."""
    engine, fake, _, _ = sent
    environ = {**_environ(fake), "CANHBAO_GATEWAYS__TWILIO__WEBHOOK_SHARED_KEY": SHARED_KEY,
               **{f"CANHBAO_GATEWAYS__TWILIO__{k.upper()}": v for k, v in keys.items()}}  # fmt: skip
    return TestClient(create_app(load_settings(None, environ), engine, lambda: now + timedelta(minutes=1)))


def _shared_key_post(client: TestClient, fake: TwilioFake, form: dict[str, str], signature: str,
                     settings: str = f"key={SHARED_KEY_ID},algorithm=HMAC_SHA256") -> int:  # fmt: skip
    """POST `form` with `signature` and X-Twilio-Webhooks-Signature-Settings, as Twilio does under a Webhook Rule."""
    headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature,
               "X-Twilio-Webhooks-Signature-Settings": settings}  # fmt: skip
    return client.post("/hooks/twilio/status", content=urlencode(form), headers=headers).status_code


def test_a_callback_signed_with_a_shared_key_in_hmac_sha256_is_believed(sent, now) -> None:
    """A Webhook Setting's SharedKey and HMAC-SHA256: 204 and the delivery moves on; the auth token still works."""
    engine, fake, _, _ = sent
    first, second = fake.messages[0]["sid"], fake.messages[1]["sid"]
    with _shared_key_app(sent, now, webhook_shared_key_id=SHARED_KEY_ID) as client:
        form = fake.status_form(first, "delivered")
        assert _shared_key_post(client, fake, form, fake.sign(STATUS, form, SHARED_KEY, HMAC_SHA256)) == 204
        assert _post(client, fake, fake.status_form(second, "delivered")).status_code == 204
    assert _rows(engine)[first] == _rows(engine)[second] == ("delivered", None)


@pytest.mark.parametrize("how", ["forged", "tampered", "auth token", "sha1 said sha256", "other key id", "no key"])
def test_a_shared_key_signature_that_does_not_hold_is_refused(sent, now, how: str) -> None:
    """Another secret, an altered form, the auth token or SHA-1 where SHA-256 is announced, another key, none: 403."""
    engine, fake, _, _ = sent
    form = fake.status_form(fake.messages[0]["sid"], "delivered")
    signature = {"forged": fake.sign(STATUS, form, "not-our-key", HMAC_SHA256),
                 "tampered": fake.sign(STATUS, {**form, "MessageStatus": "sent"}, SHARED_KEY, HMAC_SHA256),
                 "auth token": fake.sign(STATUS, form, None, HMAC_SHA256),
                 "sha1 said sha256": fake.sign(STATUS, form, SHARED_KEY)}.get(how)  # fmt: skip
    settings = {"other key id": "key=webhooks_sharedkey_9999,algorithm=HMAC_SHA256"}.get(how)
    before = _rows(engine)
    if how == "no key":  # the gateway has no SharedKey configured
        client = TestClient(create_app(sent[2], engine, lambda: now))
    else:
        client = _shared_key_app(sent, now, webhook_shared_key_id=SHARED_KEY_ID)
    with client:
        status = _shared_key_post(client, fake, form, signature or fake.sign(STATUS, form, SHARED_KEY, HMAC_SHA256),
                                  **({"settings": settings} if settings else {}))  # fmt: skip
    assert status == 403 and _rows(engine) == before


def test_replayed_duplicated_and_late_callbacks_change_nothing(sent) -> None:
    """The same signed `delivered` again, then a late `sent` and `undelivered`: it stays as first recorded."""
    engine, fake, _, client = sent
    sid = fake.messages[0]["sid"]
    delivered = fake.status_form(sid, "delivered")
    _post(client, fake, delivered)
    with engine.connect() as conn:
        first = conn.execute(select(deliveries.c.finished_at).where(deliveries.c.provider_id == sid)).scalar_one()
    for form in (delivered, delivered, fake.status_form(sid, "sent"), fake.status_form(sid, "undelivered", 30003)):
        assert _post(client, fake, form).status_code == 204
    with engine.connect() as conn:
        again = conn.execute(select(deliveries.c.finished_at).where(deliveries.c.provider_id == sid)).scalar_one()
    assert _rows(engine)[sid] == ("delivered", None) and again == first


def test_callbacks_arriving_together_are_all_stored_before_they_are_answered(sent) -> None:
    """Every message's `delivered` posted at once: each answered 204, and every delivery delivered."""
    engine, fake, settings, client = sent
    app = client.app
    forms = [fake.status_form(m["sid"], "delivered") for m in fake.messages]

    async def post_all() -> list[int]:
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url=PUBLIC) as http:
            answers = await asyncio.gather(*(http.post("/hooks/twilio/status", data=form,
                                                       headers={"X-Twilio-Signature": fake.sign(STATUS, form)})
                                             for form in forms))  # fmt: skip
        return [answer.status_code for answer in answers]

    assert asyncio.run(post_all()) == [204] * len(forms)
    assert {status for status, _ in _rows(engine).values()} == {"delivered"}


def test_a_callback_for_an_id_we_never_sent_is_answered_not_crashed_on(sent) -> None:
    """A signed callback for a MessageSid no delivery has: 204, and no delivery changes."""
    engine, fake, _, client = sent
    before = _rows(engine)
    assert _post(client, fake, fake.status_form("SM" + "0" * 32, "delivered")).status_code == 204
    assert _rows(engine) == before


def test_a_refusal_reported_by_twilio_opts_the_person_out(sent) -> None:
    """ErrorCode 21610 in a callback: the message is undeliverable and the person is opted out, audited as Twilio's."""
    engine, fake, _, client = sent
    message = fake.messages[0]
    assert _post(client, fake, fake.status_form(message["sid"], "failed", 21610)).status_code == 204
    with engine.connect() as conn:
        opted = conn.execute(select(subscribers.c.opted_out_at).where(subscribers.c.msisdn == message["To"]))
        actors = conn.execute(select(audit_log.c.actor).where(audit_log.c.action == "subscriber.opt_out")).scalars()
        assert opted.scalar_one() is not None and list(actors) == ["gateway:twilio"]
    assert _rows(engine)[message["sid"]] == ("undeliverable", "21610")


@pytest.mark.parametrize("code", [30007, 21408, 20003])
def test_a_callback_refusing_the_gateway_is_told_to_the_operator_and_opens_its_circuit(sent, code: int) -> None:
    """ErrorCode 30007 (filtered), 21408 (region not allowed) or 20003: an error log and the circuit open, with why."""
    engine, fake, _, client = sent
    sid = fake.messages[0]["sid"]
    with structlog.testing.capture_logs() as logs:
        assert _post(client, fake, fake.status_form(sid, "undelivered", code)).status_code == 204
    [told] = [e for e in logs if e["log_level"] == "error"]
    assert (told["event"], told["gateway"], told["code"]) == ("twilio.gateway_disabled", "twilio", str(code))
    with engine.connect() as conn:
        circuit = health.load(conn)["twilio"]
    assert circuit.state is CircuitState.OPEN and circuit.last_error.startswith(f"{code}: ") and sid in told["error"]
    assert _rows(engine)[sid] == ("failed", str(code))  # the gateway's fault, not the number's: not undeliverable


def test_a_gateway_a_callback_refused_is_skipped_by_every_worker(sent, regions, now) -> None:
    """After a 30007 callback, the next blast's worker sends nothing through Twilio: its messages wait, queued."""
    engine, fake, settings, client = sent
    catalogue(engine, now, ["phat-nguoi-gia-mao"])
    _post(client, fake, fake.status_form(fake.messages[0]["sid"], "undelivered", 30007))
    before = len(fake.messages)
    blast_id = send_blast(engine, regions, settings, now + timedelta(minutes=1), "phat-nguoi-gia-mao")
    with engine.connect() as conn:
        assert {k for k, v in blasts.counts(conn, blast_id).items() if v} == {"queued"}
    assert len(fake.messages) == before


def test_malformed_callbacks_are_refused_with_400(sent) -> None:
    """Signed but without a MessageSid, with an unknown MessageStatus, or a field given twice: 400, nothing changes."""
    engine, fake, _, client = sent
    before = _rows(engine)
    form = fake.status_form(fake.messages[0]["sid"], "delivered")
    no_sid = {k: v for k, v in form.items() if k not in ("MessageSid", "SmsSid")}
    odd = {**form, "MessageStatus": "exploded", "SmsStatus": "exploded"}
    assert _post(client, fake, no_sid).status_code == 400
    assert _post(client, fake, odd).status_code == 400
    twice = urlencode(form) + "&MessageStatus=failed"
    headers = {"X-Twilio-Signature": fake.sign(STATUS, form), "Content-Type": "application/x-www-form-urlencoded"}
    assert client.post("/hooks/twilio/status", content=twice, headers=headers).status_code == 400
    assert _rows(engine) == before


def test_an_incoming_message_is_verified_and_acknowledged(sent) -> None:
    """A signed incoming SMS gets 200 and an empty TwiML reply; an unsigned one 403 and changes nothing."""
    engine, fake, _, client = sent
    form = fake.inbound_form("+84905123456", "HUY")
    assert _post(client, fake, form, None, url=INBOUND).status_code == 403
    with engine.connect() as conn:
        assert held_refusal(conn, "+84905123456") is None
    response = _post(client, fake, form, url=INBOUND)
    assert response.status_code == 200 and response.text.endswith("<Response></Response>")


def test_an_incoming_huy_opts_out_and_other_words_wait_in_the_inbox(sent) -> None:
    """'Tôi muốn HỦY' to our Twilio number opts that number out (audited as inbound); a question goes to the inbox."""
    engine, fake, _, client = sent
    assert _post(client, fake, fake.inbound_form("+84905123456", "Tôi muốn HỦY"), url=INBOUND).status_code == 200
    assert _post(client, fake, fake.inbound_form("+84905123457", "Ai gửi tin này?"), url=INBOUND).status_code == 200
    with engine.connect() as conn:
        number = "+84905123456"
        refused = (find_subscriber(conn, number) or {}).get("opted_out_at") or held_refusal(conn, number)
        kept = conn.execute(select(inbox.c.text)).scalars().all()
        actors = conn.execute(select(audit_log.c.actor).where(audit_log.c.action == "subscriber.opt_out")).scalars()
        assert "inbound" in set(actors)
    assert refused is not None and kept == ["Ai gửi tin này?"]


def test_an_incoming_message_posted_twice_is_handled_once(sent) -> None:
    """Twilio retrying its webhook (same MessageSid) gets 200 again, and the text is kept once."""
    engine, fake, _, client = sent
    form = fake.inbound_form("+84905123457", "Ai gửi tin này?")
    assert [_post(client, fake, form, url=INBOUND).status_code for _ in range(2)] == [200, 200]
    with engine.connect() as conn:
        assert conn.execute(select(inbox.c.text)).scalars().all() == ["Ai gửi tin này?"]


def _started(command: str, sent, tmp_path: Path) -> tuple[subprocess.Popen, str, int | None]:
    """`canhbao <command> --port 0` on the sent world's database: the process, where it listens, its /healthz status."""
    engine, fake, _, _ = sent
    (tmp_path / "none.toml").write_text("", encoding="utf-8")
    env = {**os.environ, **_environ(fake), "CANHBAO_CONFIG": str(tmp_path / "none.toml"),
           "CANHBAO_DATABASE__URL": engine.url.render_as_string(hide_password=False)}  # fmt: skip
    process = subprocess.Popen([sys.executable, "-m", "dispatcher", command, "--port", "0"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        said = (re.search(r"http://127\.0\.0\.1:(\d+)", process.stderr.readline()) for _ in range(50))
        base = f"http://127.0.0.1:{next(found for found in said if found).group(1)}"
        deadline = time.monotonic() + 20
        while (health := _get(f"{base}/healthz")) != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
    except BaseException:  # it never said where it listens: not left running
        process.kill()
        process.communicate(timeout=20)
        raise
    return process, base, health


def test_canhbao_web_serves_callbacks_on_a_loopback_port(sent, tmp_path: Path) -> None:
    """`canhbao web --port 0` says where it listens, answers /healthz, and applies what the fake Twilio posts to it."""
    engine, fake, _, _ = sent
    web, base, health = _started("web", sent, tmp_path)
    try:
        sid = fake.messages[0]["sid"]
        status = fake.post(STATUS, f"{base}/hooks/twilio/status", fake.status_form(sid, "delivered"))
    finally:
        web.terminate()
        _, rest = web.communicate(timeout=20)
    assert health == 200 and status == 204
    assert _rows(engine)[sid] == ("delivered", None)
    assert web.returncode == 0 and "Đã dừng cổng web." in rest


def test_canhbao_serve_serves_the_web_face_beside_the_worker(sent, tmp_path: Path) -> None:
    """`canhbao serve --port 0` says where its web face listens, answers /healthz there, stops cleanly on SIGTERM."""
    serve, _base, health = _started("serve", sent, tmp_path)
    serve.send_signal(signal.SIGTERM)
    serve.communicate(timeout=30)
    assert health == 200 and serve.returncode == 0


def _get(url: str) -> int | None:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except OSError:
        return None


# -- Zalo's webhook -------------------------------------------------------------------------

ZALO_APP, ZALO_OA, ZALO_SECRET = "1234567890", "987654321", "zalo-app-secret"


def _zalo_call(now: datetime, secret: str = ZALO_SECRET) -> tuple[bytes, dict[str, str]]:
    """A user_received_message event as Zalo posts it, signed with `secret` (Zalo's default formula)."""
    stamp = str(int(now.timestamp() * 1000))
    event = {"app_id": ZALO_APP, "sender": {"id": ZALO_OA}, "recipient": {"id": "84905123456"},
             "event_name": "user_received_message", "timestamp": stamp,
             "message": {"delivery_time": stamp, "msg_id": "zmsg-1", "tracking_id": "41"}}  # fmt: skip
    body = json.dumps(event).encode()
    mac = hashlib.sha256(ZALO_APP.encode() + body + stamp.encode() + secret.encode()).hexdigest()
    return body, {"X-ZEvent-Signature": f"mac={mac}", "Content-Type": "application/json"}


def test_a_signed_zalo_receipt_is_stored_and_a_forged_one_refused(engine: Engine, now: datetime) -> None:
    """POST /hooks/zalo keeps a signed receipt (for an id not ours yet: kept for later) and refuses a forged one."""
    environ = {"CANHBAO_GATEWAYS__ZALO__APP_ID": ZALO_APP, "CANHBAO_GATEWAYS__ZALO__OA_ID": ZALO_OA,
               "CANHBAO_GATEWAYS__ZALO__APP_SECRET": ZALO_SECRET}  # fmt: skip
    settings = load_settings(None, environ)
    with TestClient(create_app(settings, engine, lambda: now + timedelta(seconds=2))) as client:
        body, headers = _zalo_call(now, secret="not-ours")
        assert client.post("/hooks/zalo", content=body, headers=headers).status_code == 403
        with engine.connect() as conn:
            assert conn.execute(select(delivery_reports.c.id)).first() is None
        body, headers = _zalo_call(now)
        assert client.post("/hooks/zalo", content=body, headers=headers).status_code == 200
    with engine.connect() as conn:
        kept = conn.execute(select(delivery_reports.c.gateway, delivery_reports.c.provider_id)).all()
    assert kept == [("zalo", "zmsg-1")]


def test_a_report_batch_aborted_to_break_a_deadlock_is_written_again(sent, now) -> None:
    """On PostgreSQL, a batch that locks messages in the opposite order to another writer's (another web process)
    and is chosen to break the deadlock is written again: both writers' changes stand."""
    engine, fake, _, _ = sent
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's deadlock detection; SQLite writers take its one write lock in turn")
    first, second = (message["sid"] for message in fake.messages[:2])
    reports = [twilio.status_report(fake.status_form(sid, "delivered"), "twilio", now) for sid in (first, second)]
    writer = ReportWriter(engine, lambda: now)

    async def both() -> None:  # one batch: the first message locked first, then the second
        await asyncio.gather(*(writer.apply(report, None, "twilio") for report in reports))

    other = engine.connect()
    with capture_logs() as logs:
        with other.begin():
            other.execute(select(deliveries.c.id).where(deliveries.c.provider_id == second).with_for_update())
            thread = threading.Thread(target=asyncio.run, args=(both(),))
            thread.start()
            time.sleep(0.3)  # the writer now holds the first and waits for the second: waited longest, it is aborted
            other.execute(update(deliveries).where(deliveries.c.provider_id == first).values(error_code="other"))
        thread.join(30)
    other.close()
    assert [entry["attempt"] for entry in logs if entry["event"] == "webhook.write_retried"] == [1]
    assert _rows(engine)[first] == ("delivered", "other") and _rows(engine)[second] == ("delivered", None)


def test_two_writers_on_one_database_both_commit(sent, now) -> None:
    """Two web processes' report writers (each its own engine) applying at once: every report of both is stored."""
    engine, fake, _, _ = sent
    other = db.make_engine(DatabaseSettings(url=engine.url.render_as_string(hide_password=False)))
    sids = [message["sid"] for message in fake.messages]
    writers = [ReportWriter(engine, lambda: now), ReportWriter(other, lambda: now)]

    async def apply(writer: ReportWriter, mine: list[str]) -> None:
        forms = [fake.status_form(sid, "delivered") for sid in mine]
        await asyncio.gather(*(writer.apply(twilio.status_report(f, "twilio", now), None, "twilio") for f in forms))

    threads = [threading.Thread(target=asyncio.run, args=(apply(w, sids[i::2]),)) for i, w in enumerate(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    other.dispose()
    assert {sid: _rows(engine)[sid][0] for sid in sids} == dict.fromkeys(sids, "delivered")
