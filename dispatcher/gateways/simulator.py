"""A carrier network in a box, for the demo, the tests and the benchmarks.

Each carrier has a latency and a mix of failures; accepted messages get a delivery report later,
at a random delay, so reports arrive out of order as they do from real SMSCs. Every draw comes
from one seeded random generator, so a run with the same seed and the same batches repeats itself.
The simulator also remembers what it accepted, in memory and optionally in a record file, so a
test can count messages accepted twice, even across a worker that was killed and restarted.

It confirms by that memory too. With a record file, the file is the network's account, shared by
every process that writes it: a message counts as accepted once its line is there, so a process
killed before its batch's lines were written accepted nothing of that batch, and a torn last line
is not an acceptance. Without one, only this instance's memory answers, and an id it does not
find is "never accepted" only while nothing has been evicted from the `keep_last` ring.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import os
import random
import secrets
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from dispatcher.config import CarrierBehaviour, SimulatorSettings
from dispatcher.gateways.base import (
    ChannelUnavailableError,
    DeliveryReport,
    InboundMessage,
    Outcome,
    OutgoingMessage,
    PermanentError,
    ReportStatus,
    SendResult,
    TemporaryError,
    ThrottledError,
)


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class _Behaviour:
    """How one carrier's network treats a message; failure thresholds are cumulative."""

    latency_ms: float
    temporary_below: float
    throttled_below: float
    permanent_below: float
    undeliverable: float

    @classmethod
    def of(cls, settings: SimulatorSettings, override: CarrierBehaviour | None = None) -> _Behaviour:
        """The simulator's behaviour, with the fields `override` sets replacing it."""
        values = {key: getattr(settings, key) for key in CarrierBehaviour.model_fields}
        if override is not None:
            values |= override.model_dump(exclude_none=True)
        temporary, throttled = values["temporary_failure"], values["throttled"]
        return cls(
            latency_ms=values["latency_ms"],
            temporary_below=temporary,
            throttled_below=temporary + throttled,
            permanent_below=temporary + throttled + values["permanent_failure"],
            undeliverable=values["undeliverable"],
        )


