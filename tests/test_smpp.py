"""The SMPP gateway against the project's loopback SMSC: the wire, long messages, receipts and the SMSC's faults."""

from __future__ import annotations

import asyncio
import json
import struct
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from pydantic import SecretStr
from sqlalchemy import select
from structlog.testing import capture_logs

from dispatcher.config import SmppSettings
from dispatcher.gateways.base import (
    GatewayError,
    NotSentError,
    OutgoingMessage,
    PermanentError,
    ReportStatus,
    SendResult,
    TemporaryError,
    ThrottledError,
    UnknownOutcomeError,
)
from dispatcher.gateways.smpp import SmppGateway, id_forms
from dispatcher.smstext import GSM_CODEC, Encoding, measure
from tests import smsc as fake_smsc
from tests.smsc import Behaviour, Smsc

NOW = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)


@pytest.fixture
def smsc(request: pytest.FixtureRequest) -> Iterator[Smsc]:
    """A loopback SMSC; a test sets its faults with parametrize('smsc', [Behaviour(...)], indirect=True)."""
    with fake_smsc.running(getattr(request, "param", None) or Behaviour()) as running:
        yield running


def _gateway(smsc: Smsc, **settings) -> SmppGateway:
    values = {"port": smsc.port, "system_id": "canhbao", "source_addr": "CONGAN-DN", "password": SecretStr("pw"),
              "reconnect_max_seconds": 0.2, **settings}  # fmt: skip
    gateway = SmppGateway(SmppSettings(**values))
    gateway.name = "viettel"
    return gateway


TEXT = "Canh bao: khong chuyen tien cho nguoi la."


def _message(delivery_id: int, text: str = TEXT, msisdn: str = "") -> OutgoingMessage:
    info = measure(text)
    return OutgoingMessage(delivery_id, msisdn or f"+8490{delivery_id:07d}", info.text, info.encoding, info.parts,
                           "viettel")  # fmt: skip


def _send(gateway: SmppGateway, messages: list[OutgoingMessage], wait: float = 0.3) -> tuple[list, list]:
    """Send `messages`, wait `wait` s for receipts; (outcomes, reports), the gateway closed."""

    async def run() -> tuple[list, list]:
        try:
            outcomes = await gateway.send_batch(messages)
            reports = await _reports(gateway, wait)
            return outcomes, reports
        finally:
            await gateway.close()

    return asyncio.run(run())


async def _reports(gateway: SmppGateway, wait: float) -> list:
    reports, deadline = [], time.monotonic() + wait
    while time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        reports += gateway.reports(NOW)
    return reports


def _text_of(submits: list[fake_smsc.Submit]) -> str:
    """The text the handset puts together from the parts (UDH stripped; SAR and payload as sent)."""
    coder = GSM_CODEC if submits[0].data_coding == 0 else "utf-16-be"
    data = b""
    for submit in submits:
        body = submit.short_message or submit.tlvs.get(fake_smsc.TLV_PAYLOAD, b"")
        data += body[body[0] + 1 :] if submit.esm_class & 0x40 else body
    return data.decode(coder)


# -- the wire ------------------------------------------------------------------------------


def test_a_message_goes_from_the_brandname_to_an_international_number_with_a_receipt_asked(smsc) -> None:
    """Sender TON 5 / NPI 0 (the brandname), destination TON 1 / NPI 1 as 84…, registered_delivery 1, one bind."""
    outcomes, _ = _send(_gateway(smsc), [_message(1, msisdn="+84901234567")])
    (submit,) = smsc.submits
    assert (submit.source_ton, submit.source_npi, submit.source) == (5, 0, "CONGAN-DN")
    assert (submit.dest_ton, submit.dest_npi, submit.destination) == (1, 1, "84901234567")
    assert submit.registered_delivery == 1 and submit.data_coding == 0
    assert outcomes == [SendResult(submit.message_id, 1)]
    assert smsc.binds == [(fake_smsc.BIND_TRX, "canhbao", "pw")] and smsc.unbinds == 1


