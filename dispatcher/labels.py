"""Domain words as a Vietnamese reader sees them: carriers, priorities, audiences, delivery states.

Both faces show these labels, and what a user reads back in a table they may type back in
(`log --status "đã gửi"`, accents optional). `--json` keeps the codes.
"""

from __future__ import annotations

from collections.abc import Iterable

from dispatcher.domain import Audience, DeliveryStatus, Priority, fold
from dispatcher.errors import UsageError
from dispatcher.phones import Carrier

CARRIERS = {
    Carrier.VIETTEL: "Viettel", Carrier.VINAPHONE: "VinaPhone", Carrier.MOBIFONE: "MobiFone",
    Carrier.VIETNAMOBILE: "Vietnamobile", Carrier.GMOBILE: "Gmobile", Carrier.ITEL: "Itel", Carrier.REDDI: "Reddi",
    Carrier.UNKNOWN: "chưa rõ",
}  # fmt: skip
DEFAULT_PRICE_ROW = "các mạng khác"  # the `default` key of `[sms] price_per_part`
PRIORITIES = {Priority.NORMAL: "thường", Priority.URGENT: "khẩn"}
CHANNELS = {"sms": "SMS", "zalo": "Zalo", "zalo_then_sms": "Zalo, rồi SMS"}
DELIVERY_STATES = {
    DeliveryStatus.QUEUED: "chờ gửi", DeliveryStatus.SENDING: "đang gửi", DeliveryStatus.SENT: "đã gửi",
    DeliveryStatus.DELIVERED: "đã nhận", DeliveryStatus.FAILED: "lỗi", DeliveryStatus.UNDELIVERABLE: "không tới được",
    DeliveryStatus.EXPIRED: "quá hạn", DeliveryStatus.UNKNOWN: "chưa rõ", DeliveryStatus.CANCELLED: "đã huỷ",
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


def audiences(slugs: Iterable[str]) -> str:
    """['student', 'worker'] → 'học sinh, sinh viên; công nhân, người lao động'."""
    names = {audience.slug: audience.label for audience in Audience}
    return "; ".join(names.get(slug, slug) for slug in slugs)


def delivery_state(code: str) -> str:
    """'sent' → 'đã gửi'."""
    return DELIVERY_STATES.get(code, code)  # type: ignore[call-overload]


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
    "circuit_open": "bỏ qua: cổng tạm ngừng",
}  # fmt: skip


def circuit_state(code: str) -> str:
    """'open' → 'tạm ngừng'."""
    return CIRCUIT_STATES.get(code, code)


def attempt_outcome(code: str) -> str:
    """'circuit_open' → 'bỏ qua: cổng tạm ngừng'."""
    return ATTEMPT_OUTCOMES.get(code, code)
