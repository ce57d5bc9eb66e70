"""Pages rendered on the server: one Jinja2 environment, and what every template may use.

Every page extends `base.html` (blocks `title` and `content`). A template reads `principal`
(who is signed in, or None), `lang`, `_` (the translation of a Vietnamese text), `csrf_field()`
(the hidden field every POST form carries), and the formatting helpers both faces share:
`number`, `moment` (in the deployment's time zone), `mask` (a phone number as `+8490****567`)
and the labels of dispatcher/labels.py as `labels`.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape
from starlette.requests import Request

from dispatcher import formats, labels
from dispatcher.phones import mask
from dispatcher.web import i18n

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"

environment = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
environment.globals.update(number=formats.number, mask=mask, labels=labels, duration=formats.duration)


def render(request: Request, name: str, context: dict[str, Any] | None = None, status_code: int = 200) -> HTMLResponse:
    """The page `name` for this request, with what every template reads."""
    return HTMLResponse(environment.get_template(name).render(page_context(request, context)), status_code)


def page_context(request: Request, context: dict[str, Any] | None = None) -> dict[str, Any]:
    """What every template reads, with `context` on top."""
    lang = i18n.page_language(request)
    zone = request.app.state.settings.app.timezone
    token = getattr(request.state, "csrf_token", None)

    def csrf_field() -> Markup:
        return Markup('<input type="hidden" name="csrf_token" value="{}">').format(escape(token or ""))

    def moment(value: datetime | None, seconds: bool = False) -> str:
        return "" if value is None else formats.moment(value, zone, seconds)

    def weekday(value: datetime) -> str:
        return formats.weekday(value, zone)

    return {
        "request": request,
        "principal": getattr(request.state, "principal", None),
        "lang": lang,
        "_": i18n.translator(lang),
        "csrf_token": token or "",
        "csrf_field": csrf_field,
        "moment": moment,
        "weekday": weekday,
        "path": request.url.path,
        **(context or {}),
    }
