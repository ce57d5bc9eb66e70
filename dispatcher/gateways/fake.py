"""A gateway for tests, like httpx's MockTransport: it records what it was sent and fails on request.

It confirms from what it recorded, which is everything it ever accepted, so an id it never
accepted is answered None; set `confirms` to False to play a gateway that cannot tell.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from dispatcher.gateways.base import (
    DeliveryReport,
    GatewayError,
    InboundMessage,
    Outcome,
    OutgoingMessage,
    ReportStatus,
    SendResult,
)


class FakeGateway:
    """Accepts everything (provider id `fake-<delivery id>`) unless told to fail."""

    def __init__(self, name: str = "fake") -> None:
        self.name = name
        self.sent: list[OutgoingMessage] = []
        """Every message handed to it, in order, failed ones included."""
        self.closed = False
        """Whether `close()` was called."""
        self.confirms = True
        """Whether `confirm()` answers; False makes it answer {}, like a gateway that cannot tell."""
        self._accepted: dict[int, SendResult] = {}
        self._fail_next: list[GatewayError] = []
        self._rules: list[tuple[Callable[[OutgoingMessage], bool], GatewayError]] = []
        self._reports: list[tuple[str, ReportStatus, str | None, datetime | None]] = []
        self._texts: list[tuple[str, str, datetime | None]] = []
        self.check_error: GatewayError | None = None
        """What `check()` raises; None: it answers that all is well."""

    def fail_next(self, n: int, error: GatewayError) -> None:
        """Make the next `n` messages fail with `error` (before any `fail_when` rule applies)."""
        self._fail_next.extend([error] * n)

    def fail_when(self, predicate: Callable[[OutgoingMessage], bool], error: GatewayError) -> None:
        """Make every message for which `predicate` is true fail with `error`, from now on."""
        self._rules.append((predicate, error))

    def queue_report(
        self, provider_id: str, status: ReportStatus, error_code: str | None = None, at: datetime | None = None
    ) -> None:
        """Make `reports()` return a report for `provider_id`, once `at` has come (at once if None)."""
        self._reports.append((provider_id, status, error_code, at))

    def queue_text(self, msisdn: str, text: str, at: datetime | None = None) -> None:
        """Make `inbound()` return a text from `msisdn`, once `at` has come (at once if None)."""
        self._texts.append((msisdn, text, at))

    def inbound(self, now: datetime) -> list[InboundMessage]:
        """The queued texts due by `now`, each returned once; one queued without a time is dated `now`."""
        due = [entry for entry in self._texts if entry[2] is None or entry[2] <= now]
        self._texts = [entry for entry in self._texts if entry not in due]
        return [InboundMessage(msisdn, text, at or now, self.name) for msisdn, text, at in due]

    async def check(self) -> str:
        """All is well, unless `check_error` says otherwise."""
        if self.check_error is not None:
            raise self.check_error
        return "Cổng thử nghiệm sẵn sàng."

    async def send_batch(self, messages: Sequence[OutgoingMessage]) -> list[Outcome]:
        """Record the messages; one outcome each, failing those it was told to fail."""
        self.sent.extend(messages)
        outcomes = [self._outcome(message) for message in messages]
        for message, outcome in zip(messages, outcomes, strict=True):
            if isinstance(outcome, SendResult):
                self._accepted.setdefault(message.delivery_id, outcome)
        return outcomes

    async def confirm(self, delivery_ids: Sequence[int]) -> dict[int, SendResult | None]:
        """The SendResult each id was first accepted with, None for one never accepted ({} if `confirms` is off)."""
        if not self.confirms:
            return {}
        return {delivery_id: self._accepted.get(delivery_id) for delivery_id in delivery_ids}

    def reports(self, now: datetime) -> list[DeliveryReport]:
        """The queued reports due by `now`, each returned once; a report queued without a time is dated `now`."""
        due = [entry for entry in self._reports if entry[3] is None or entry[3] <= now]
        self._reports = [entry for entry in self._reports if entry not in due]
        return [DeliveryReport(pid, status, at or now, code) for pid, status, code, at in due]

    async def close(self) -> None:
        """Remember that it was closed."""
        self.closed = True

    def _outcome(self, message: OutgoingMessage) -> Outcome:
        if self._fail_next:
            return self._fail_next.pop(0)
        for predicate, error in self._rules:
            if predicate(message):
                return error
        return SendResult(f"fake-{message.delivery_id}", message.parts)
