"""The console's two languages: Vietnamese, written in the templates and the code, and English beside it.

Every text a person reads is written in Vietnamese where it is used (`_("Đăng nhập")`); each
web module registers the English of its own texts with `register({...})`. A text without an
English entry shows in Vietnamese, never as a key. The language is the `lang` cookie's (set by
the switch in the page header), Vietnamese by default; the API follows `Accept-Language`.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request

LANGUAGES = ("vi", "en")
DEFAULT = "vi"
COOKIE = "lang"

_english: dict[str, str] = {}


def register(texts: dict[str, str]) -> None:
    """Add English translations of Vietnamese texts."""
    _english.update(texts)


def translator(lang: str) -> Callable[[str], str]:
    """The function templates call `_`: the text in `lang`, Vietnamese when no translation is known."""
    if lang != "en":
        return lambda text: text
    return lambda text: _english.get(text, text)


def page_language(request: Request) -> str:
    """The language a page is shown in: the visitor's choice, else Vietnamese."""
    chosen = request.cookies.get(COOKIE, DEFAULT)
    return chosen if chosen in LANGUAGES else DEFAULT


def api_language(request: Request) -> str:
    """The language of an API answer: the first of `Accept-Language` that we have, else Vietnamese."""
    for part in request.headers.get("accept-language", "").split(","):
        tag = part.split(";")[0].strip().lower()[:2]
        if tag in LANGUAGES:
            return tag
    return DEFAULT


register(
    {
        "Đăng nhập": "Sign in",
        "Đăng xuất": "Sign out",
        "Tên đăng nhập": "Username",
        "Mật khẩu": "Password",
        "Bảng điều khiển": "Dashboard",
        "Cảnh báo": "Alerts",
        "Đợt gửi": "Blasts",
        "Nhật ký gửi": "Delivery log",
        "Thuê bao": "Subscribers",
        "Lịch định kỳ": "Schedules",
        "Tin đến": "Inbox",
        "Nhật ký thao tác": "Audit log",
        "Người dùng": "Users",
        "Cổng gửi": "Gateways",
        "Bạn không có quyền xem trang này.": "You are not allowed to see this page.",
        "Bạn không có quyền làm việc này.": "You are not allowed to do this.",
        "Cần đăng nhập.": "Please sign in.",
        "Phiên làm việc đã hết hạn hoặc biểu mẫu đã cũ; hãy tải lại trang và thử lại.": (
            "Your session has expired or the form is stale; reload the page and try again."
        ),
        "Tên đăng nhập hoặc mật khẩu không đúng (hoặc tài khoản đã bị khoá).": (
            "Wrong username or password (or the account is disabled)."
        ),
        "Vai trò": "Roles",
        "Không tìm thấy trang.": "Page not found.",
        "Về trang chính": "Back to the start page",
        "Công an": "Police",
        "Người duyệt": "Approver",
        "Đầu mối viễn thông": "Telecom liaison",
        "Vận hành": "Operator",
        "Quản trị": "Administrator",
        "Cảnh Báo — cảnh báo lừa đảo qua SMS và Zalo": "Cảnh Báo — scam warnings by SMS and Zalo",
    }
)
