"""Who is asking, and may they: sign-in, sessions, API tokens, CSRF, and the rule every route declares.

Every route declares exactly one rule: `allow(*roles)` (signed in, holding one of the roles)
or `public()` (providers' webhooks, /healthz, the login page, static files). A suite test walks
the routes and fails for one without a rule. A browser signs in with a password and gets a
session cookie (HttpOnly, SameSite=Lax, Secure unless `[web] secure_cookies = false`); a
program sends `Authorization: Bearer <token>`. Every unsafe request made with a session cookie
must carry the session's CSRF token (form field `csrf_token` or header `X-CSRF-Token`); a bearer
token cannot be sent by a browser on its own, so it needs none.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import quote

import structlog
from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import Connection
from sqlalchemy.exc import OperationalError
from starlette.concurrency import run_in_threadpool

from dispatcher import db, users
from dispatcher.config import WebSettings
from dispatcher.web import i18n
from dispatcher.web.proxies import client_address
from dispatcher.web.templating import render

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
log = structlog.get_logger(__name__)
AFTER_RESPONSE = "canhbao.after_response"  # the scope's list of writes to run once the answer is sent
LOGIN_CSRF_COOKIE = "canhbao_login"


@dataclass(frozen=True)
class Principal:
    """The person behind a request, and how they proved it."""

    user_id: int
    username: str
    display_name: str
    roles: frozenset[str]
    via: Literal["session", "token", "cli"]
    token_id: int | None = None
    session_ref: str | None = None
    """The session's short, non-secret name (users.Session.ref) when signed in by a browser."""

    @property
    def actor(self) -> str:
        """The name the domain records as the one who acted."""
        return self.username

    @property
    def source(self) -> str:
        """Where the action came from, as the audit log records it."""
        return {"session": "web", "token": "api", "cli": "cli"}[self.via]

    def has(self, *roles: str) -> bool:
        """Whether the person holds any of `roles`."""
        return bool(self.roles.intersection(roles))


class NotSignedIn(Exception):
    """Nobody is signed in (no session, an ended one, or no valid token): 401, or the login page for a browser."""


class Forbidden(Exception):
    """Signed in, but without a role the route allows: 403."""

    def __init__(self, principal: Principal, roles: frozenset[str]) -> None:
        super().__init__(f"{principal.username} lacks {sorted(roles)}")
        self.principal = principal
        self.roles = roles


class CsrfRefused(Exception):
    """An unsafe request from a session without the session's CSRF token: 403, nothing done."""


def session_cookie(request: Request) -> str:
    """The session cookie's name for this app."""
    return cookie_name(request.app.state.settings.web)


def cookie_name(web: WebSettings) -> str:
    """The session cookie's name: `__Host-` prefixed over HTTPS, so no other site or path can set it."""
    return "__Host-canhbao" if web.secure_cookies else "canhbao_session"