class SimulatorGateway:
    """Simulated carriers: latency, a seeded failure mix and delivery reports that come later."""

    name = "simulator"

    def __init__(self, settings: SimulatorSettings, clock: Callable[[], datetime] = _utc_now) -> None:
        # Only the latest messages stay in memory, so a long run's footprint stays flat; the
        # record file (record_path) is the full account, across processes too.
        self.accepted: deque[OutgoingMessage] = deque(maxlen=settings.keep_last)
        """The latest messages the network accepted, repeats included."""
        self.attempts: deque[OutgoingMessage] = deque(maxlen=settings.keep_last)
        """The latest messages it was handed, accepted or not."""
        self._results: deque[SendResult] = deque(maxlen=settings.keep_last)  # in step with `accepted`
        self._keep_last = settings.keep_last
        self._clock = clock
        self._random = random.Random(settings.seed)
        self._default = _Behaviour.of(settings)
        self._carriers = {name: _Behaviour.of(settings, rule) for name, rule in settings.carriers.items()}
        self._has_latency = any(b.latency_ms for b in (self._default, *self._carriers.values()))
        low_ms, high_ms = settings.report_delay_ms
        self._report_delay = (low_ms / 1000, (high_ms - low_ms) / 1000)
        self._reports = settings.reports
        self._zalo_share = settings.not_on_zalo
        self._zalo_unconfirmed = settings.zalo_unconfirmed
        self._opt_out_share = settings.opt_out_replies
        self._replies: list[InboundMessage] = []
        self._concurrency = settings.concurrency
        self._limit: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None
        # Not from the seeded generator: two processes with the same seed must not share ids.
        self._prefix = secrets.token_hex(3)
        self._counter = 0
        # (due as a POSIX timestamp, tie-breaker, provider id, status): a float is what keeps a
        # send fast enough for the benchmarks, where a datetime per message is not.
        self._due: list[tuple[float, int, str, ReportStatus]] = []
        self._record_path = settings.record_path
        self._record: TextIO | None = None
        self._record_lines: list[str] = []

    async def send_batch(self, messages: Sequence[OutgoingMessage]) -> list[Outcome]:
        """Wait each message's latency (concurrently), then accept or fail each one."""
        if self._has_latency:
            await asyncio.gather(*map(self._pause, map(self._latency, messages)))
        sent_at = self._clock().timestamp()
        outcomes = [self._attempt(message, sent_at) for message in messages]
        self._flush_record()
        return outcomes

    def inbound(self, now: datetime) -> list[InboundMessage]:
        """The opt-out replies (`opt_out_replies`) of people it accepted an SMS for, each returned once."""
        replies, self._replies = self._replies, []
        return replies

    async def check(self) -> str:
        """Always fine: the simulated network is in this process."""
        return "Bộ mô phỏng nhà mạng sẵn sàng (không gửi tin thật)."

    def reports(self, now: datetime) -> list[DeliveryReport]:
        """The delivery reports due by `now`, oldest first; each is returned once."""
        due, limit = [], now.timestamp()
        while self._due and self._due[0][0] <= limit:
            at, _, provider_id, status = heapq.heappop(self._due)
            error_code = "SIM-UNDELIV" if status is ReportStatus.UNDELIVERABLE else None
            due.append(DeliveryReport(provider_id, status, datetime.fromtimestamp(at, UTC), error_code))
        return due

    async def confirm(self, delivery_ids: Sequence[int]) -> dict[int, SendResult | None]:
        """What the network accepted of `delivery_ids`: from the record file if there is one, else from memory."""
        wanted = set(delivery_ids)
        if self._record_path is None:
            return self._confirm_from_memory(wanted)
        try:
            self._flush_record()
            # Off the event loop: a benchmark's record runs to millions of lines.
            return await asyncio.to_thread(_confirm_from_record, self._record_path, wanted)
        except OSError as exc:
            raise TemporaryError(f"cannot read {self._record_path}: {exc.strerror}", code="SIM-RECORD") from exc

    def pending_reports(self) -> int:
        """Delivery reports still to come."""
        return len(self._due)

    def duplicates(self) -> dict[int, int]:
        """Delivery ids accepted more than once among the latest `keep_last`, with how many times."""
        counts = Counter(message.delivery_id for message in self.accepted)
        return {delivery_id: count for delivery_id, count in counts.items() if count > 1}

    async def close(self) -> None:
        """Flush and close the record file."""
        if self._record is not None:
            self._record.close()
            self._record = None

    def _confirm_from_memory(self, wanted: set[int]) -> dict[int, SendResult | None]:
        """The results remembered for `wanted`; the ids not found are None only if nothing was evicted."""
        found: dict[int, SendResult | None] = {}
        for message, result in zip(self.accepted, self._results, strict=True):
            if message.delivery_id in wanted:
                found.setdefault(message.delivery_id, result)
        if self._counter > self._keep_last:
            return found
        return {delivery_id: found.get(delivery_id) for delivery_id in wanted}

    def _behaviour(self, carrier: str) -> _Behaviour:
        return self._carriers.get(carrier, self._default)

    def _latency(self, message: OutgoingMessage) -> float:
        """Seconds the network takes for `message`: uniform jitter of ±50% around the carrier's mean."""
        mean_ms = self._behaviour(message.carrier).latency_ms
        return mean_ms * self._random.uniform(0.5, 1.5) / 1000 if mean_ms else 0.0

    async def _pause(self, seconds: float) -> None:
        if not seconds:
            return
        async with self._semaphore():
            await asyncio.sleep(seconds)

    def _semaphore(self) -> asyncio.Semaphore:
        """One window of in-flight messages per event loop (tests run several loops in turn)."""
        loop = asyncio.get_running_loop()
        if self._limit is None or self._limit[0] is not loop:
            self._limit = (loop, asyncio.Semaphore(self._concurrency))
        return self._limit[1]

    def _attempt(self, message: OutgoingMessage, sent_at: float) -> Outcome:
        """One draw decides the message's fate, in the order temporary, throttled, permanent, accepted.

        A Zalo message to a number not on Zalo (the same numbers every time) is refused first.
        """
        self.attempts.append(message)
        if message.channel == "zalo" and self._not_on_zalo(message.msisdn):
            return ChannelUnavailableError("simulated: number not on Zalo", code="-118")
        behaviour = self._behaviour(message.carrier)
        draw = self._random.random()
        if draw < behaviour.temporary_below:
            return TemporaryError("simulated network failure", code="SIM-TEMP")
        if draw < behaviour.throttled_below:
            return ThrottledError("simulated throttling", code="SIM-THROTTLE", retry_after=1.0)
        if draw < behaviour.permanent_below:
            return PermanentError("simulated invalid number", code="SIM-INVALID")
        return self._accept(message, behaviour, sent_at)

    def _not_on_zalo(self, msisdn: str) -> bool:
        return self._zalo_share > 0 and zlib.crc32(msisdn.encode()) / 2**32 < self._zalo_share

    def _accept(self, message: OutgoingMessage, behaviour: _Behaviour, sent_at: float) -> SendResult:
        """Give the message a provider id, record it and schedule its delivery report."""
        self._counter += 1
        result = SendResult(f"sim-{self._prefix}-{self._counter}", message.parts)
        self.accepted.append(message)
        self._results.append(result)
        if self._record_path is not None:
            self._record_lines.append(_record_line(message, result))
        if self._reports and not self._unconfirmed(message):
            self._schedule_report(result.provider_id, behaviour, sent_at)
        if message.channel == "sms" and self._replies_opt_out(message.msisdn):
            self._replies.append(InboundMessage(message.msisdn, "HUY", datetime.fromtimestamp(sent_at, UTC), self.name))
        return result

    def _replies_opt_out(self, msisdn: str) -> bool:
        # By the number's hash, not the seeded draw: the other draws stay as they were.
        return self._opt_out_share > 0 and zlib.crc32(b"mo:" + msisdn.encode()) / 2**32 < self._opt_out_share

    def _unconfirmed(self, message: OutgoingMessage) -> bool:
        """Whether Zalo never confirms this message (the phone stays off, the app unopened)."""
        return (
            message.channel == "zalo" and self._zalo_unconfirmed > 0 and self._random.random() < self._zalo_unconfirmed
        )

    def _schedule_report(self, provider_id: str, behaviour: _Behaviour, sent_at: float) -> None:
        """Draw when the message's report comes and what it says."""
        low, span = self._report_delay
        due = sent_at + low + span * self._random.random()
        undeliverable = self._random.random() < behaviour.undeliverable
        status = ReportStatus.UNDELIVERABLE if undeliverable else ReportStatus.DELIVERED
        heapq.heappush(self._due, (due, self._counter, provider_id, status))

    def _flush_record(self) -> None:
        """Put this batch's accepted messages in the record file before the batch returns."""
        if not self._record_lines or self._record_path is None:
            return
        if self._record is None:
            self._record_path.parent.mkdir(parents=True, exist_ok=True)
            self._record = self._record_path.open("a", encoding="utf-8")
            if _ends_mid_line(self._record_path):
                self._record.write("\n")  # a killed process's torn line must not swallow our first one
        self._record.write("".join(self._record_lines))
        self._record.flush()
        self._record_lines.clear()


