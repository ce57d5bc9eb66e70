"""The gateways: the registry, the hand-off file, the carrier simulator and the fake."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from dispatcher.config import (
    BUILT_IN_GATEWAYS,
    CarrierBehaviour,
    FileGatewaySettings,
    GatewaysSettings,
    SimulatorSettings,
)
from dispatcher.errors import ConfigError
from dispatcher.gateways import GATEWAYS, build
from dispatcher.gateways.base import (
    DeliveryReport,
    Gateway,
    Outcome,
    OutgoingMessage,
    PermanentError,
    ReportStatus,
    SendResult,
    TemporaryError,
    ThrottledError,
    confirm,
)
from dispatcher.gateways.fake import FakeGateway
from dispatcher.gateways.file import FileGateway, outbox_line
from dispatcher.gateways.simulator import SimulatorGateway, recorded_duplicates
from dispatcher.smstext import Encoding

WARNING = 'Cảnh báo: Công an không gọi điện yêu cầu "chuyển tiền".\nGọi 113 khi nghi ngờ.'
PLAIN = "Canh bao: khong chuyen tien cho nguoi la."


def message(delivery_id: int, carrier: str = "viettel", msisdn: str | None = None) -> OutgoingMessage:
    """A one-part message to a Đà Nẵng number."""
    return OutgoingMessage(
        delivery_id=delivery_id,
        msisdn=msisdn or f"+8490{delivery_id:07d}",
        text=PLAIN,
        encoding=Encoding.GSM7,
        parts=1,
        carrier=carrier,
    )


def send(gateway: Gateway, messages: Sequence[OutgoingMessage]) -> list[Outcome]:
    """The outcomes of one batch, sent on a fresh event loop."""
    return asyncio.run(gateway.send_batch(messages))


def kinds(outcomes: Sequence[Outcome]) -> Counter[str]:
    """How many outcomes of each class."""
    return Counter(type(outcome).__name__ for outcome in outcomes)


def simulator(now: datetime, **settings: object) -> SimulatorGateway:
    """A simulator on a fixed clock."""
    return SimulatorGateway(SimulatorSettings(**settings), clock=lambda: now)


def confirmed(gateway: Gateway, delivery_ids: Sequence[int]) -> dict[int, SendResult | None]:
    """What `gateway` confirms of `delivery_ids`, asked on a fresh event loop."""
    return asyncio.run(confirm(gateway, delivery_ids))


def tear(path: Path, line: str) -> None:
    """Append the first half of `line` without its newline, as a process killed mid-write leaves it."""
    with path.open("a", encoding="utf-8") as file:
        file.write(line[: len(line) // 2])


# -- the registry -------------------------------------------------------------------------


# Twilio refuses to build without its account and token: tests/test_twilio.py builds it with them.
@pytest.mark.parametrize("name", [name for name in GATEWAYS if name != "twilio"])
def test_registry_builds_every_known_gateway(name: str, sqlite_engine) -> None:
    """Every registered kind builds a gateway of that name, from a section of its own beside the built-in ones."""
    built_in = {"file", "simulator"} | BUILT_IN_GATEWAYS
    gateway = build(name, GatewaysSettings.model_validate({} if name in built_in else {name: {}}), sqlite_engine)
    assert isinstance(gateway, Gateway)
    assert gateway.name == name


def test_registry_builds_from_the_gateways_own_section(tmp_path: Path) -> None:
    """A gateway receives its own settings section."""
    settings = GatewaysSettings(file=FileGatewaySettings(path=tmp_path / "outbox.jsonl"))
    gateway = build("file", settings)
    assert isinstance(gateway, FileGateway)
    assert gateway.path == tmp_path / "outbox.jsonl"


def test_unknown_gateway_is_a_config_error() -> None:
    """A name with no section is refused with a Vietnamese message naming the configured gateways."""
    with pytest.raises(ConfigError) as caught:
        build("viettel", GatewaysSettings())
    assert str(caught.value) == "Cổng gửi không rõ 'viettel': cần một mục [gateways.viettel] (có: file, simulator)."


def test_a_gateway_is_named_after_its_section(tmp_path: Path) -> None:
    """Two hand-off files are two gateways, each with its own name and path."""
    settings = GatewaysSettings(archive={"kind": "file", "path": tmp_path / "archive.jsonl"})
    archive, default = build("archive", settings), build("file", settings)
    assert (archive.name, archive.path) == ("archive", tmp_path / "archive.jsonl")
    assert (default.name, default.path) == ("file", Path("var/outbox.jsonl"))


# -- the hand-off file --------------------------------------------------------------------


def read_lines(path: Path) -> list[dict[str, object]]:
    """The JSON lines of a hand-off file."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_file_gateway_writes_one_json_line_per_message(tmp_path: Path) -> None:
    """Each message becomes exactly one JSON line, Vietnamese kept as is, in a directory it creates."""
    path = tmp_path / "var" / "handoff" / "outbox.jsonl"
    vietnamese = OutgoingMessage(7, "+84905123456", WARNING, Encoding.UCS2, 2, "mobifone", channel="sms")
    outcomes = send(FileGateway(FileGatewaySettings(path=path)), [vietnamese, message(8)])
    assert outcomes == [SendResult("file-7", 2), SendResult("file-8", 1)]
    assert "Cảnh báo" in path.read_text(encoding="utf-8")
    assert read_lines(path) == [
        {"id": 7, "msisdn": "+84905123456", "text": WARNING, "encoding": "UCS-2", "parts": 2, "carrier": "mobifone",
         "channel": "sms"},
        {"id": 8, "msisdn": "+84900000008", "text": PLAIN, "encoding": "GSM-7", "parts": 1, "carrier": "viettel",
         "channel": "sms"},
    ]  # fmt: skip


