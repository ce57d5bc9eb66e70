"""What a Vietnamese reader sees for each domain word: every state, carrier and reason has a label."""

from __future__ import annotations

from enum import StrEnum

import pytest

from dispatcher import blasts, labels
from dispatcher.domain import AlertStatus, BlastState, DeliveryStatus, RunOutcome, ScheduleState
from dispatcher.gateways.base import (
    GatewayDisabledError,
    NotSentError,
    PermanentError,
    TemporaryError,
    ThrottledError,
    UnknownOutcomeError,
)
from dispatcher.phones import Carrier


@pytest.mark.parametrize(
    ("kind", "table"),
    [(AlertStatus, labels.ALERT_STATUSES), (BlastState, labels.BLAST_STATES), (ScheduleState, labels.SCHEDULE_STATES),
     (DeliveryStatus, labels.DELIVERY_STATES), (RunOutcome, labels.RUN_OUTCOMES), (Carrier, labels.CARRIERS)],
)  # fmt: skip
def test_every_state_has_its_vietnamese_name(kind: type[StrEnum], table: dict) -> None:
    """No member of a state enum (or carrier) reaches a Vietnamese user as its code."""
    assert set(table) == set(kind)
    assert all(label and label != member.value for member, label in table.items())


def test_every_exclusion_reason_has_its_vietnamese_name() -> None:
    """Each reason a preview leaves people out for is shown in Vietnamese."""
    assert set(labels.EXCLUSIONS) == set(blasts.REASONS)


def test_a_state_reads_the_same_from_its_code_or_its_member() -> None:
    """`labels.blast_state('scheduled')` and the enum member give one label; an unknown code shows as stored."""
    assert labels.blast_state("scheduled") == labels.blast_state(BlastState.SCHEDULED) == "đã lên lịch"
    assert labels.alert_status("retired") == "đã ngừng dùng"
    assert labels.schedule_state("disabled") == "tắt"
    assert labels.exclusion("opted_out") == "từ chối nhận"
    assert labels.blast_state("not_a_state") == "not_a_state"


def test_audiences_and_carriers_read_by_name_however_they_were_written() -> None:
    """Slugs and typed forms ('sinh viên', 'all', 'vina') read as their Vietnamese names; unknown ones as typed."""
    assert labels.audiences(["student", "người lao động", "all"]) == (
        "học sinh, sinh viên; công nhân, người lao động; tất cả"
    )
    assert labels.carriers(["vina", "Viettel", "không rõ"]) == "VinaPhone, Viettel, không rõ"


@pytest.mark.parametrize(
    "error",
    [ThrottledError("slow down"), GatewayDisabledError("bad credentials"), UnknownOutcomeError("no answer"),
     NotSentError("no link"), TemporaryError("timeout"), PermanentError("invalid number")],
    ids=lambda error: type(error).__name__,
)  # fmt: skip
def test_every_attempt_outcome_an_error_records_reads_in_vietnamese(error) -> None:
    """The outcome a failed attempt is recorded as (`log --delivery` shows it) has a Vietnamese label."""
    from dispatcher.dispatch import _kind

    assert _kind(error) in labels.ATTEMPT_OUTCOMES