def _bearer(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _identify(request: Request) -> tuple[Principal | None, str | None]:
    """(the principal, the session's CSRF token) for this request, from its bearer token or its session cookie.

    Read without the write lock: every request asks. A session's last-seen time (once a minute) is
    written after the answer is sent (`AfterResponse`): a sending worker holds the write lock most
    of the time, and a page waiting for it took up to a second. A token's last-used time is written
    here; should that write meet another writer's commit, the lookup runs again holding the lock.
    """
    engine = request.app.state.engine
    try:
        with db.reading(engine) as conn:
            found = _who(conn, request)
            conn.commit()
        return found
    except OperationalError:
        with engine.begin() as conn:
            return _who(conn, request)


def _who(conn: Connection, request: Request) -> tuple[Principal | None, str | None]:
    now, web = request.app.state.clock(), request.app.state.settings.web
    token = _bearer(request)
    if token is not None:
        found = users.token_user(conn, now, token)
        if found is None:
            return None, None
        user, token_id = found
        return Principal(user.id, user.username, user.display_name, user.roles, "token", token_id), None
    secret = request.cookies.get(session_cookie(request))
    live = users.session(conn, now, secret, web, write=False) if secret else None
    if live is None:
        return None, None
    if live.due:
        _after_response(request, lambda: _touch(request.app.state.engine, now, secret))
    user = live.user
    principal = Principal(user.id, user.username, user.display_name, user.roles, "session", session_ref=live.ref)
    return principal, live.csrf_token


def _touch(engine: Any, now: Any, secret: str) -> None:
    try:
        with engine.begin() as conn:
            users.touch(conn, now, secret)
    except OperationalError as exc:  # locked past the busy timeout: the next request's touch writes it
        log.warning("session.touch_failed", error=str(exc))


def _after_response(request: Request, job: Any) -> None:
    """Run `job` once the answer is sent (at once where no `AfterResponse` wraps the app)."""
    later = request.scope.get(AFTER_RESPONSE)
    if later is None:
        job()
    else:
        later.append(job)


class AfterResponse:
    """Pure ASGI: the writes a request left for later (`_after_response`) run once its answer is sent."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        later = scope[AFTER_RESPONSE] = []
        try:
            await self.app(scope, receive, send)
        finally:
            for job in later:
                await run_in_threadpool(job)


async def identify(request: Request) -> Principal | None:
    """Who is asking (cached on the request), or None."""
    if not hasattr(request.state, "principal"):
        request.state.principal, request.state.csrf_token = await run_in_threadpool(_identify, request)
    return request.state.principal


async def _check_csrf(request: Request, expected: str | None) -> None:
    given = request.headers.get("x-csrf-token")
    if given is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        given = (await request.form()).get("csrf_token")
    if not expected or not isinstance(given, str) or not secrets.compare_digest(given, expected):
        raise CsrfRefused()


class Rule:
    """The dependency `allow(...)` installs: who may use the route."""

    def __init__(self, roles: tuple[str, ...]) -> None:
        unknown = set(roles) - set(users.ROLES)
        if unknown or not roles:
            raise ValueError(f"unknown roles {sorted(unknown)}" if unknown else "allow() needs at least one role")
        self.roles = frozenset(roles)

    async def __call__(self, request: Request) -> Principal:
        principal = await identify(request)
        if principal is None:
            raise NotSignedIn()
        if principal.via == "session" and request.method not in SAFE_METHODS:
            await _check_csrf(request, request.state.csrf_token)
        if not principal.has(*self.roles):
            raise Forbidden(principal, self.roles)
        return principal


class Public:
    """The dependency `public()` installs: anyone may use the route (who they are is still known if signed in)."""

    roles: frozenset[str] = frozenset()

    async def __call__(self, request: Request) -> None:
        return None


def allow(*roles: str) -> Any:
    """The route is for signed-in people holding one of `roles` (admin is a role like the others)."""
    return Depends(Rule(roles))


def public() -> Any:
    """The route is for anyone."""
    return Depends(Public())


def public_endpoint(endpoint: Any) -> Any:
    """Mark a plain Starlette endpoint or mounted app (webhooks, static files: no dependency system) as for anyone."""
    endpoint.canhbao_rule = Public()
    return endpoint


def declared_routes(app: Any) -> list[tuple[str, str, Rule | Public | None]]:
    """(method, path, rule) of every route the app answers, routers included (mounts as `path/`)."""
    found: list[tuple[str, str, Rule | Public | None]] = []

    def add(route: Any) -> None:
        if hasattr(route, "effective_route_contexts"):  # an included router (FastAPI ≥ 0.165)
            for context in route.effective_route_contexts():
                add(context)
            return
        if getattr(route, "methods", None) is None:  # a mount: static files
            found.append(("GET", route.path + "/", rule_of(route)))
            return
        found.extend((method, route.path, rule_of(route)) for method in sorted(route.methods) if method != "HEAD")

    for route in app.routes:
        add(route)
    return found


def rule_of(route: Any) -> Rule | Public | None:
    """The rule a route declares, or None (which the suite refuses)."""
    original = getattr(route, "original_route", None)
    for held in (getattr(route, "endpoint", None), getattr(route, "app", None), getattr(original, "endpoint", None)):
        if isinstance(getattr(held, "canhbao_rule", None), Public):
            return held.canhbao_rule
    found: list[Rule | Public] = []

    def walk(dependant: Any) -> None:
        for sub in dependant.dependencies:
            if isinstance(sub.call, Rule | Public):
                found.append(sub.call)
            walk(sub)

    dependant = getattr(route, "dependant", None)
    if dependant is not None:
        walk(dependant)
    return found[0] if len(found) == 1 else None


# -- the login page -----------------------------------------------------------------------

router = APIRouter()


def _local(target: str | None) -> str:
    """Where to go after login: a path of ours only (never another site: `//evil`, `https://…`)."""
    if target and target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return "/"


def _address(request: Request) -> str:
    return client_address(request) or "unknown"


def _login_page(request: Request, status: int, error: str | None = None, target: str = "/") -> Response:
    token = secrets.token_urlsafe(24)
    request.state.csrf_token = token
    response = render(request, "login.html", {"error": error, "next": target}, status)
    response.set_cookie(
        LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", secure=request.app.state.settings.web.secure_cookies
    )
    return response


@router.get("/login", dependencies=[public()])
async def login_form(request: Request, next: str = "/") -> Response:
    """The sign-in form (a signed-in person goes straight on)."""
    if await identify(request) is not None:
        return RedirectResponse(_local(next), 303)
    return _login_page(request, 200, target=_local(next))


@router.post("/login", dependencies=[public()])
async def login(
    request: Request,
    username: Annotated[str, Form(max_length=64)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    csrf_token: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    """Check name and password; on success a new session (the browser's old one ends) and on to `next`."""
    _ = i18n.translator(i18n.page_language(request))
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not expected or not secrets.compare_digest(csrf_token, expected):
        return _login_page(
            request, 403, _("Phiên làm việc đã hết hạn hoặc biểu mẫu đã cũ; hãy tải lại trang và thử lại.")
        )
    state = request.app.state
    address = _address(request)

    def attempt() -> str:
        with state.engine.begin() as conn:
            user = users.authenticate(
                conn, state.clock(), username, password, address, state.settings.web, state.settings.app.timezone
            )
            return users.start_session(conn, state.clock(), user, address, request.cookies.get(session_cookie(request)))

    def count_failure() -> None:
        with state.engine.begin() as conn:
            users.record_failure(conn, state.clock(), username, address)

    try:
        secret = await run_in_threadpool(attempt)
    except users.LoginRefused as exc:
        if exc.counts:
            await run_in_threadpool(count_failure)
        status = 429 if exc.locked_until is not None else 400
        return _login_page(request, status, _(str(exc)), _local(next))
    response = RedirectResponse(_local(next), 303)
    response.set_cookie(
        session_cookie(request), secret, httponly=True, samesite="lax", path="/",
        secure=state.settings.web.secure_cookies,
    )  # fmt: skip
    response.delete_cookie(LOGIN_CSRF_COOKIE)
    return response


@router.post("/logout")
async def logout(request: Request, principal: Annotated[Principal, allow(*users.ROLES)]) -> Response:
    """End this browser's session."""
    secret = request.cookies.get(session_cookie(request))
    if secret:
        state = request.app.state

        def end() -> None:
            with state.engine.begin() as conn:
                users.end_session(conn, state.clock(), secret)

        await run_in_threadpool(end)
    response = RedirectResponse("/login", 303)
    response.delete_cookie(session_cookie(request), path="/")
    return response


@router.get("/lang/{code}", dependencies=[public()])
async def switch_language(code: str, next: str = "/") -> Response:
    """Show the console in another language from now on."""
    response = RedirectResponse(_local(next), 303)
    if code in i18n.LANGUAGES:
        response.set_cookie(i18n.COOKIE, code, samesite="lax", max_age=365 * 24 * 3600)
    return response


def login_redirect(request: Request) -> Response:
    """The login page, coming back here afterwards."""
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target)}", 303)
