"""Errors of the API as RFC 9457 problem documents (`application/problem+json`), in the caller's language.

Every error the API answers has the same shape: `type` (a URN naming the kind, stable for
programs), `title` (the kind in words), `status`, `detail` (what went wrong here, as the domain
said it), `instance` (the path asked), `code` (the domain error's code, as `--json` prints it) and,
for a request that does not validate, `errors` (one entry per field). Titles and field messages
follow `Accept-Language` (Vietnamese by default, English); a domain's `detail` is in Vietnamese,
the language it is written in.

Status codes: `not_found` 404; `state` 409 (the thing exists, its state forbids the action);
`forbidden` 403 (four-eyes: the caller holds the role but may not act on their own work, the
same answer as a missing role, since in both cases this person may not do this); `usage` and
`rejected` 422 (understood, refused); `config` 409 (the deployment cannot do it as set up).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from dispatcher.errors import CanhBaoError
from dispatcher.web import i18n

MEDIA_TYPE = "application/problem+json"
STATUS_OF = {"not_found": 404, "state": 409, "forbidden": 403, "usage": 422, "rejected": 422, "config": 409}
TITLES = {
    "unauthenticated": "Cần đăng nhập.",
    "forbidden": "Bạn không có quyền làm việc này.",
    "csrf": "Phiên làm việc đã hết hạn hoặc biểu mẫu đã cũ; hãy tải lại trang và thử lại.",
    "not_found": "Không tìm thấy.",
    "state": "Trạng thái hiện tại không cho phép việc này.",
    "usage": "Yêu cầu không thực hiện được như đã gửi.",
    "rejected": "Dữ liệu bị từ chối.",
    "config": "Cấu hình của hệ thống không cho phép việc này.",
    "validation": "Dữ liệu gửi lên không hợp lệ.",
    "malformed": "Nội dung yêu cầu không đọc được.",
    "method_not_allowed": "Phương thức không được hỗ trợ ở địa chỉ này.",
    "http": "Yêu cầu không thực hiện được.",
    "too_large": "Nội dung gửi lên quá lớn.",
}

i18n.register(
    {
        "Không tìm thấy.": "Not found.",
        "Trạng thái hiện tại không cho phép việc này.": "The current state does not allow this.",
        "Yêu cầu không thực hiện được như đã gửi.": "The request cannot be carried out as sent.",
        "Dữ liệu bị từ chối.": "The data was refused.",
        "Cấu hình của hệ thống không cho phép việc này.": "The deployment's configuration does not allow this.",
        "Dữ liệu gửi lên không hợp lệ.": "The data sent is not valid.",
        "Nội dung yêu cầu không đọc được.": "The request's body cannot be read.",
        "Phương thức không được hỗ trợ ở địa chỉ này.": "This method is not supported at this address.",
        "Yêu cầu không thực hiện được.": "The request cannot be carried out.",
        "Nội dung gửi lên quá lớn.": "The content sent is too large.",
        "Không có địa chỉ này trong API.": "There is no such address in the API.",
        "Có {n} trường không hợp lệ.": "{n} fields are not valid.",
    }
)


class FieldError(BaseModel):
    """One field of the request that does not validate."""

    location: str = Field(examples=["body.valid_days"])
    message: str = Field(examples=["phải lớn hơn hoặc bằng 1"])
    type: str = Field(examples=["greater_than_equal"])


class Problem(BaseModel):
    """An RFC 9457 problem document."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"type": "urn:canhbao:problem:forbidden", "title": "Bạn không có quyền làm việc này.", "status": 403,
                 "detail": "'lan' đã tạo đợt gửi 7: cần một người khác duyệt (nguyên tắc bốn mắt).",
                 "instance": "/api/v1/blasts/7/approve", "code": "forbidden"}
            ]
        }
    )  # fmt: skip

    type: str
    title: str
    status: int
    detail: str
    instance: str
    code: str
    errors: list[FieldError] | None = None


def problem(
    request: Request,
    status: int,
    code: str,
    detail: str | None = None,
    errors: Sequence[FieldError] = (),
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """The problem document for `code`, its title (and a detail written by us) in the request's language."""
    _ = i18n.translator(i18n.api_language(request))
    title = _(TITLES.get(code, TITLES["http"]))
    body = Problem(type=f"urn:canhbao:problem:{code}", title=title, status=status, detail=detail or title,
                   instance=request.url.path, code=code, errors=list(errors) or None)  # fmt: skip
    return JSONResponse(body.model_dump(exclude_none=True), status, headers=headers, media_type=MEDIA_TYPE)


def refusal(request: Request, exc: CanhBaoError) -> JSONResponse:
    """A domain error as a problem: its code decides the status, its message is the detail."""
    return problem(request, STATUS_OF.get(exc.code, 422), exc.code, str(exc))


# What pydantic says, in Vietnamese: its English is kept for English callers.
_FIELD_MESSAGES = {
    "missing": "thiếu trường này",
    "int_parsing": "cần một số nguyên",
    "int_type": "cần một số nguyên",
    "float_parsing": "cần một số",
    "float_type": "cần một số",
    "string_type": "cần một chuỗi",
    "bool_parsing": "cần true hoặc false",
    "list_type": "cần một danh sách",
    "dict_type": "cần một đối tượng JSON",
    "model_attributes_type": "cần một đối tượng JSON",
    "json_invalid": "nội dung không phải JSON hợp lệ",
    "string_too_short": "quá ngắn",
    "string_too_long": "quá dài",
    "greater_than_equal": "phải lớn hơn hoặc bằng {ge}",
    "greater_than": "phải lớn hơn {gt}",
    "less_than_equal": "phải nhỏ hơn hoặc bằng {le}",
    "literal_error": "phải là một trong: {expected}",
    "enum": "phải là một trong: {expected}",
    "datetime_parsing": "cần thời điểm ISO 8601, ví dụ 2026-12-01T09:00:00+07:00",
    "datetime_type": "cần thời điểm ISO 8601, ví dụ 2026-12-01T09:00:00+07:00",
    "datetime_from_date_parsing": "cần thời điểm ISO 8601, ví dụ 2026-12-01T09:00:00+07:00",
    "extra_forbidden": "trường không có trong API",
    "value_error": "giá trị không hợp lệ",
}


def field_errors(request: Request, errors: Sequence[Any]) -> list[FieldError]:
    """Pydantic's errors as field errors: where, what (Vietnamese unless the caller reads English), which kind."""
    english = i18n.api_language(request) == "en"
    found = []
    for error in errors:
        kind = str(error.get("type", "value_error"))
        message = error.get("msg", "") if english else _vietnamese(kind, error.get("ctx") or {}, error.get("msg", ""))
        where = ".".join(str(part) for part in error.get("loc", ()))
        found.append(FieldError(location=where, message=str(message), type=kind))
    return found


def _vietnamese(kind: str, context: dict[str, Any], fallback: str) -> str:
    template = _FIELD_MESSAGES.get(kind)
    if template is None:
        return fallback
    try:
        return template.format(**{k: str(v) for k, v in context.items()})
    except (KeyError, IndexError):
        return template