def test_gsm7_goes_one_byte_per_septet_with_the_escape_table() -> None:
    """€ [ ] { } ~ \\ ^ | travel as ESC + code, one byte per septet, data_coding 0."""
    text = "Gia 5€ [a] {b} ~ \\ ^ | @£"
    with fake_smsc.running() as smsc:
        _send(_gateway(smsc), [_message(1, text)])
    (submit,) = smsc.submits
    assert submit.data_coding == 0
    assert submit.short_message == b"Gia 5\x1be \x1b<a\x1b> \x1b(b\x1b) \x1b= \x1b/ \x1b\x14 \x1b@ \x00\x01"
    assert len(submit.short_message) == measure(text).units


def test_ucs2_keeps_surrogate_pairs_whole() -> None:
    """Vietnamese with an emoji goes as UTF-16 (data_coding 8), the pair of the emoji intact."""
    text = "Cảnh báo 🚨 lừa đảo"
    with fake_smsc.running() as smsc:
        _send(_gateway(smsc), [_message(1, text)])
    (submit,) = smsc.submits
    assert submit.data_coding == 8 and submit.short_message.decode("utf-16-be") == text
    assert "🚨".encode("utf-16-be") == b"\xd8\x3d\xde\xa8" and b"\xd8\x3d\xde\xa8" in submit.short_message


LENGTHS = [("a" * 160, Encoding.GSM7), ("a" * 161, Encoding.GSM7), ("a" * 306, Encoding.GSM7),
           ("a" * 307, Encoding.GSM7), ("a" * 152 + "€" + "b" * 10, Encoding.GSM7), ("€" * 100, Encoding.GSM7),
           ("ả" * 70, Encoding.UCS2), ("ả" * 71, Encoding.UCS2), ("ả" * 134, Encoding.UCS2),
           ("ả" * 135, Encoding.UCS2), ("ả" * 66 + "🚨" + "ả" * 5, Encoding.UCS2),
           ("🚨" * 50, Encoding.UCS2)]  # fmt: skip


@pytest.mark.parametrize("long_messages", ["udh", "sar"])
@pytest.mark.parametrize(("text", "encoding"), LENGTHS, ids=lambda v: f"{len(v)}" if isinstance(v, str) else str(v))
def test_the_parts_sent_are_the_parts_counted(text: str, encoding: Encoding, long_messages: str) -> None:
    """Across encodings and lengths the submit_sm count is smstext's part count, and the parts join to the text."""
    info = measure(text)
    assert info.encoding is encoding
    with fake_smsc.running() as smsc:
        outcomes, _ = _send(_gateway(smsc, long_messages=long_messages), [_message(1, text)])
    assert len(smsc.submits) == info.parts and outcomes[0].parts == info.parts
    assert _text_of(smsc.submits) == text


def test_long_messages_carry_an_8_bit_reference_udh_by_default() -> None:
    """UDH 05 00 03 ref total seq with esm_class 0x40, the same reference on every part of a message."""
    with fake_smsc.running() as smsc:
        _send(_gateway(smsc), [_message(1, "ả" * 140), _message(2, "ả" * 140)])
    headers = [s.short_message[:6] for s in smsc.submits]
    assert all(s.esm_class == 0x40 for s in smsc.submits)
    assert [h[:3] for h in headers] == [b"\x05\x00\x03"] * 6
    assert [h[4:] for h in headers[:3]] == [b"\x03\x01", b"\x03\x02", b"\x03\x03"]
    assert len({h[3] for h in headers[:3]}) == 1 and headers[0][3] != headers[3][3]


def test_sar_tlvs_on_request() -> None:
    """long_messages = "sar": sar_msg_ref_num, sar_total_segments, sar_segment_seqnum, no UDH."""
    with fake_smsc.running() as smsc:
        _send(_gateway(smsc, long_messages="sar"), [_message(1, "a" * 200)])
    tlvs = [s.tlvs for s in smsc.submits]
    assert [t[fake_smsc.TLV_SAR_SEQ] for t in tlvs] == [b"\x01", b"\x02"]
    assert {t[fake_smsc.TLV_SAR_TOTAL] for t in tlvs} == {b"\x02"}
    assert len({t[fake_smsc.TLV_SAR_REF] for t in tlvs}) == 1
    assert all(s.esm_class == 0 for s in smsc.submits)