def _record_line(message: OutgoingMessage, result: SendResult) -> str:
    # Spelled out, not json.dumps'ed, so that recording does not halve the benchmark's rate.
    quote = json.encoder.encode_basestring
    return (
        f'{{"id": {message.delivery_id}, "msisdn": {quote(message.msisdn)}, '
        f'"provider_id": "{result.provider_id}", "parts": {result.parts}}}\n'
    )


def _read_record(record_path: Path) -> Iterator[dict[str, Any]]:
    """The record's entries, in order, leaving out a torn line a killed process left behind."""
    with record_path.open("rb") as record:  # bytes: a torn line may end inside a character
        for line in record:
            if not line.endswith(b"\n"):
                return  # the torn end of a write cut short: not accepted
            try:
                entry = json.loads(line)
            except ValueError:  # a torn line that a later process started a new line after
                continue
            yield entry


def _ends_mid_line(path: Path) -> bool:
    """Whether the file ends in a torn line."""
    with path.open("rb") as record:
        if record.seek(0, os.SEEK_END) == 0:
            return False
        record.seek(-1, os.SEEK_END)
        return record.read(1) != b"\n"


def _confirm_from_record(record_path: Path, wanted: set[int]) -> dict[int, SendResult | None]:
    """Answers for `wanted` from a record file, which holds everything any process accepted."""
    answers: dict[int, SendResult | None] = dict.fromkeys(wanted)
    unread = set(wanted)
    with contextlib.suppress(FileNotFoundError):  # no record yet: nothing accepted
        for entry in _read_record(record_path):
            if entry["id"] not in unread:
                continue
            unread.discard(entry["id"])
            if "parts" in entry:
                answers[entry["id"]] = SendResult(entry["provider_id"], entry["parts"])
            else:  # a line from before parts were recorded: accepted, but how many parts is not known
                del answers[entry["id"]]
            if not unread:
                break
    return answers


def recorded_duplicates(record_path: Path) -> dict[int, int]:
    """Delivery ids a record file shows accepted more than once, by any process that wrote it."""
    counts = Counter(entry["id"] for entry in _read_record(record_path))
    return {delivery_id: count for delivery_id, count in counts.items() if count > 1}