def test_file_gateway_appends_across_batches(tmp_path: Path) -> None:
    """A second batch goes after the first."""
    gateway = FileGateway(FileGatewaySettings(path=tmp_path / "outbox.jsonl"))
    send(gateway, [message(1), message(2)])
    send(gateway, [message(3)])
    assert [line["id"] for line in read_lines(gateway.path)] == [1, 2, 3]


def test_file_gateway_appends_after_being_closed_and_reopened(tmp_path: Path) -> None:
    """A restarted gateway appends to the file it finds; it never truncates it."""
    settings = FileGatewaySettings(path=tmp_path / "outbox.jsonl")
    first = FileGateway(settings)
    send(first, [message(1)])
    asyncio.run(first.close())
    send(FileGateway(settings), [message(2)])
    assert [line["id"] for line in read_lines(settings.path)] == [1, 2]


def assert_all_temporary(outcomes: Sequence[Outcome], count: int) -> None:
    """Every message of the batch failed with a retryable error translated from an OSError."""
    assert len(outcomes) == count
    for outcome in outcomes:
        assert isinstance(outcome, TemporaryError) and outcome.retryable
        assert outcome.code == "FILE-IO"
        assert isinstance(outcome.__cause__, OSError)


def test_file_gateway_path_that_is_a_directory_gives_temporary_errors(tmp_path: Path) -> None:
    """When the path is a directory, every message of the batch is a TemporaryError."""
    assert_all_temporary(send(FileGateway(FileGatewaySettings(path=tmp_path)), [message(1), message(2)]), 2)


def test_file_gateway_unwritable_path_gives_temporary_errors(tmp_path: Path) -> None:
    """When the file cannot be created (its parent is a plain file), the batch fails as retryable."""
    (tmp_path / "not-a-dir").write_text("x")
    gateway = FileGateway(FileGatewaySettings(path=tmp_path / "not-a-dir" / "outbox.jsonl"))
    assert_all_temporary(send(gateway, [message(1), message(2), message(3)]), 3)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_file_gateway_full_disk_gives_temporary_errors() -> None:
    """A write that fails (a full disk) fails the whole batch as retryable."""
    gateway = FileGateway(FileGatewaySettings(path=Path("/dev/full")))
    assert_all_temporary(send(gateway, [message(1), message(2)]), 2)