def test_message_payload_on_request_sends_one_pdu_billed_as_its_parts() -> None:
    """long_messages = "payload": the whole text in message_payload, short_message empty, the parts still counted."""
    text = "ả" * 140
    with fake_smsc.running() as smsc:
        outcomes, reports = _send(_gateway(smsc, long_messages="payload"), [_message(1, text)])
    (submit,) = smsc.submits
    assert submit.short_message == b"" and submit.tlvs[fake_smsc.TLV_PAYLOAD].decode("utf-16-be") == text
    assert outcomes[0].parts == 3 and [r.status for r in reports] == [ReportStatus.DELIVERED]


# -- receipts --------------------------------------------------------------------------------


RECEIPTS = [Behaviour(), Behaviour(receipt_tlvs=False), Behaviour(receipt_decimal=True),
            Behaviour(receipt_tlvs=False, receipt_decimal=True), Behaviour(receipt_tlvs=False, date_digits=12),
            Behaviour(receipt_tlvs=False, lowercase=True, date_digits=12)]  # fmt: skip


@pytest.mark.parametrize("smsc", RECEIPTS, indirect=True, ids=["tlv", "text", "tlv-decimal", "text-decimal",
                                                                 "text-12-digit", "text-lowercase"])  # fmt: skip
def test_a_receipt_names_the_message_whatever_its_form(smsc) -> None:
    """TLVs or text alone, ids in hex or decimal, 10- or 12-digit dates, either case: one report per message."""
    outcomes, reports = _send(_gateway(smsc), [_message(i) for i in range(1, 6)])
    assert sorted(r.provider_id for r in reports) == sorted(o.provider_id for o in outcomes)
    assert {r.status for r in reports} == {ReportStatus.DELIVERED} and {r.gateway for r in reports} == {"viettel"}
    assert all("stat:delivrd" in r.raw.lower() for r in reports)


def test_the_done_date_dates_the_report() -> None:
    """A 12-digit done date (seconds included) is read in Vietnam's time."""
    deliver = fake_smsc.deliver_body("84901234567", "CONGAN-DN", 4, 0, b"id:1A stat:DELIVRD done date:2611230915 "
                                     b"err:000", b"")  # fmt: skip
    from dispatcher.gateways.smpp import parse_deliver, parse_receipt

    receipt = parse_receipt(parse_deliver(deliver))
    assert receipt is not None and receipt.at == datetime(2026, 11, 23, 2, 15, tzinfo=UTC)
    twelve = parse_receipt(parse_deliver(deliver.replace(b"2611230915", b"261123091530")))
    assert twelve is not None and twelve.at == datetime(2026, 11, 23, 2, 15, 30, tzinfo=UTC)


def test_hex_and_decimal_spell_the_same_id() -> None:
    """An id is matched in either base, whatever its case or leading zeros."""
    assert set(id_forms("0001A")) & set(id_forms("26")) and set(id_forms("1a")) & set(id_forms("0026"))


@pytest.mark.parametrize("smsc", [Behaviour(stat_for=lambda s: "UNDELIV" if s.short_message[5:6] == b"\x02"
                                            else "DELIVRD")], indirect=True)  # fmt: skip
def test_a_message_of_several_parts_is_delivered_when_every_part_is_and_undeliverable_when_one_is(smsc) -> None:
    """Three parts all delivered: one delivered report; three parts, the second UNDELIV: one undeliverable report."""
    whole = _message(1, "a" * 400)
    broken = _message(2, "b" * 400)
    gateway = _gateway(smsc)

    async def run() -> tuple[list, list]:
        outcomes = [*await gateway.send_batch([whole])]
        smsc.behaviour.stat_for = lambda s: "UNDELIV" if s.short_message[5:6] == b"\x02" else "DELIVRD"
        outcomes += await gateway.send_batch([broken])
        reports = await _reports(gateway, 0.3)
        await gateway.close()
        return outcomes, reports

    smsc.behaviour.stat_for = lambda s: "DELIVRD"
    outcomes, reports = asyncio.run(run())
    assert len(smsc.submits) == 6
    expected = [
        (outcomes[0].provider_id, ReportStatus.DELIVERED),
        (outcomes[1].provider_id, ReportStatus.UNDELIVERABLE),
    ]
    whole = [r for r in reports if not r.part]  # the parts' own receipts go on too, for the database to keep
    assert [(r.provider_id, r.status) for r in whole] == expected
    assert whole[0].raw.count("stat:DELIVRD") == 3 and gateway.pending_reports() == 0


