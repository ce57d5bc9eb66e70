"""Errors a user reads: each carries a message in the user's language, a machine code and the exit status.

The contract every command follows (README, "Exit status"):

- 0: success.
- 1 (`rejected`): data was understood, checked and refused: an alert or schedule file or the
  content given to `alerts add`, rows of an import, a segment that selects nobody. Fix the data.
- 2: the command cannot be carried out as asked. Fix the command, the setup or wait:
  `usage` (an unknown command or option, a missing one, a bad value of an option or argument:
  an unknown region, audience, carrier, channel, encoding or status, a time that cannot be read),
  `not_found` (the alert, blast, campaign or file named does not exist), `state` (it exists, but
  its state forbids the action, or someone changed it meanwhile), `forbidden` (four-eyes: nobody
  approves their own work), `config` (the configuration file or environment).
- 130 (`interrupted`): Ctrl-C; what was being done is rolled back.

With `--json`, an error is one JSON document on stdout: `{"error": {"code": …, "message": …}}`.
"""

from __future__ import annotations

import re


class CanhBaoError(Exception):
    """Base of the errors the CLI turns into a message, a code and an exit status.

    The message speaks of the thing ("giờ bắt đầu"), never of one face's way to give it: the
    console and the API show it as it is, and the CLI puts its option before it (`--start-at: …`),
    found from `field`, the domain's name of what the message is about (`start_at`).
    """

    exit_code = 2
    code = "usage"
    field: str | None = None

    def __init__(self, *args: object, field: str | None = None) -> None:
        super().__init__(*args)
        if field is not None:
            self.field = field


class ConfigError(CanhBaoError):
    """The configuration (file or environment) is wrong; nothing was started."""

    code = "config"


class UsageError(CanhBaoError):
    """A command was called in a way that cannot work (a bad option value, an unknown name)."""


class NotFound(UsageError):
    """The alert, blast, campaign or file the command names does not exist."""

    code = "not_found"


class StateError(UsageError):
    """The thing exists, but its state forbids the action (or it changed meanwhile)."""

    code = "state"


class NotAllowed(UsageError):
    """This user may not do this (four-eyes: nobody approves what they wrote or created)."""

    code = "forbidden"


class InputRejected(CanhBaoError):
    """Some input data was refused: an invalid alert or schedule file, rejected rows."""

    exit_code = 1
    code = "rejected"


class Interrupted(CanhBaoError):
    """The user pressed Ctrl-C; the work in progress was rolled back."""

    exit_code = 130
    code = "interrupted"


# What tomllib says, in Vietnamese; its own wording is kept where none matches.
_TOML_PROBLEMS = [
    (r"Expected '=' after a key in a key/value pair", "thiếu '=' sau tên khoá"),
    (r"Expected '\]' at the end of a table declaration", "thiếu ']' đóng tên bảng"),
    (r"Expected '\]\]' at the end of an array declaration", "thiếu ']]' đóng tên mảng bảng"),
    (r"Invalid initial character for a key part", "tên khoá bắt đầu bằng ký tự không hợp lệ"),
    (r"Invalid statement", "dòng không phải khoá = giá trị hay [bảng]"),
    (r"Invalid value", "giá trị không hợp lệ (chuỗi cần dấu ngoặc kép)"),
    (r"Invalid date or datetime", "ngày giờ không hợp lệ"),
    (r"Invalid hex value", "mã hex không hợp lệ"),
    (r"Unclosed array", "danh sách [ … ] chưa đóng"),
    (r"Unclosed inline table", "bảng { … } chưa đóng"),
    (r"Unterminated string", "chuỗi chưa đóng dấu ngoặc kép"),
    (r"Unescaped '\\' in a string", "dấu '\\' trong chuỗi cần viết '\\\\'"),
    (r"Escaped character is not a Unicode scalar value", "mã ký tự Unicode không hợp lệ"),
    (r"Cannot overwrite a value", "khoá đã có giá trị"),
    (r"Cannot declare (.+) twice", r"khai báo \1 hai lần"),
    (r"Cannot redefine namespace (.+)", r"khai báo lại bảng \1"),
    (r"Cannot mutate immutable namespace (.+)", r"không sửa được bảng \1"),
    (r"Duplicate inline table key (.+)", r"khoá \1 lặp lại"),
    (r"Expected (.+)", r"thiếu \1"),
    (r"Found invalid character (.+)", r"ký tự không hợp lệ \1"),
    (r"Illegal character '\\n'", "chuỗi chưa đóng dấu ngoặc kép trước khi hết dòng"),
    (r"Illegal character (.+)", r"ký tự không được phép \1"),
]


def toml_problem(exc: ValueError) -> str:
    """A TOML syntax error in Vietnamese, where first: 'dòng 3, cột 7: thiếu '=' sau tên khoá'."""
    text = str(exc)
    found = re.fullmatch(r"(?s)(.*) \(at (?:line (\d+), column (\d+)|end of document)\)", text)
    reason, line, column = found.groups() if found else (text, None, None)
    for pattern, vietnamese in _TOML_PROBLEMS:
        if re.fullmatch(pattern, reason):
            reason = re.sub(pattern, vietnamese, reason)
            break
    where = f"dòng {line}, cột {column}" if line else "cuối tệp"
    return f"{where}: {reason}"
