"""`/healthz`: whether this web process is up and reaches its database (for a load balancer or a supervisor)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from dispatcher import db
from dispatcher.web.auth import public

router = APIRouter(dependencies=[public()])


@router.get("/healthz")
def healthz(request: Request) -> JSONResponse:
    """200 `{"status": "ok"}` when the database answers, 503 otherwise."""
    try:
        with db.reading(request.app.state.engine) as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError:
        return JSONResponse({"status": "unavailable", "message": "Không kết nối được cơ sở dữ liệu."}, 503)
    return JSONResponse({"status": "ok"})