def test_the_receipts_of_a_message_still_open_are_handed_on_as_its_parts(smsc) -> None:
    """Two parts' receipts of three in: each goes on as a part report under its part's id, no message report yet."""
    smsc.behaviour.receipts = False
    gateway = _gateway(smsc)

    async def run() -> tuple[SendResult, list]:
        (outcome,) = await gateway.send_batch([_message(1, "a" * 400)])
        for submit in smsc.submits[:2]:
            smsc.send_receipt(submit)
        reports = await _reports(gateway, 0.3)
        await gateway.close()
        return outcome, reports

    outcome, reports = asyncio.run(run())
    assert len(outcome.part_ids) == 3 and outcome.part_ids[0] == id_forms(outcome.provider_id)[0]
    assert [(r.part, r.provider_id, r.status) for r in reports] == [
        (True, part_id, ReportStatus.DELIVERED) for part_id in outcome.part_ids[:2]
    ]


def _undeliverable_3(submit: fake_smsc.Submit) -> str:
    return "UNDELIV" if submit.destination.endswith("3") else "DELIVRD"


@pytest.mark.parametrize("smsc", [Behaviour(reverse_receipts=14, receipts_twice=True, stat_for=_undeliverable_3)],
                         indirect=True)  # fmt: skip
def test_receipts_out_of_order_or_twice_give_one_report_each(smsc) -> None:
    """Receipts held and sent back in reverse, every one twice: each message reported once, with its own state."""
    outcomes, reports = _send(_gateway(smsc), [_message(i) for i in range(1, 8)])
    assert Counter(r.provider_id for r in reports) == Counter(o.provider_id for o in outcomes)
    by_id = {r.provider_id: r.status for r in reports}
    assert by_id[outcomes[2].provider_id] is ReportStatus.UNDELIVERABLE
    assert sum(s is ReportStatus.DELIVERED for s in by_id.values()) == 6


def test_a_receipt_for_an_id_never_sent_is_reported_as_it_is_for_reconciliation(smsc) -> None:
    """A receipt no message of ours explains goes on (after the hold) with its own id, for the queue to keep."""
    gateway = _gateway(smsc)
    gateway.receipt_hold_seconds = 0

    async def run() -> list:
        await gateway.send_batch([_message(1)])
        await _reports(gateway, 0.2)
        submit = fake_smsc.Submit(1, 1, "84909999999", 5, 0, "X", 0, 1, 0, b"", {}, message_id="FFFF01")
        smsc.loop.call_soon_threadsafe(lambda: smsc._receivers[0].write(fake_smsc.receipt_pdu(submit, Behaviour(), 9)))
        reports = await _reports(gateway, 0.2)
        await gateway.close()
        return reports

    (report,) = asyncio.run(run())
    assert report.provider_id == "FFFF01" and report.gateway == "viettel" and "id:FFFF01" in report.raw


# -- what people send us ------------------------------------------------------------------------


def test_a_message_from_a_person_is_inbound_not_a_receipt(smsc) -> None:
    """A deliver_sm without the receipt flag becomes an InboundMessage from +84…, acknowledged with status 0."""
    gateway = _gateway(smsc)

    async def run() -> tuple[list, list]:
        await gateway.send_batch([_message(1)])
        smsc.send_mo("84901234567", "HỦY")
        reports = await _reports(gateway, 0.3)
        inbound = gateway.inbound(NOW)
        await gateway.close()
        return reports, inbound

    reports, inbound = asyncio.run(run())
    assert len(reports) == 1
    assert [(m.msisdn, m.text, m.gateway) for m in inbound] == [("+84901234567", "HỦY", "viettel")]
    assert smsc.acks == [0, 0]