def test_file_gateway_recovers_once_the_path_is_writable(tmp_path: Path) -> None:
    """After a failed batch, the next one opens the file again."""
    path = tmp_path / "outbox.jsonl"
    path.mkdir()
    gateway = FileGateway(FileGatewaySettings(path=path))
    assert_all_temporary(send(gateway, [message(1)]), 1)
    path.rmdir()
    assert send(gateway, [message(1)]) == [SendResult("file-1", 1)]


def test_file_gateway_has_no_reports(tmp_path: Path, now: datetime) -> None:
    """A hand-off file never reports back."""
    gateway = FileGateway(FileGatewaySettings(path=tmp_path / "outbox.jsonl"))
    send(gateway, [message(1)])
    assert gateway.reports(now + timedelta(days=1)) == []


def test_file_gateway_confirms_the_lines_in_the_outbox(tmp_path: Path) -> None:
    """A restarted gateway confirms a handed-off message with the provider id and parts it was given."""
    settings = FileGatewaySettings(path=tmp_path / "outbox.jsonl")
    vietnamese = OutgoingMessage(7, "+84905123456", WARNING, Encoding.UCS2, 2, "mobifone")
    send(FileGateway(settings), [vietnamese, message(8)])
    assert confirmed(FileGateway(settings), [7, 8]) == {7: SendResult("file-7", 2), 8: SendResult("file-8", 1)}


def test_file_gateway_says_an_id_without_a_line_was_never_handed_off(tmp_path: Path) -> None:
    """An id the outbox has no line for is answered None: the file is all that was handed off."""
    gateway = FileGateway(FileGatewaySettings(path=tmp_path / "outbox.jsonl"))
    send(gateway, [message(1)])
    assert confirmed(gateway, [1, 2]) == {1: SendResult("file-1", 1), 2: None}


def test_file_gateway_without_an_outbox_handed_off_nothing(tmp_path: Path) -> None:
    """With no outbox file at all, every id is answered None."""
    gateway = FileGateway(FileGatewaySettings(path=tmp_path / "outbox.jsonl"))
    assert confirmed(gateway, [1, 2]) == {1: None, 2: None}


def test_file_gateway_confirm_ignores_a_torn_last_line(tmp_path: Path) -> None:
    """A line cut short by a killed process is not a hand-off."""
    settings = FileGatewaySettings(path=tmp_path / "outbox.jsonl")
    send(FileGateway(settings), [message(1)])
    tear(settings.path, outbox_line(message(2)))
    assert confirmed(FileGateway(settings), [1, 2]) == {1: SendResult("file-1", 1), 2: None}


def test_file_gateway_starts_a_new_line_after_a_torn_one(tmp_path: Path) -> None:
    """A gateway opening an outbox that ends in a torn line keeps its own first line whole."""
    settings = FileGatewaySettings(path=tmp_path / "outbox.jsonl")
    tear(settings.path, outbox_line(message(1)))
    gateway = FileGateway(settings)
    send(gateway, [message(2)])
    assert settings.path.read_text(encoding="utf-8").splitlines()[1] == outbox_line(message(2)).rstrip("\n")
    assert confirmed(gateway, [1, 2]) == {1: None, 2: SendResult("file-2", 1)}


# -- the carrier simulator ----------------------------------------------------------------


