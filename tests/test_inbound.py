"""Inbound texts: an opt-out keyword refuses our messages (audited as inbound, naming the gateway),
anything else waits in the inbox; the worker drains every gateway's texts each tick."""

from __future__ import annotations

import asyncio
from datetime import datetime

import pytest
from sqlalchemy import Engine, select

from dispatcher.config import SimulatorSettings, load_settings
from dispatcher.dispatch import Worker
from dispatcher.gateways.fake import FakeGateway
from dispatcher.gateways.simulator import SimulatorGateway
from dispatcher.inbound import Received, is_opt_out, receive
from dispatcher.models import audit_log, inbox, subscribers
from dispatcher.subscribers import find_subscriber, held_refusal
from tests.clock import Clock
from tests.world import approved_blast, catalogue, people

UNKNOWN = "+84977000111"


def _stored(conn) -> list[dict]:
    """The inbox as stored, newest first (numbers unmasked)."""
    return [dict(row) for row in conn.execute(select(inbox).order_by(inbox.c.id.desc())).mappings()]


@pytest.fixture
def someone(engine: Engine, regions, now: datetime, tmp_path) -> str:
    """The number of one subscriber among five, none opted out."""
    people(engine, regions, now, tmp_path, 5, seed=2)
    with engine.connect() as conn:
        return conn.execute(select(subscribers.c.msisdn).limit(1)).scalar_one()


@pytest.mark.parametrize(
    "text",
    ["HUY", "hủy", "Huỷ đăng ký nhận tin", "HỦY", "tu choi", "TỪ CHỐI", "Tôi từ chối nhận tin", "tc", "Tc.",
     "STOP", "stop!", "TUCHOI"],
)  # fmt: skip
def test_every_opt_out_keyword_is_recognised_in_any_case_and_accent(text: str) -> None:
    """HUY, HỦY, TU CHOI, TỪ CHỐI, TC and STOP opt out, however written and with text around them."""
    assert is_opt_out(text)


@pytest.mark.parametrize(
    "text",
    ["ATC", "TCB chuyển khoản", "huyện Duy Xuyên", "STOPPED", "Cảm ơn công an", "Không từ chối", "đừng hủy", ""],
)
def test_a_keyword_inside_another_word_or_denied_is_not_an_opt_out(text: str) -> None:
    """A keyword only counts as a word of its own, and not after a denial (không, đừng)."""
    assert not is_opt_out(text)


def test_an_opt_out_text_opts_the_subscriber_out_and_the_audit_says_where_from(engine, someone, now) -> None:
    """The subscriber is opted out at the text's time; the audit names the inbound path and the gateway."""
    with engine.begin() as conn:
        assert receive(conn, someone.removeprefix("+"), "HUY", "viettel", now, raw="id:1") is Received.OPTED_OUT
        assert find_subscriber(conn, someone)["opted_out_at"] == now
        entry = conn.execute(select(audit_log).where(audit_log.c.action == "subscriber.opt_out")).mappings().one()
        assert conn.execute(select(inbox)).first() is None
    assert entry["actor"] == "inbound" and entry["detail"] == {
        "outcome": "subscriber", "via": "inbound", "gateway": "viettel", "cancelled_messages": 0
    }  # fmt: skip
    assert entry["subject"] != someone and "****" in entry["subject"]


def test_an_opt_out_from_a_number_not_held_is_kept_for_the_import(engine, now) -> None:
    """A refusal from a number we do not hold yet goes on the suppression list."""
    with engine.begin() as conn:
        assert receive(conn, "0977 000 111", "STOP", "twilio", now) is Received.OPTED_OUT
        assert held_refusal(conn, UNKNOWN) == now


def test_any_other_text_is_kept_in_the_inbox(engine, someone, now) -> None:
    """A text that is no opt-out is stored with its number, gateway, time and raw form; nobody is opted out."""
    with engine.begin() as conn:
        assert receive(conn, someone, "Cho hỏi tổng đài công an?", "viettel", now, raw="raw pdu") is Received.KEPT
        kept = _stored(conn)
        assert find_subscriber(conn, someone)["opted_out_at"] is None
    assert [(m["msisdn"], m["text"], m["gateway"], m["received_at"], m["raw"]) for m in kept] == [
        (someone, "Cho hỏi tổng đài công an?", "viettel", now, "raw pdu")
    ]