def test_a_message_from_a_person_sent_again_by_the_smsc_has_the_same_id(smsc) -> None:
    """A deliver_sm sent twice (our answer lost) names one text; another text has another id."""
    gateway = _gateway(smsc)

    async def run() -> list:
        await gateway.send_batch([_message(1)])
        for text in ("HỦY", "HỦY", "Ai đây?"):
            smsc.send_mo("84901234567", text)
        await _reports(gateway, 0.3)
        await gateway.close()
        return gateway.inbound(NOW)

    first, again, other = [m.provider_id for m in asyncio.run(run())]
    assert first == again and first.startswith("mo-") and other != first


def test_a_malformed_deliver_sm_is_refused_and_the_link_stays(smsc) -> None:
    """A deliver_sm cut short is answered ESME_RX_P_APPN and logged; the bind goes on sending."""
    gateway = _gateway(smsc)

    async def run() -> list:
        await gateway.send_batch([_message(1)])
        smsc.send_raw(fake_smsc.pdu(fake_smsc.DELIVER_SM, 0, 77, b"\x00\x01\x01849"))
        await asyncio.sleep(0.2)
        outcomes = await gateway.send_batch([_message(2)])
        await gateway.close()
        return outcomes

    with capture_logs() as logs:
        outcomes = asyncio.run(run())
    assert isinstance(outcomes[0], SendResult) and 0x65 in smsc.acks
    [logged] = [entry for entry in logs if entry["event"] == "smpp.malformed_deliver_sm"]
    assert "raw" not in logged and "3834" not in str(logged)  # not the bytes: they hold the sender's number


# -- the SMSC's faults ---------------------------------------------------------------------------


@pytest.mark.parametrize("smsc", [Behaviour(throttle_first=3)], indirect=True)
def test_throttling_is_a_throttled_error_the_rate_backs_off_on(smsc) -> None:
    """ESME_RTHROTTLED → ThrottledError (retryable); the rest of the batch goes."""
    outcomes, _ = _send(_gateway(smsc), [_message(i) for i in range(1, 7)])
    assert [type(o) for o in outcomes] == [ThrottledError] * 3 + [SendResult] * 3
    assert outcomes[0].code == "ESME_RTHROTTLED" and outcomes[0].retryable


STATUSES = {0x0B: (PermanentError, "ESME_RINVDSTADR"), 0x0A: (PermanentError, "ESME_RINVSRCADR"),
            0x14: (TemporaryError, "ESME_RMSGQFUL"), 0x08: (TemporaryError, "ESME_RSYSERR")}  # fmt: skip


@pytest.mark.parametrize("status", STATUSES)
def test_command_status_maps_to_our_error_classes(status: int) -> None:
    """Invalid addresses are permanent; a full queue and a system error are temporary."""
    with fake_smsc.running(Behaviour(status_for=lambda s: status)) as smsc:
        (outcome,), _ = _send(_gateway(smsc), [_message(1)])
    cls, code = STATUSES[status]
    assert type(outcome) is cls and outcome.code == code


@pytest.mark.parametrize("smsc", [Behaviour(answer_delay=0.02)], indirect=True)
def test_slow_answers_within_the_timeout_still_send_everything(smsc) -> None:
    """An SMSC that takes 20 ms per answer: everything sent, never more than the window outstanding."""
    outcomes, reports = _send(_gateway(smsc, window=5), [_message(i) for i in range(1, 16)], wait=0.5)
    assert all(isinstance(o, SendResult) for o in outcomes) and len(reports) == 15


@pytest.mark.parametrize("smsc", [Behaviour(answer_delay=1.0)], indirect=True)
def test_answers_later_than_the_timeout_make_the_messages_unknown_and_the_link_binds_again(smsc) -> None:
    """No answer within response_timeout: the link is dropped, those messages unknown (never resent), a new bind."""
    outcomes, _ = _send(_gateway(smsc, response_timeout_seconds=0.3), [_message(1), _message(2)], wait=0.8)
    assert all(isinstance(o, UnknownOutcomeError) for o in outcomes)
    assert len(smsc.binds) >= 2


