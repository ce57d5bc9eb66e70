"""The HTTP API under `/api/v1`: the CLI's operations for programs, one router per area.

A program sends `Authorization: Bearer <token>` (`canhbao users token`, or the console's
account page); it needs no CSRF token. Every route declares its roles with `allow(...)`, the
same roles as the console's page for the same work, and calls the same domain function as the
CLI, so four-eyes, masking and caps hold once. Errors are RFC 9457 problem documents
(problems.py). The OpenAPI schema of these routes alone is `/openapi.json`, public: it holds no
data, only what the API accepts and answers, and code generators and testers fetch it before
they hold a token; every route it describes still asks for one.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from dispatcher.errors import CanhBaoError
from dispatcher.web.api import alerts, audit, blasts, deliveries, problems, schedules, subscribers
from dispatcher.web.auth import public
from dispatcher.web.templating import render

PREFIX = "/api/v1"
router = APIRouter(prefix=PREFIX)
for area in (alerts, blasts, deliveries, subscribers, schedules, audit):
    router.include_router(area.router)

# What any operation may answer besides its success: a problem document.
PROBLEM_ANSWERS = {
    "400": "Nội dung yêu cầu không đọc được (không phải JSON, hay biểu mẫu hỏng).",
    "401": "Không đăng nhập (thiếu khoá API hoặc khoá đã bị thu hồi).",
    "403": "Không có vai trò cần thiết, hoặc nguyên tắc bốn mắt: không ai duyệt việc của chính mình.",
    "404": "Không có đối tượng này.",
    "409": "Trạng thái hiện tại không cho phép việc này (hoặc cấu hình không cho phép).",
    "422": "Dữ liệu gửi lên không hợp lệ hoặc bị miền nghiệp vụ từ chối.",
}


def is_api(request: Request) -> bool:
    """Whether the request is for the API (answered with problem documents)."""
    return request.url.path.startswith(PREFIX + "/") or request.url.path == PREFIX


def install(app: FastAPI) -> None:
    """Mount the API and `/openapi.json`, and answer every API error as a problem document."""
    app.include_router(router)
    app.state.openapi = None

    @app.get("/openapi.json", include_in_schema=False, dependencies=[public()])
    async def openapi(request: Request) -> JSONResponse:
        """The OpenAPI 3.1 schema of `/api/v1`, with examples."""
        if request.app.state.openapi is None:
            request.app.state.openapi = schema(request.app)
        return JSONResponse(request.app.state.openapi)

    app.add_exception_handler(CanhBaoError, _refused)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(HTTPException, _http_error)


def schema(app: FastAPI) -> dict[str, Any]:
    """The API's routes alone, bearer-token security, and the problem document on every error answer."""
    routes = [route for route in app.routes if getattr(route, "original_router", None) is router]
    found = get_openapi(title="Cảnh Báo API", version="1", routes=routes, description=__doc__)
    components = found.setdefault("components", {})
    components.setdefault("schemas", {})["Problem"] = problems.Problem.model_json_schema(
        ref_template="#/components/schemas/{model}"
    )
    components["schemas"].update(components["schemas"]["Problem"].pop("$defs", {}))
    components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    found["security"] = [{"bearer": []}]
    answer = {"content": {problems.MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
    for operations in found["paths"].values():
        for operation in operations.values():
            for status, description in PROBLEM_ANSWERS.items():
                operation["responses"][status] = {"description": description, **answer}
    for name in ("HTTPValidationError", "ValidationError"):
        components["schemas"].pop(name, None)
    return found


async def _refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, CanhBaoError)
    if is_api(request):
        return problems.refusal(request, exc)
    return render(request, "refused.html", {"message": str(exc)}, problems.STATUS_OF.get(exc.code, 422))


async def _invalid(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    if not is_api(request):
        return await request_validation_exception_handler(request, exc)
    errors = problems.field_errors(request, exc.errors())
    _ = problems.i18n.translator(problems.i18n.api_language(request))
    detail = _("Có {n} trường không hợp lệ.").format(n=len(errors))
    return problems.problem(request, 422, "validation", detail, errors)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if not is_api(request):
        return await http_exception_handler(request, exc)
    code = {400: "malformed", 404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http")
    detail = "Không có địa chỉ này trong API." if exc.status_code == 404 else None
    _ = problems.i18n.translator(problems.i18n.api_language(request))
    return problems.problem(request, exc.status_code, code, _(detail) if detail else None, headers=exc.headers)
