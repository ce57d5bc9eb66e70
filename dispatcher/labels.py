"""Domain words as a Vietnamese reader sees them: carriers, priorities, audiences, and every state.

Both faces show these labels, and what a user reads back in a table they may type back in
(`log --status "đã gửi"`, accents optional). `--json` keeps the codes.
"""

from __future__ import annotations

from collections.abc import Iterable

from dispatcher.domain import (
    AlertStatus,
    Audience,
    BlastState,
    DeliveryStatus,
    Priority,
    RunOutcome,
    ScheduleState,
    fold,
    means_everyone,
)
from dispatcher.errors import UsageError
from dispatcher.phones import Carrier, InvalidNumber, parse_carrier

CARRIERS = {
    Carrier.VIETTEL: "Viettel", Carrier.VINAPHONE: "VinaPhone", Carrier.MOBIFONE: "MobiFone",
    Carrier.VIETNAMOBILE: "Vietnamobile", Carrier.GMOBILE: "Gmobile", Carrier.ITEL: "Itel", Carrier.REDDI: "Reddi",
    Carrier.UNKNOWN: "chưa rõ",
}  # fmt: skip
EVERYONE = "tất cả"  # an audience of `all`: no audience filter
DEFAULT_PRICE_ROW = "các mạng khác"  # the `default` key of `[sms] price_per_part`
PRIORITIES = {Priority.NORMAL: "thường", Priority.URGENT: "khẩn"}
CHANNELS = {"sms": "SMS", "zalo": "Zalo", "zalo_then_sms": "Zalo, rồi SMS"}
DELIVERY_STATES = {
    DeliveryStatus.QUEUED: "chờ gửi", DeliveryStatus.SENDING: "đang gửi", DeliveryStatus.SENT: "đã gửi",
    DeliveryStatus.DELIVERED: "đã nhận", DeliveryStatus.FAILED: "lỗi", DeliveryStatus.UNDELIVERABLE: "không tới được",
    DeliveryStatus.EXPIRED: "quá hạn", DeliveryStatus.UNKNOWN: "chưa rõ", DeliveryStatus.CANCELLED: "đã huỷ",
}  # fmt: skip
ALERT_STATUSES = {
    AlertStatus.DRAFT: "nháp", AlertStatus.SUBMITTED: "chờ duyệt", AlertStatus.APPROVED: "đã duyệt",
    AlertStatus.REJECTED: "bị trả lại", AlertStatus.RETIRED: "đã ngừng dùng",
}  # fmt: skip
BLAST_STATES = {
    BlastState.PENDING_APPROVAL: "chờ duyệt", BlastState.SCHEDULED: "đã lên lịch", BlastState.RUNNING: "đang gửi",
    BlastState.PAUSED: "tạm dừng", BlastState.COMPLETED: "hoàn tất", BlastState.CANCELLED: "đã huỷ",
    BlastState.EXPIRED: "quá hạn", BlastState.MISSED: "lỡ giờ",
}  # fmt: skip
SCHEDULE_STATES = {
    ScheduleState.PENDING_APPROVAL: "chờ duyệt", ScheduleState.ACTIVE: "đang chạy", ScheduleState.DISABLED: "tắt",
    ScheduleState.REMOVED: "đã gỡ",
}  # fmt: skip
RUN_OUTCOMES = {
    RunOutcome.STARTED: "đã bắt đầu", RunOutcome.MISSED: "lỡ lượt, không gửi",
    RunOutcome.NO_ALERT: "không có mẫu đã duyệt, không gửi",
}  # fmt: skip
# Why a blast's preview leaves a person out (the keys of its `excluded`).
EXCLUSIONS = {
    "opted_out": "từ chối nhận", "no_channel": "không có kênh này", "already_received": "đã nhận mẫu này",
    "capped": "đã đủ số tin trong 24 giờ",
}  # fmt: skip


def carrier(code: str) -> str:
    """'viettel' → 'Viettel'; the price table's 'default' → 'các mạng khác'; anything else as stored."""
    if code == "default":
        return DEFAULT_PRICE_ROW
    return CARRIERS.get(code, code)  # type: ignore[call-overload]  # a StrEnum key matches its text