@pytest.mark.parametrize("smsc", [Behaviour(drop_after=25)], indirect=True)
def test_a_link_dropped_mid_window_makes_the_unanswered_unknown_and_the_rest_goes_after_the_rebind(smsc) -> None:
    """The SMSC drops the link on the 25th submit: what it answered is sent, what it did not is unknown, what had
    not left yet is not sent (the loop queues it again), the rest goes on a new bind; nothing reaches the SMSC twice."""
    messages = [_message(i) for i in range(1, 61)]
    outcomes, _ = _send(_gateway(smsc), messages)
    sent = {m.msisdn for m, o in zip(messages, outcomes, strict=True) if isinstance(o, SendResult)}
    unknown = {m.msisdn for m, o in zip(messages, outcomes, strict=True) if isinstance(o, UnknownOutcomeError)}
    # An answer in flight when the link went may be lost with it (a reset drops what was unread): then unknown.
    assert sent <= {"+" + s.destination for s in smsc.accepted()} <= sent | unknown
    unsent = {m.msisdn for m, o in zip(messages, outcomes, strict=True) if isinstance(o, NotSentError)}
    assert 1 <= len(unknown) <= 10 and len(sent) + len(unknown) + len(unsent) == 60
    assert not unsent & {"+" + s.destination for s in smsc.submits}  # not sent: never on the wire, queued again
    assert max(Counter(s.destination for s in smsc.submits).values()) == 1
    assert len(smsc.binds) == 2


@pytest.mark.parametrize("smsc", [Behaviour(password="right")], indirect=True)
def test_a_refused_bind_sends_nothing_and_says_why(smsc) -> None:
    """Wrong password: every message NotSentError ESME_RINVPASWD (they stay queued), one warning, no submit."""
    with capture_logs() as logs:
        outcomes, _ = _send(_gateway(smsc, response_timeout_seconds=0.5), [_message(1), _message(2)], wait=0)
    assert {type(o) for o in outcomes} == {NotSentError} and {o.code for o in outcomes} == {"ESME_RINVPASWD"}
    assert "bind refused" in str(outcomes[0]) and smsc.submits == []
    assert [entry["event"] for entry in logs].count("smpp.bind_failed") == 1


def test_an_smsc_that_cannot_be_reached_is_not_sent() -> None:
    """Nothing listening: NotSentError naming the address."""
    with fake_smsc.running() as smsc:
        port = smsc.port
    gateway = _gateway(smsc, port=port, response_timeout_seconds=0.3)
    (outcome,), _ = _send(gateway, [_message(1)], wait=0)
    assert isinstance(outcome, NotSentError) and f"127.0.0.1:{port}" in str(outcome)


def test_enquire_link_keeps_an_idle_link_alive(smsc) -> None:
    """With enquire_link_seconds 0.2, an idle bind asks the SMSC about every 0.2 s."""
    _send(_gateway(smsc, enquire_link_seconds=0.2), [_message(1)], wait=0.9)
    assert smsc.enquire_links >= 3


def test_tx_rx_binds_a_transmitter_and_a_receiver(smsc) -> None:
    """bind = "tx_rx": submits on the transmitter, receipts through the receiver."""
    outcomes, reports = _send(_gateway(smsc, bind="tx_rx"), [_message(i) for i in range(1, 4)])
    assert sorted(command for command, _, _ in smsc.binds) == [fake_smsc.BIND_RX, fake_smsc.BIND_TX]
    assert len(reports) == 3 and all(isinstance(o, SendResult) for o in outcomes)


def test_several_binds_share_the_work(smsc) -> None:
    """binds = 3: three transceivers, each given part of the batch."""
    outcomes, reports = _send(_gateway(smsc, binds=3, window=2), [_message(i) for i in range(1, 31)])
    assert len(smsc.binds) == 3 and len(reports) == 30 and len(smsc.submits) == 30


