"""What a failed command tells its user: one Vietnamese message, a machine code and the exit status.

Click's and Typer's own errors (unknown option, bad value, …) are translated here from their
attributes, never from their English wording where an attribute says the same.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import typer
from pydantic import ValidationError
from typer._click import exceptions as click_errors  # Typer vendors click: its exceptions live here

from dispatcher.config import expected
from dispatcher.errors import CanhBaoError, Interrupted


@dataclass(frozen=True)
class Failure:
    """How a command failed: the contract of dispatcher/errors.py."""

    code: str
    message: str
    exit_code: int
    hint: str = ""

    def to_json(self) -> dict[str, Any]:
        """The document a --json command prints instead of its result."""
        return {"error": {"code": self.code, "message": self.message}}


def describe(exc: BaseException) -> Failure | None:
    """The Failure `exc` stands for, or None when it is a bug (it is then raised as it is)."""
    if isinstance(exc, CanhBaoError):
        return Failure(exc.code, with_option(exc), exc.exit_code, getattr(exc, "hint", ""))
    if isinstance(exc, typer.Abort | KeyboardInterrupt):
        return interrupted()
    if isinstance(exc, click_errors.UsageError):
        ctx = exc.ctx
        hint = f"Xem '{ctx.command_path} --help'." if ctx is not None else ""
        return Failure("usage", _usage_message(exc), 2, hint)
    if isinstance(exc, click_errors.ClickException):
        return Failure("usage", exc.format_message(), exc.exit_code)
    return None


# The option that gives what a domain message is about (CanhBaoError.field): the CLI's own words.
OPTIONS = {
    "start_at": "--start-at", "not_after": "--not-after", "rate": "--rate", "channel": "--channel",
    "segment": "--province/--commune/--legacy-district", "limit": "--limit",
}  # fmt: skip


def with_option(exc: CanhBaoError) -> str:
    """The domain's message, after the option it is about when there is one (`--start-at: Giờ bắt đầu …`)."""
    option = OPTIONS.get(exc.field or "")
    return f"{option}: {exc}" if option else str(exc)


def interrupted() -> Failure:
    """Ctrl-C: what the command was doing was rolled back."""
    message = "Đã dừng theo yêu cầu (Ctrl-C); việc đang làm dở không được lưu."
    return Failure(Interrupted.code, message, Interrupted.exit_code)


def _usage_message(exc: click_errors.UsageError) -> str:
    if isinstance(exc, click_errors.NoSuchOption):
        where = f" trong '{exc.ctx.command_path}'" if exc.ctx else ""
        close = list(exc.possibilities or [])  # closest first, as click found them
        suggestion = f" Có phải ý bạn là {' hay '.join(repr(p) for p in close)}?" if close else ""
        return f"Không có tuỳ chọn '{exc.option_name}'{where}.{suggestion}"
    if isinstance(exc, click_errors.MissingParameter):
        where = f"'{exc.ctx.command_path}' " if exc.ctx else ""
        return f"{where}cần {_hint(exc)}."
    if isinstance(exc, click_errors.BadParameter):
        return f"Giá trị không hợp lệ cho {_hint(exc)}: {_bad_value(exc)}."
    if isinstance(exc, click_errors.BadOptionUsage):
        if "does not take a value" in exc.message:
            return f"Tuỳ chọn '{exc.option_name}' không nhận giá trị."
        return f"Tuỳ chọn '{exc.option_name}' cần một giá trị."
    if isinstance(exc, click_errors.NoArgsIsHelpError):
        return "Cần chọn một lệnh (xem danh sách ở trên)."
    return _plain_usage(exc.message)


def _hint(exc: click_errors.BadParameter) -> str:
    if exc.param_hint is not None:
        return exc.param_hint if isinstance(exc.param_hint, str) else " / ".join(map(repr, exc.param_hint))
    return exc.param.get_error_hint() if exc.param is not None else "giá trị"


def _bad_value(exc: click_errors.BadParameter) -> str:
    """Why a value was refused: pydantic said it (Typer checks types with it), or our own message."""
    cause = exc.__cause__
    if isinstance(cause, ValidationError) and cause.errors():
        error = cause.errors()[0]
        return f"{expected(error)}, nhận được {error['input']!r}"
    return exc.message.rstrip(".")


# Click's remaining usage errors carry only their English text.
_PLAIN = [
    (r"Got unexpected extra argument\(s\) \((.*)\)", r"thừa đối số: \1"),
    (r"Missing command\.", "cần chọn một lệnh"),
    (r"Argument '(.+)' takes (\d+) values\.", r"đối số '\1' cần \2 giá trị"),
]


def _plain_usage(message: str) -> str:
    for pattern, vietnamese in _PLAIN:
        if re.fullmatch(pattern, message):
            text = re.sub(pattern, vietnamese, message)
            return text[0].upper() + text[1:] + "."
    return message
