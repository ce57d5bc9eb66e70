"""The web face: an ASGI app (FastAPI) over the same domain functions as the CLI.

It holds the console (pages for people, signed in with a password), the API under `/api/v1`
(bearer tokens, its schema at `/openapi.json`), what providers call (`/hooks/<gateway>/…`, each
gateway module reading its own requests), `/metrics` and `/healthz`. `canhbao serve` runs it
beside the scheduler and the worker, `canhbao web` alone (any number of them, behind a proxy).
Every route declares who may use it (dispatcher/web/auth.py).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from fastapi.telemetry import TelemetryConfig
from sqlalchemy import Engine

from dispatcher import overview
from dispatcher.config import Settings
from dispatcher.web import (
    admin,
    alerts,
    api,
    audit,
    auth,
    blasts,
    console,
    health,
    hooks,
    inbox,
    metrics,
    reports,
    schedules,
    subscribers,
)
from dispatcher.web.api import problems
from dispatcher.web.fresh import Fresh
from dispatcher.web.security import SecurityHeaders
from dispatcher.web.templating import STATIC, render
from dispatcher.web.writer import ReportWriter


def create_app(settings: Settings, engine: Engine, clock: Callable[[], datetime] | None = None) -> FastAPI:
    """The application, wired to `settings` and `engine`; `clock` dates what arrives (the wall clock by default)."""
    # Our figures go out through /metrics; FastAPI's own OpenTelemetry layer would otherwise ask on
    # every request whether a provider has been configured since.
    telemetry: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}
    app = FastAPI(title="Cảnh Báo", docs_url=None, redoc_url=None, openapi_url=None, telemetry=telemetry)
    app.state.settings = settings
    app.state.engine = engine
    app.state.clock = clock or (lambda: datetime.now(UTC))
    app.state.writer = ReportWriter(engine, app.state.clock, settings.gateways.get)
    app.state.regions = None
    app.state.dashboard = Fresh(settings.web.dashboard_seconds)
    app.state.tallies = overview.Tallies()  # ended blasts' counts, kept between the dashboard's refreshes
    app.add_middleware(auth.AfterResponse)  # inside SecurityHeaders: a session's touch waits for no header
    app.add_middleware(SecurityHeaders)
    hooks.install(app)  # first: the path every delivery report takes
    app.mount("/static", auth.public_endpoint(StaticFiles(directory=STATIC)), name="static")
    app.include_router(health.router)
    app.include_router(auth.router)
    app.include_router(admin.router)
    app.include_router(console.router)
    app.include_router(blasts.router)
    app.include_router(subscribers.router)
    app.include_router(audit.router)
    app.include_router(inbox.router)
    app.include_router(alerts.router)
    app.include_router(schedules.router)
    app.include_router(reports.router)
    app.include_router(metrics.router)
    api.install(app)
    _refusals(app)
    return app


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/") or "text/html" not in request.headers.get("accept", "text/html")


def _problem(request: Request, status: int, code: str, headers: dict[str, str] | None = None) -> Response:
    return problems.problem(request, status, code, headers=headers)


def _refusals(app: FastAPI) -> None:
    """Who-may-not answers: the login page or 401, 403 with a page or a problem document."""

    @app.exception_handler(auth.NotSignedIn)
    async def not_signed_in(request: Request, exc: auth.NotSignedIn) -> Response:
        if _wants_json(request):
            return _problem(request, 401, "unauthenticated", {"WWW-Authenticate": "Bearer"})
        return auth.login_redirect(request)

    @app.exception_handler(auth.Forbidden)
    async def forbidden(request: Request, exc: auth.Forbidden) -> Response:
        if _wants_json(request):
            return _problem(request, 403, "forbidden")
        return render(request, "refused.html", {"message": "Bạn không có quyền xem trang này."}, 403)

    @app.exception_handler(auth.CsrfRefused)
    async def csrf_refused(request: Request, exc: auth.CsrfRefused) -> Response:
        message = "Phiên làm việc đã hết hạn hoặc biểu mẫu đã cũ; hãy tải lại trang và thử lại."
        if _wants_json(request):
            return _problem(request, 403, "csrf")
        return render(request, "refused.html", {"message": message}, 403)