def test_the_pdu_header_is_read_across_reads() -> None:
    """PDUs split across TCP reads are put together (the codec's framing)."""
    from dispatcher.gateways.smpp import HEADER

    data = fake_smsc.pdu(0x80000015, 0, 5)
    assert HEADER.unpack(data) == (16, 0x80000015, 0, 5) and struct.calcsize(">IIII") == 16


# -- through the dispatch loop, on both databases ------------------------------------------------


def _world(engine, regions, now, tmp_path, smsc: Smsc, count: int = 120, **section):
    """`count` people in Đà Nẵng, an approved alert, a blast, and a worker whose only gateway is SMPP `viettel`."""
    from dispatcher.config import load_settings
    from dispatcher.dispatch import Worker
    from dispatcher.gateways import build
    from tests.clock import Clock
    from tests.world import approved_blast, catalogue, people

    gateway = {"kind": "smpp", "port": smsc.port, "system_id": "canhbao", "source_addr": "CONGAN-DN",
               "reconnect_max_seconds": 0.2, "response_timeout_seconds": 1, **section}  # fmt: skip
    settings = load_settings(None, {"CANHBAO_GATEWAYS": json.dumps({"viettel": gateway}),
                                    "CANHBAO_ROUTES": '{"default": ["viettel"]}',
                                    "CANHBAO_GATEWAYS__VIETTEL__PASSWORD": "pw",
                                    "CANHBAO_DISPATCH__REPORT_WAIT_SECONDS": "3"})  # fmt: skip
    people(engine, regions, now, tmp_path, count, seed=5)
    catalogue(engine, now, ["gia-danh-cong-an-goi-video"])
    blast_id = approved_blast(engine, regions, settings, now)
    worker = Worker(engine, {"viettel": build("viettel", settings.gateways)}, settings, regions, Clock(now), "w1")
    return blast_id, worker


def _run(worker) -> None:
    async def run() -> None:
        try:
            await worker.run(until_idle=True)
        finally:
            for gateway in worker.gateways.values():
                await gateway.close()

    asyncio.run(run())


def _rows(engine) -> list:
    from dispatcher.models import deliveries

    d = deliveries.c
    with engine.connect() as conn:
        return conn.execute(select(d.id, d.msisdn, d.status, d.gateway, d.provider_id, d.attempts)).all()


