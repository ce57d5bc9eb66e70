"""The console and the API as a test drives them: an app on a database, people signed in with a role each."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from dispatcher import users
from dispatcher.config import Settings
from dispatcher.errors import StateError
from dispatcher.web import create_app
from dispatcher.web.auth import cookie_name

PASSWORD = "mật khẩu dài đủ 10"
BASE_URL = "https://canhbao.test"  # https: the session cookie is Secure by default


def make_app(settings: Settings, engine: Engine, clock: Callable[[], datetime] | None = None) -> FastAPI:
    """The web app on `engine`."""
    return create_app(settings, engine, clock)


def ensure_user(engine: Engine, username: str, *roles: str, now: datetime | None = None) -> users.User:
    """The account `username` with `roles`, created (password PASSWORD) when missing."""
    when = now or datetime.now(UTC)
    with engine.begin() as conn:
        try:
            return users.add(conn, when, "test", username, PASSWORD, frozenset(roles))
        except StateError:
            return users.get(conn, username)


def anonymous(app: FastAPI, peer: str = "testclient") -> TestClient:
    """A browser that has not signed in (its requests come from address `peer`)."""
    return TestClient(app, base_url=BASE_URL, follow_redirects=False, client=(peer, 50000))


def log_in(client: TestClient, username: str, password: str = PASSWORD, next: str = "/") -> object:
    """Post the login form as a browser does (the form's token first), returning the answer."""
    page = client.get("/login")
    token = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    return client.post("/login", data={"username": username, "password": password, "csrf_token": token, "next": next})


def signed_in(app: FastAPI, engine: Engine, username: str, *roles: str, peer: str = "testclient") -> TestClient:
    """A browser signed in as `username` (created with `roles` if missing); it sends the CSRF header by itself."""
    ensure_user(engine, username, *roles)
    client = anonymous(app, peer)
    answer = log_in(client, username)
    assert answer.status_code == 303, answer.text
    settings = app.state.settings
    with engine.begin() as conn:
        live = users.session(conn, app.state.clock(), client.cookies.get(cookie_name(settings.web)), settings.web)
    assert live is not None
    client.headers["X-CSRF-Token"] = live.csrf_token
    client.csrf = live.csrf_token  # type: ignore[attr-defined]  (for tests that post forms themselves)
    client.session_ref = live.ref  # type: ignore[attr-defined]
    return client


def api_client(app: FastAPI, engine: Engine, username: str, *roles: str) -> TestClient:
    """A program with a bearer token of `username` (created with `roles` if missing)."""
    ensure_user(engine, username, *roles)
    with engine.begin() as conn:
        token_id, token = users.issue_token(conn, app.state.clock(), "test", username, "tests")
    client = TestClient(app, base_url=BASE_URL, follow_redirects=False, headers={"Authorization": f"Bearer {token}"})
    client.token_id = token_id  # type: ignore[attr-defined]
    return client