def priority(code: str) -> str:
    """'urgent' → 'khẩn'."""
    return PRIORITIES.get(code, code)  # type: ignore[call-overload]


def channel(code: str) -> str:
    """'zalo_then_sms' → 'Zalo, rồi SMS'."""
    return CHANNELS.get(code, code)


def audiences(names: Iterable[str]) -> str:
    """['student', 'worker'] → 'học sinh, sinh viên; công nhân, người lao động'; as typed too ('sinh viên', 'all')."""
    return "; ".join(_audience(name) for name in names)


def _audience(name: str) -> str:
    if means_everyone(name):
        return EVERYONE
    try:
        return Audience.parse(name).label
    except ValueError:
        return name


def carriers(names: Iterable[str]) -> str:
    """['vina', 'viettel'] → 'VinaPhone, Viettel': carriers as written in a file or an option, by their names."""
    return ", ".join(_carrier(name) for name in names)


def _carrier(name: str) -> str:
    try:
        return carrier(parse_carrier(name).value)
    except InvalidNumber:  # what parse_carrier raises for a name it does not know
        return name


def delivery_state(code: str) -> str:
    """'sent' → 'đã gửi'."""
    return DELIVERY_STATES.get(code, code)  # type: ignore[call-overload]


def alert_status(code: str) -> str:
    """'retired' → 'đã ngừng dùng'."""
    return ALERT_STATUSES.get(code, code)  # type: ignore[call-overload]


def blast_state(code: str) -> str:
    """'scheduled' → 'đã lên lịch'."""
    return BLAST_STATES.get(code, code)  # type: ignore[call-overload]


def schedule_state(code: str) -> str:
    """'disabled' → 'tắt'."""
    return SCHEDULE_STATES.get(code, code)  # type: ignore[call-overload]


def run_outcome(code: str) -> str:
    """'missed' → 'lỡ lượt, không gửi': what one fire time of a campaign came to."""
    return RUN_OUTCOMES.get(code, code)  # type: ignore[call-overload]


def exclusion(reason: str) -> str:
    """'opted_out' → 'từ chối nhận'."""
    return EXCLUSIONS.get(reason, reason)


def parse_delivery_state(text: str) -> DeliveryStatus:
    """A delivery state typed as its code ('failed') or as shown ('lỗi', 'da gui', 'Chưa rõ'); else UsageError."""
    key = fold(text).replace("_", " ")
    for status, label in DELIVERY_STATES.items():
        if key in (status.value, fold(label)):
            return status
    known = ", ".join(f"'{label}' ({status.value})" for status, label in DELIVERY_STATES.items())
    raise UsageError(f"Trạng thái tin {text.strip()!r} không có (nhận: {known}).")


CIRCUIT_STATES = {"closed": "hoạt động", "open": "tạm ngừng", "half_open": "đang thử lại"}
ATTEMPT_OUTCOMES = {
    "sent": "đã gửi", "temporary": "lỗi tạm thời", "throttled": "bị hãm tốc độ", "permanent": "lỗi vĩnh viễn",
    "expired": "quá hạn", "fallback": "chuyển sang SMS", "disabled": "nhà cung cấp từ chối cổng",
    "circuit_open": "bỏ qua: cổng tạm ngừng", "unknown": "chưa rõ: không có trả lời",
    "not_sent": "chưa gửi được: chưa có kết nối",
}  # fmt: skip


def circuit_state(code: str) -> str:
    """'open' → 'tạm ngừng'."""
    return CIRCUIT_STATES.get(code, code)


def attempt_outcome(code: str) -> str:
    """'circuit_open' → 'bỏ qua: cổng tạm ngừng'."""
    return ATTEMPT_OUTCOMES.get(code, code)


ROLES = {
    "police": "Công an", "approver": "Người duyệt", "liaison": "Đầu mối viễn thông", "operator": "Vận hành",
    "admin": "Quản trị",
}  # fmt: skip


def role(code: str) -> str:
    """A user's role as a Vietnamese reader names it."""
    return ROLES.get(code, code)