def test_a_blast_goes_out_over_smpp_and_every_receipt_comes_back(engine, regions, now, tmp_path, smsc) -> None:
    """Each recipient once on the wire, every row delivered, its provider id the SMSC's and its receipt kept raw."""
    from dispatcher.models import delivery_reports

    _, worker = _world(engine, regions, now, tmp_path, smsc)
    _run(worker)
    rows = _rows(engine)
    assert {row.status for row in rows} == {"delivered"} and {row.gateway for row in rows} == {"viettel"}
    assert Counter(s.destination for s in smsc.submits) == Counter(
        row.msisdn.lstrip("+") for row in rows for _ in range(len(smsc.submits) // len(rows))
    )
    with engine.connect() as conn:
        raws = conn.execute(select(delivery_reports.c.raw, delivery_reports.c.delivery_id)).all()
    assert len(raws) == len(rows) and all("stat:DELIVRD" in raw for raw, _ in raws)


def _part(submit: fake_smsc.Submit) -> int:
    """Which part of its message a submit is (the UDH's sequence number)."""
    return submit.short_message[5]


async def _ticks_until(worker, done, seconds: float = 5.0) -> None:
    """Let the worker tick (reports, receipts) until `done()` or `seconds` passed."""
    deadline = time.monotonic() + seconds
    while not done() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        await worker.tick()


@pytest.mark.parametrize("smsc", [Behaviour(receipts=False, receipt_decimal=True)], indirect=True)
def test_the_parts_receipts_settle_a_message_after_the_worker_restarted(engine, regions, now, tmp_path, smsc) -> None:
    """3-part messages, the worker gone before (most of) their receipts, decimal ids there: a new worker sets
    delivered when every part is, undeliverable when one is, and leaves a message missing a part's receipt sent."""
    from dispatcher.gateways import build

    blast_id, worker = _world(engine, regions, now, tmp_path, smsc, count=3)
    _run(worker)  # sent, no receipt yet; the gateway closed
    by_person: dict[str, list[fake_smsc.Submit]] = {}
    for submit in smsc.accepted():
        by_person.setdefault("+" + submit.destination, []).append(submit)
    whole, broken, open_ = sorted(by_person)
    assert {len(parts) for parts in by_person.values()} == {3} and {r.status for r in _rows(engine)} == {"sent"}
    statuses = lambda: {row.msisdn: row.status for row in _rows(engine)}  # noqa: E731

    async def restarted() -> None:
        gateway = build("viettel", worker.settings.gateways)
        gateway.receipt_hold_seconds = 0
        worker.gateways = {"viettel": gateway}
        gateway.start()
        await _ticks_until(worker, lambda: len(smsc.binds) == 2 and bool(smsc._receivers))
        smsc.behaviour.stat_for = lambda s: "UNDELIV" if "+" + s.destination == broken and _part(s) == 2 else "DELIVRD"
        for person, parts in by_person.items():
            for submit in parts[: 2 if person == open_ else 3]:
                smsc.send_receipt(submit)
        await _ticks_until(worker, lambda: statuses()[whole] == "delivered" and statuses()[broken] != "sent")
        await gateway.close()

    asyncio.run(restarted())
    assert statuses() == {whole: "delivered", broken: "undeliverable", open_: "sent"}


@pytest.mark.parametrize("smsc", [Behaviour(drop_after=40)], indirect=True)
def test_a_link_dropped_mid_blast_leaves_unknown_rows_and_the_rest_delivered(engine, regions, now, tmp_path,
                                                                             smsc) -> None:  # fmt: skip
    """The SMSC drops the link on the 40th submit: the unanswered rows are `unknown`, never resent; the rest of the
    blast goes after the rebind and is delivered; nothing reaches the SMSC twice."""
    _, worker = _world(engine, regions, now, tmp_path, smsc)
    _run(worker)
    rows = _rows(engine)
    statuses = Counter(row.status for row in rows)
    assert set(statuses) == {"delivered", "unknown"} and 1 <= statuses["unknown"] <= 10
    assert max(Counter((s.destination, s.short_message[5]) for s in smsc.submits).values()) == 1  # part by part
    accepted = {"+" + s.destination for s in smsc.accepted()}
    assert {row.msisdn for row in rows if row.status == "delivered"} <= accepted
    assert len(smsc.binds) == 2


@pytest.mark.parametrize("smsc", [Behaviour(password="right")], indirect=True)
def test_a_refused_bind_leaves_the_blast_queued_not_failed(engine, regions, now, tmp_path, smsc) -> None:
    """Wrong credentials: no row fails and none spends an attempt; they wait in the queue for a bind."""
    _, worker = _world(engine, regions, now, tmp_path, smsc, count=30, response_timeout_seconds=0.3)
    with capture_logs() as logs:
        _run(worker)
    rows = _rows(engine)
    assert {row.status for row in rows} == {"queued"} and {row.attempts for row in rows} == {0}
    assert smsc.submits == [] and any(e["event"] == "smpp.bind_failed" for e in logs)


def test_check_binds_and_unbinds_without_sending(smsc) -> None:
    """`gateways check` on an SMSC that takes us: bound and unbound, said in Vietnamese, no submit_sm."""
    said = asyncio.run(_gateway(smsc).check())
    assert "nhận đăng nhập của 'canhbao'" in said and "không gửi tin nào" in said
    assert not smsc.submits


@pytest.mark.parametrize("smsc", [Behaviour(password="other")], indirect=True)
def test_check_says_the_bind_was_refused(smsc) -> None:
    """A wrong password makes check() raise, in Vietnamese, naming the SMSC and the refusal."""
    with pytest.raises(GatewayError, match="Không đăng nhập \\(bind\\) được vào SMSC 127.0.0.1") as refused:
        asyncio.run(_gateway(smsc, response_timeout_seconds=2).check())
    assert "ESME_RINVPASWD" in str(refused.value)
