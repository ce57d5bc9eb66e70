"""The web face: an ASGI app (FastAPI) over the same domain functions as the CLI.

For now it holds what providers call (`/hooks/<gateway>/…`, each gateway module reading its own
requests) and `/healthz`. `canhbao serve` runs it beside the scheduler and the worker,
`canhbao web` alone (any number of them, behind a proxy).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from fastapi import FastAPI
from sqlalchemy import Engine

from dispatcher.config import Settings
from dispatcher.web import health, hooks
from dispatcher.web.writer import ReportWriter


def create_app(settings: Settings, engine: Engine, clock: Callable[[], datetime] | None = None) -> FastAPI:
    """The application, wired to `settings` and `engine`; `clock` dates what arrives (the wall clock by default)."""
    app = FastAPI(title="Cảnh Báo", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings
    app.state.engine = engine
    app.state.clock = clock or (lambda: datetime.now(UTC))
    app.state.writer = ReportWriter(engine, app.state.clock)
    app.include_router(health.router)
    app.include_router(hooks.router)
    return app