def test_simulator_with_zero_latency_never_sleeps(now: datetime, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no latency a batch of 10,000 is accepted without a single sleep."""

    async def no_sleep(seconds: float) -> None:
        raise AssertionError(f"slept {seconds}s")

    monkeypatch.setattr(asyncio, "sleep", no_sleep)
    gateway = simulator(now)
    outcomes = send(gateway, [message(i) for i in range(10_000)])
    assert kinds(outcomes) == {"SendResult": 10_000}
    assert len(gateway.accepted) == len(gateway.attempts) == 10_000


def test_simulator_failure_mix_matches_the_configured_shares(now: datetime) -> None:
    """Over 20,000 messages each failure kind shows up at roughly its configured share."""
    gateway = simulator(now, temporary_failure=0.1, throttled=0.05, permanent_failure=0.02)
    counts = kinds(send(gateway, [message(i) for i in range(20_000)]))
    assert 1_600 <= counts["TemporaryError"] <= 2_400
    assert 800 <= counts["ThrottledError"] <= 1_200
    assert 300 <= counts["PermanentError"] <= 500
    assert counts["SendResult"] == len(gateway.accepted)
    assert len(gateway.attempts) == 20_000


def test_simulator_errors_carry_the_retry_decision(now: datetime) -> None:
    """Temporary and throttled failures are retryable, a permanent one is not, each with its code."""
    carriers = {
        "viettel": CarrierBehaviour(temporary_failure=1),
        "vinaphone": CarrierBehaviour(throttled=1),
        "mobifone": CarrierBehaviour(permanent_failure=1),
    }
    batch = [message(i, carrier) for i, carrier in enumerate(carriers)]
    temporary, throttled, permanent = send(simulator(now, carriers=carriers), batch)
    assert isinstance(temporary, TemporaryError) and temporary.retryable and temporary.code == "SIM-TEMP"
    assert isinstance(throttled, ThrottledError) and throttled.retryable and throttled.code == "SIM-THROTTLE"
    assert throttled.retry_after == 1.0
    assert isinstance(permanent, PermanentError) and not permanent.retryable and permanent.code == "SIM-INVALID"


def test_simulator_same_seed_repeats_the_same_run(now: datetime) -> None:
    """Two simulators with the same seed fail the same messages the same way."""
    batch = [message(i) for i in range(1_000)]
    runs = [send(simulator(now, seed=7, temporary_failure=0.2, throttled=0.1), batch) for _ in range(2)]
    assert [type(o) for o in runs[0]] == [type(o) for o in runs[1]]


def test_simulator_provider_ids_are_unique_across_instances(now: datetime) -> None:
    """Two simulators (two worker processes) never hand out the same provider id."""
    first, second = (send(simulator(now), [message(i) for i in range(100)]) for _ in range(2))
    ids = [outcome.provider_id for outcome in [*first, *second] if isinstance(outcome, SendResult)]
    assert len(set(ids)) == 200


def test_simulator_reports_arrive_later(now: datetime) -> None:
    """No report is due when the batch is sent; every accepted message has one after the longest delay."""
    gateway = simulator(now, report_delay_ms=(50, 2_000))
    outcomes = send(gateway, [message(i) for i in range(500)])
    assert gateway.reports(now) == []
    reports = gateway.reports(now + timedelta(seconds=2))
    accepted = [o.provider_id for o in outcomes if isinstance(o, SendResult)]
    assert sorted(r.provider_id for r in reports) == sorted(accepted)
    assert all(now + timedelta(milliseconds=50) <= r.at <= now + timedelta(seconds=2) for r in reports)


def test_simulator_reports_come_out_of_send_order(now: datetime) -> None:
    """Reports come in the order they are due, which is not the order the messages were sent."""
    gateway = simulator(now)
    sent = [o.provider_id for o in send(gateway, [message(i) for i in range(100)]) if isinstance(o, SendResult)]
    reports = gateway.reports(now + timedelta(seconds=2))
    assert [r.at for r in reports] == sorted(r.at for r in reports)
    assert [r.provider_id for r in reports] != sent


def test_simulator_reports_are_returned_once(now: datetime) -> None:
    """A report handed out is forgotten."""
    gateway = simulator(now)
    send(gateway, [message(1)])
    assert len(gateway.reports(now + timedelta(seconds=2))) == 1
    assert gateway.reports(now + timedelta(seconds=3)) == []


def test_simulator_undeliverable_share(now: datetime) -> None:
    """About the configured share of reports say undeliverable, with the simulator's error code."""
    gateway = simulator(now, undeliverable=0.2)
    send(gateway, [message(i) for i in range(5_000)])
    reports = gateway.reports(now + timedelta(seconds=2))
    undeliverable = [r for r in reports if r.status is ReportStatus.UNDELIVERABLE]
    assert 850 <= len(undeliverable) <= 1_150
    assert {r.error_code for r in undeliverable} == {"SIM-UNDELIV"}
    assert {r.error_code for r in reports if r.status is ReportStatus.DELIVERED} == {None}


def test_simulator_carrier_override_changes_failures(now: datetime) -> None:
    """A carrier's own failure rate replaces the simulator's for that carrier only."""
    gateway = simulator(now, carriers={"mobifone": CarrierBehaviour(permanent_failure=1)})
    outcomes = send(gateway, [message(i, "mobifone" if i % 2 else "viettel") for i in range(100)])
    assert kinds(outcomes[1::2]) == {"PermanentError": 50}
    assert kinds(outcomes[0::2]) == {"SendResult": 50}


def test_simulator_carrier_override_changes_latency(now: datetime, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the carrier with a latency waits, for 50–150% of its mean."""
    slept: list[float] = []

    async def record_sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", record_sleep)
    gateway = simulator(now, carriers={"vinaphone": CarrierBehaviour(latency_ms=20)})
    send(gateway, [message(i, "vinaphone" if i < 10 else "viettel") for i in range(30)])
    assert len(slept) == 10
    assert all(0.010 <= seconds <= 0.030 for seconds in slept)


def test_simulator_latencies_run_concurrently_up_to_the_limit(now: datetime, monkeypatch: pytest.MonkeyPatch) -> None:
    """The latencies of a batch overlap, never more than `concurrency` at once."""
    real_sleep, in_flight, peak = asyncio.sleep, [0], [0]

    async def tracked_sleep(seconds: float) -> None:
        in_flight[0] += 1
        peak[0] = max(peak[0], in_flight[0])
        await real_sleep(0)
        in_flight[0] -= 1

    monkeypatch.setattr(asyncio, "sleep", tracked_sleep)
    send(simulator(now, latency_ms=1, concurrency=4), [message(i) for i in range(20)])
    assert peak[0] == 4


def test_simulator_record_file_has_one_line_per_accepted_message(tmp_path: Path, now: datetime) -> None:
    """The record file holds one line per accepted message, with its provider id, as soon as the batch returns."""
    record = tmp_path / "sim" / "accepted.jsonl"
    gateway = simulator(now, temporary_failure=0.3, record_path=record)
    outcomes = send(gateway, [message(i) for i in range(200)])
    accepted = [(m.delivery_id, m.msisdn, o.provider_id, o.parts)
                for m, o in zip(gateway.attempts, outcomes, strict=True) if isinstance(o, SendResult)]  # fmt: skip
    assert [(line["id"], line["msisdn"], line["provider_id"], line["parts"]) for line in read_lines(record)] == accepted
    assert len(accepted) == len(gateway.accepted) < 200
    asyncio.run(gateway.close())


def test_simulator_duplicates_finds_a_message_accepted_twice(tmp_path: Path, now: datetime) -> None:
    """A delivery accepted twice shows up in `duplicates()` and in the record file."""
    record = tmp_path / "accepted.jsonl"
    gateway = simulator(now, record_path=record)
    send(gateway, [message(1), message(2)])
    send(gateway, [message(1)])
    asyncio.run(gateway.close())
    assert gateway.duplicates() == {1: 2}
    assert recorded_duplicates(record) == {1: 2}


def test_record_file_counts_duplicates_across_restarts(tmp_path: Path, now: datetime) -> None:
    """A worker restarted on the same record file adds to it, so a resend after a crash is counted."""
    record = tmp_path / "accepted.jsonl"
    before_crash, after_restart = simulator(now, record_path=record), simulator(now, record_path=record)
    send(before_crash, [message(1), message(2)])
    send(after_restart, [message(2), message(3)])
    asyncio.run(after_restart.close())
    assert after_restart.duplicates() == {}
    assert recorded_duplicates(record) == {2: 2}


def test_simulator_confirms_from_memory(now: datetime) -> None:
    """Without a record file, accepted ids get their SendResult and refused or unseen ids None."""
    gateway = simulator(now, carriers={"mobifone": CarrierBehaviour(permanent_failure=1)})
    accepted, _ = send(gateway, [message(1), message(2, "mobifone")])
    assert confirmed(gateway, [1, 2, 3]) == {1: accepted, 2: None, 3: None}


def test_simulator_leaves_out_what_memory_may_have_evicted(now: datetime) -> None:
    """Once the ring has dropped messages, an id not in it is left out rather than answered None."""
    gateway = simulator(now, keep_last=2)
    _, second, third = send(gateway, [message(1), message(2), message(3)])
    assert confirmed(gateway, [1, 2, 3, 4]) == {2: second, 3: third}


def test_simulator_confirms_across_a_restart_from_the_record_file(tmp_path: Path, now: datetime) -> None:
    """A new simulator on the same record file confirms what the killed worker's simulator accepted."""
    record = tmp_path / "accepted.jsonl"
    before_crash = simulator(now, record_path=record, carriers={"mobifone": CarrierBehaviour(permanent_failure=1)})
    accepted, _ = send(before_crash, [message(1), message(2, "mobifone")])
    assert confirmed(simulator(now, record_path=record), [1, 2, 3]) == {1: accepted, 2: None, 3: None}


def test_simulator_without_a_record_file_yet_accepted_nothing(tmp_path: Path, now: datetime) -> None:
    """A record file nobody has written yet answers None for every id."""
    assert confirmed(simulator(now, record_path=tmp_path / "accepted.jsonl"), [1]) == {1: None}


def test_simulator_confirm_ignores_a_torn_last_line(tmp_path: Path, now: datetime) -> None:
    """A record line cut short by a killed process is not an acceptance."""
    record = tmp_path / "accepted.jsonl"
    [accepted] = send(simulator(now, record_path=record), [message(1)])
    tear(record, '{"id": 2, "msisdn": "+84900000002", "provider_id": "sim-0-2", "parts": 1}\n')
    assert confirmed(simulator(now, record_path=record), [1, 2]) == {1: accepted, 2: None}


def test_simulator_starts_a_new_record_line_after_a_torn_one(tmp_path: Path, now: datetime) -> None:
    """A restarted simulator's first record line stays whole after a torn one, and counts."""
    record = tmp_path / "accepted.jsonl"
    tear(record, '{"id": 1, "msisdn": "+84900000001", "provider_id": "sim-0-1", "parts": 1}\n')
    after_restart = simulator(now, record_path=record)
    [accepted] = send(after_restart, [message(1)])
    assert confirmed(after_restart, [1]) == {1: accepted}
    assert recorded_duplicates(record) == {}


def test_simulator_leaves_out_a_record_line_without_parts(tmp_path: Path, now: datetime) -> None:
    """A line from before the record kept parts shows the id accepted, with parts unknown: it is left out."""
    record = tmp_path / "accepted.jsonl"
    record.write_text('{"id": 1, "msisdn": "+84900000001", "provider_id": "sim-0-1"}\n', encoding="utf-8")
    assert confirmed(simulator(now, record_path=record), [1, 2]) == {2: None}


# -- the fake -----------------------------------------------------------------------------


def test_fake_records_and_accepts_what_it_was_sent() -> None:
    """Without instructions the fake accepts everything and remembers it."""
    fake = FakeGateway()
    assert send(fake, [message(1), message(2)]) == [SendResult("fake-1", 1), SendResult("fake-2", 1)]
    assert [m.delivery_id for m in fake.sent] == [1, 2]


def test_fake_fail_next_fails_that_many_messages() -> None:
    """`fail_next(n, error)` fails the next n messages, then the fake accepts again."""
    fake, error = FakeGateway(), TemporaryError("link down", code="X")
    fake.fail_next(2, error)
    assert send(fake, [message(1)]) == [error]
    assert send(fake, [message(2), message(3)]) == [error, SendResult("fake-3", 1)]
    assert len(fake.sent) == 3


def test_fake_fail_when_fails_matching_messages() -> None:
    """`fail_when(predicate, error)` fails every message the predicate picks, every time."""
    fake, error = FakeGateway(), PermanentError("unknown subscriber", code="INVALID")
    fake.fail_when(lambda m: m.msisdn == "+84905000000", error)
    batch = [message(1), message(2, msisdn="+84905000000")]
    assert send(fake, batch) == send(fake, batch) == [SendResult("fake-1", 1), error]


def test_fake_queue_report_is_returned_once_due(now: datetime) -> None:
    """A queued report comes out of `reports()` once it is due, and only once."""
    fake = FakeGateway()
    fake.queue_report("fake-1", ReportStatus.DELIVERED)
    fake.queue_report("fake-2", ReportStatus.UNDELIVERABLE, "UNKNOWN", at=now + timedelta(minutes=1))
    [delivered] = fake.reports(now)
    assert (delivered.provider_id, delivered.status, delivered.at) == ("fake-1", ReportStatus.DELIVERED, now)
    [late] = fake.reports(now + timedelta(minutes=5))
    assert (late.provider_id, late.error_code, late.at) == ("fake-2", "UNKNOWN", now + timedelta(minutes=1))
    assert fake.reports(now + timedelta(days=1)) == []


def test_fake_confirms_what_it_accepted() -> None:
    """The fake confirms an accepted id with its result, and a failed or unseen id with None."""
    fake = FakeGateway()
    fake.fail_next(1, TemporaryError("link down"))
    send(fake, [message(1), message(2)])
    assert confirmed(fake, [1, 2, 3]) == {1: None, 2: SendResult("fake-2", 1), 3: None}


def test_fake_told_it_cannot_confirm_answers_nothing() -> None:
    """With `confirms` off the fake plays a gateway that cannot tell, so no id is answered."""
    fake = FakeGateway()
    send(fake, [message(1)])
    fake.confirms = False
    assert confirmed(fake, [1, 2]) == {}


def test_fake_remembers_being_closed() -> None:
    """`close()` is observable, so a test can check the worker released its gateways."""
    fake = FakeGateway("twilio")
    asyncio.run(fake.close())
    assert fake.closed and fake.name == "twilio"


# -- confirming through the base helper ---------------------------------------------------


class SendOnly:
    """A gateway that can send but not confirm, like a carrier API without a lookup by reference."""

    name = "send-only"

    async def send_batch(self, messages: Sequence[OutgoingMessage]) -> list[Outcome]:
        """Accept every message."""
        return [SendResult(f"send-only-{m.delivery_id}", m.parts) for m in messages]

    def reports(self, now: datetime) -> list[DeliveryReport]:
        """Never any."""
        return []

    async def close(self) -> None:
        """Nothing to release."""


def test_confirm_answers_nothing_for_a_gateway_without_the_capability() -> None:
    """A gateway that cannot confirm leaves every id out."""
    gateway = SendOnly()
    send(gateway, [message(1)])
    assert confirmed(gateway, [1]) == {}


def test_confirm_answers_nothing_when_the_gateway_cannot_look(tmp_path: Path) -> None:
    """An outbox that cannot be read confirms nothing, with a warning naming the gateway."""
    with capture_logs() as logs:
        assert confirmed(FileGateway(FileGatewaySettings(path=tmp_path)), [1]) == {}
    [warning] = logs
    assert (warning["event"], warning["gateway"], warning["log_level"]) == ("gateway.confirm_failed", "file", "warning")
    assert warning["error"].startswith("FILE-IO: cannot read")