def test_a_keyword_from_a_sender_that_is_no_mobile_number_is_kept_not_applied(engine, now) -> None:
    """An opt-out from a short code or a foreign sender opts nobody out: an operator reads it in the inbox."""
    with engine.begin() as conn:
        assert receive(conn, "VIETTEL", "HUY", "viettel", now) is Received.KEPT
        assert [m["msisdn"] for m in _stored(conn)] == ["VIETTEL"]


def test_a_text_delivered_twice_is_kept_once(engine, someone, now) -> None:
    """The same (gateway, provider id) again is acknowledged and ignored: one inbox row."""
    with engine.begin() as conn:
        assert receive(conn, someone, "Ai đây?", "twilio", now, provider_id="SM1") is Received.KEPT
        assert receive(conn, someone, "Ai đây?", "twilio", now, provider_id="SM1") is Received.DUPLICATE
        assert len(_stored(conn)) == 1


def test_an_opt_out_delivered_twice_is_applied_and_audited_once(engine, someone, now) -> None:
    """A copy of an opt-out text changes nothing: one audit entry, the first refusal's time kept."""
    with engine.begin() as conn:
        assert receive(conn, someone, "HUY", "viettel", now, provider_id="mo-1") is Received.OPTED_OUT
        later = now.replace(hour=3)
        assert receive(conn, someone, "HUY", "viettel", later, provider_id="mo-1") is Received.DUPLICATE
        entries = conn.execute(select(audit_log).where(audit_log.c.action == "subscriber.opt_out")).all()
        assert len(entries) == 1 and find_subscriber(conn, someone)["opted_out_at"] == now


def test_the_same_id_from_two_gateways_is_two_texts(engine, someone, now) -> None:
    """Ids are each gateway's own: two SMSCs may give the same one to different texts."""
    with engine.begin() as conn:
        for gateway in ("viettel", "vinaphone"):
            assert receive(conn, someone, "Xin chào", gateway, now, provider_id="mo-7") is Received.KEPT
        assert len(_stored(conn)) == 2


def test_the_worker_drains_every_gateways_texts_each_tick(engine, someone, regions, now) -> None:
    """Texts a gateway received are handled by the next tick: the opt-out applied, the rest in the inbox."""
    viettel, twilio = FakeGateway("viettel"), FakeGateway("twilio")
    viettel.queue_text(someone, "Tôi muốn HỦY")
    twilio.queue_text(UNKNOWN, "Ai đây?")
    settings = load_settings(None, {"CANHBAO_ROUTES": '{"default": ["fake"]}'})
    worker = Worker(engine, {"viettel": viettel, "twilio": twilio}, settings, regions, Clock(now), "w1")
    asyncio.run(worker.tick())
    with engine.connect() as conn:
        assert find_subscriber(conn, someone)["opted_out_at"] == now
        assert [(m["msisdn"], m["gateway"]) for m in _stored(conn)] == [(UNKNOWN, "twilio")]
    assert viettel.inbound(now) == [] and twilio.inbound(now) == []


def test_the_simulator_plays_people_who_text_back_huy(engine, regions, now, tmp_path) -> None:
    """With `opt_out_replies = 1` every SMS the simulator accepted brings a HUY back, which opts its person out."""
    people(engine, regions, now, tmp_path, 40, seed=2)
    catalogue(engine, now, ["gia-danh-cong-an-goi-video"])
    settings = load_settings(None, {"CANHBAO_ROUTES": '{"default": ["simulator"]}',
                                    "CANHBAO_DISPATCH__REPORT_WAIT_SECONDS": "0"})  # fmt: skip
    simulator = SimulatorGateway(SimulatorSettings(opt_out_replies=1, reports=False))
    approved_blast(engine, regions, settings, now)
    worker = Worker(engine, {"simulator": simulator}, settings, regions, Clock(now), "w1")
    asyncio.run(worker.run(until_idle=True))
    asyncio.run(worker.tick())  # the replies of the last batch
    with engine.connect() as conn:
        refusing = select(subscribers.c.msisdn).where(subscribers.c.opted_out_at.is_not(None))
        refused = set(conn.execute(refusing).scalars())
    assert refused == {m.msisdn for m in simulator.accepted} and len(refused) > 30
