"""The domain words of shared/DESIGN.md: audiences, channels, scam methods, alert states."""

from __future__ import annotations

import unicodedata
from enum import Enum, StrEnum


class Audience(Enum):
    """Audience groups a subscriber belongs to; stored as bits of `subscribers.audience_mask`."""

    PUBLIC = ("public", 0, "người dân", ("nguoi dan", "cong dong", "toan dan"))
    """Everyone; the default group."""
    OFFICIAL = ("official", 1, "cán bộ, công chức", ("can bo", "cong chuc", "vien chuc", "can bo cong chuc"))
    """Civil servants and public employees."""
    STUDENT = ("student", 2, "học sinh, sinh viên", ("hoc sinh", "sinh vien", "hoc sinh sinh vien"))
    """Pupils and students."""
    WORKER = ("worker", 3, "công nhân, người lao động", ("cong nhan", "nguoi lao dong", "lao dong"))
    """Factory and industrial-zone workers."""
    TELECOM_STAFF = ("telecom_staff", 4, "nhân viên nhà mạng", ("nhan vien nha mang", "nha mang"))
    """Carrier staff, who pass warnings on at shops."""
    JOURNALIST = ("journalist", 5, "phóng viên, nhà báo", ("phong vien", "nha bao", "bao chi"))
    """The press."""
    LEADER = ("leader", 6, "lãnh đạo", ("lanh dao",))
    """Heads of agencies and communes."""
    ELDERLY = ("elderly", 7, "người cao tuổi", ("nguoi cao tuoi", "nguoi gia"))
    """Older people, the main target of impersonation calls."""
    BUSINESS = ("business", 8, "doanh nghiệp, hộ kinh doanh", ("doanh nghiep", "ho kinh doanh"))
    """Businesses and household businesses."""

    def __init__(self, slug: str, bit: int, label: str, aliases: tuple[str, ...]) -> None:
        self.slug = slug
        self.mask = 1 << bit
        self.label = label
        self.aliases = aliases

    @classmethod
    def parse(cls, text: str) -> Audience:
        """An audience from its slug or a Vietnamese name ('sinh viên', 'người cao tuổi'), accents ignored."""
        key = " ".join(fold(text).replace(",", " ").replace("_", " ").split())
        for audience in cls:
            if key in (audience.slug.replace("_", " "), *audience.aliases):
                return audience
        raise ValueError(text)


EVERYONE = ("all", "tat ca")  # folded: what asks for no audience filter at all


def means_everyone(text: str) -> bool:
    """True for 'all' or 'tất cả' (accents ignored): every audience, the alert's own notwithstanding."""
    return fold(text) in EVERYONE


def audience_mask(audiences: list[Audience] | set[Audience]) -> int:
    """The bit mask stored for a set of audiences."""
    mask = 0
    for audience in audiences:
        mask |= audience.mask
    return mask


def audiences_of(mask: int) -> list[Audience]:
    """The audiences whose bits are set in `mask`."""
    return [audience for audience in Audience if mask & audience.mask]


class Channel(Enum):
    """Ways a subscriber can be reached; stored as bits of `subscribers.channel_mask`."""

    SMS = ("sms", 1)
    """A text message through a carrier or aggregator."""
    ZALO = ("zalo", 2)
    """A Zalo template message (ZNS/ZBS)."""

    def __init__(self, slug: str, mask: int) -> None:
        self.slug = slug
        self.mask = mask


class AlertStatus(StrEnum):
    """Lifecycle of one alert version."""

    DRAFT = "draft"
    """Written or synced, not yet offered for approval."""
    SUBMITTED = "submitted"
    """Waiting for a second person's approval."""
    APPROVED = "approved"
    """Usable in blasts."""
    REJECTED = "rejected"
    """Sent back by an approver with a reason; the author writes a new version."""
    RETIRED = "retired"
    """Kept for history; no new blast may use it."""


class Priority(StrEnum):
    """How urgently an alert's blasts go out."""

    NORMAL = "normal"
    """A routine awareness message."""
    URGENT = "urgent"
    """A new scam wave the police flagged: overtakes normal blasts."""


