"""The web face: an ASGI app (FastAPI) over the same domain functions as the CLI.

It holds the console (pages for people, signed in with a password), the API under `/api/v1`
(bearer tokens), what providers call (`/hooks/<gateway>/…`, each gateway module reading its own
requests) and `/healthz`. `canhbao serve` runs it beside the scheduler and the worker,
`canhbao web` alone (any number of them, behind a proxy). Every route declares who may use it
(dispatcher/web/auth.py).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Engine

from dispatcher.config import Settings
from dispatcher.web import admin, auth, console, health, hooks, i18n
from dispatcher.web.security import SecurityHeaders
from dispatcher.web.templating import STATIC, render
from dispatcher.web.writer import ReportWriter


def create_app(settings: Settings, engine: Engine, clock: Callable[[], datetime] | None = None) -> FastAPI:
    """The application, wired to `settings` and `engine`; `clock` dates what arrives (the wall clock by default)."""
    app = FastAPI(title="Cảnh Báo", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings
    app.state.engine = engine
    app.state.clock = clock or (lambda: datetime.now(UTC))
    app.state.writer = ReportWriter(engine, app.state.clock, settings.gateways.get)
    app.state.regions = None
    app.add_middleware(SecurityHeaders)
    app.mount("/static", auth.public_endpoint(StaticFiles(directory=STATIC)), name="static")
    app.include_router(health.router)
    app.include_router(hooks.router)
    app.include_router(auth.router)
    app.include_router(admin.router)
    app.include_router(console.router)
    _refusals(app)
    return app


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/") or "text/html" not in request.headers.get("accept", "text/html")


def _problem(request: Request, status: int, title: str, detail: str, headers: dict[str, str] | None = None) -> Response:
    _ = i18n.translator(i18n.api_language(request))
    body = {"type": "about:blank", "title": _(title), "status": status, "detail": _(detail)}
    return JSONResponse(body, status, headers=headers, media_type="application/problem+json")


def _refusals(app: FastAPI) -> None:
    """Who-may-not answers: the login page or 401, 403 with a page or a problem document."""

    @app.exception_handler(auth.NotSignedIn)
    async def not_signed_in(request: Request, exc: auth.NotSignedIn) -> Response:
        if _wants_json(request):
            return _problem(request, 401, "Cần đăng nhập.", "Cần đăng nhập.", {"WWW-Authenticate": "Bearer"})
        return auth.login_redirect(request)

    @app.exception_handler(auth.Forbidden)
    async def forbidden(request: Request, exc: auth.Forbidden) -> Response:
        message = "Bạn không có quyền làm việc này."
        if _wants_json(request):
            return _problem(request, 403, message, message)
        return render(request, "refused.html", {"message": "Bạn không có quyền xem trang này."}, 403)

    @app.exception_handler(auth.CsrfRefused)
    async def csrf_refused(request: Request, exc: auth.CsrfRefused) -> Response:
        message = "Phiên làm việc đã hết hạn hoặc biểu mẫu đã cũ; hãy tải lại trang và thử lại."
        if _wants_json(request):
            return _problem(request, 403, message, message)
        return render(request, "refused.html", {"message": message}, 403)