# The method taxonomy of the provincial plans; police may add more in config.
METHODS: dict[str, str] = {
    "impersonating_authorities": "Giả danh công an, viện kiểm sát, tòa án",
    "fake_investment": "Đầu tư tài chính, tiền ảo, ngoại hối, chứng khoán giả",
    "easy_job_tasks": "Tuyển dụng \u201cviệc nhẹ lương cao\u201d, làm nhiệm vụ",
    "online_gambling": "Cờ bạc, cá độ trực tuyến",
    "fake_ecommerce_prize": "Thương mại điện tử, trúng thưởng, quà tặng giả",
    "multi_level_marketing": "Kinh doanh đa cấp trái phép",
    "loans_recover_money": "Cho vay trực tuyến, \u201clấy lại tiền bị lừa\u201d",
    "fake_telecom_utilities": "Giả mạo nhà mạng (khóa SIM), điện lực",
    "fake_traffic_fines": "Giả mạo thông báo phạt nguội giao thông",
    "fake_public_services": "Ứng dụng dịch vụ công, VNeID giả mạo",
    "romance": "Lừa đảo tình cảm trực tuyến",
    "weapons_trade": "Mua bán vũ khí, vật liệu nổ, pháo",
    "voip_international_calls": "Cuộc gọi VoIP, số quốc tế, cuộc gọi rác",
    "personal_data_otp": "Đánh cắp dữ liệu cá nhân, mã OTP",
}


def fold(text: str) -> str:
    """Lower-case, accent-free, single-spaced form used to compare names."""
    decomposed = unicodedata.normalize("NFD", text.strip().lower())
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(stripped.replace("đ", "d").split())


class BlastState(StrEnum):
    """Lifecycle of a blast (đợt gửi)."""

    PENDING_APPROVAL = "pending_approval"
    """Created with its preview; waits for a second person."""
    SCHEDULED = "scheduled"
    """Approved: alert version and segment are frozen; starts at start_at."""
    RUNNING = "running"
    """Recipients materialised; the worker is sending."""
    PAUSED = "paused"
    """Held by an operator: nothing new is claimed until resumed."""
    COMPLETED = "completed"
    """Every delivery reached a final state."""
    CANCELLED = "cancelled"
    """Stopped for good; unsent messages were cancelled."""
    EXPIRED = "expired"
    """Its not_after passed before it could start."""
    MISSED = "missed"
    """Its start passed more than the grace while nothing ran: never sent stale."""


class ScheduleState(StrEnum):
    """Lifecycle of a recurring campaign (chiến dịch định kỳ) loaded from schedules/."""

    PENDING_APPROVAL = "pending_approval"
    """New or changed by a sync; waits for a second person."""
    ACTIVE = "active"
    """Approved: its runs fire."""
    DISABLED = "disabled"
    """Its file says enabled = false: no run fires."""
    REMOVED = "removed"
    """Its file is gone: no run fires; its history stays."""


class RunOutcome(StrEnum):
    """What one fire time of a recurring campaign came to."""

    STARTED = "started"
    """A blast was made and started."""
    MISSED = "missed"
    """The fire time passed more than the grace while nothing ran, or a later run superseded it."""
    NO_ALERT = "no_alert"
    """None of its alerts had an approved version: nothing to send."""


class DeliveryStatus(StrEnum):
    """Lifecycle of one message; it only moves forward."""

    QUEUED = "queued"
    """Waiting to be claimed (possibly for a retry at next_attempt_at)."""
    SENDING = "sending"
    """Claimed by a worker under a lease; handed or about to be handed to a gateway."""
    SENT = "sent"
    """Accepted by a gateway; a delivery report may follow."""
    DELIVERED = "delivered"
    """The handset received it (final)."""
    FAILED = "failed"
    """Refused or given up after the allowed attempts (final)."""
    UNDELIVERABLE = "undeliverable"
    """The network reported it can never arrive (final)."""
    EXPIRED = "expired"
    """Its blast's not_after passed before it went out: never sent late (final)."""
    UNKNOWN = "unknown"
    """A worker died while sending: it may or may not have gone out; an operator decides."""
    CANCELLED = "cancelled"
    """Its blast was cancelled before it went out (final)."""


FINAL_DELIVERY_STATES = frozenset(
    {
        DeliveryStatus.DELIVERED,
        DeliveryStatus.FAILED,
        DeliveryStatus.UNDELIVERABLE,
        DeliveryStatus.EXPIRED,
        DeliveryStatus.CANCELLED,
    }
)
