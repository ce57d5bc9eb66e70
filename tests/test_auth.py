"""Who may use the console and the API: logins, sessions, lock-out, CSRF, tokens, and a rule on every route."""

from __future__ import annotations

import io
import re
from datetime import datetime, timedelta

import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, select

from dispatcher import users
from dispatcher.config import load_settings
from dispatcher.errors import InputRejected, StateError
from dispatcher.models import api_tokens, audit_log, web_sessions
from dispatcher.web.auth import Rule, declared_routes
from tests.clock import Clock
from tests.web_helpers import PASSWORD, anonymous, api_client, ensure_user, log_in, make_app, signed_in

COOKIE = "__Host-canhbao"


@pytest.fixture
def clock(now: datetime) -> Clock:
    return Clock(now)


@pytest.fixture
def app(sqlite_engine: Engine, clock: Clock) -> FastAPI:
    return make_app(load_settings(None, {}), sqlite_engine, clock)


# -- accounts -----------------------------------------------------------------------------


def test_a_password_is_kept_as_an_argon2id_hash(sqlite_engine: Engine, now: datetime) -> None:
    ensure_user(sqlite_engine, "lan", "police", now=now)
    with sqlite_engine.connect() as conn:
        stored = conn.execute(select(users.users.c.password_hash)).scalar_one()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored


def test_a_short_password_or_one_holding_the_name_is_refused(sqlite_engine: Engine, now: datetime) -> None:
    with sqlite_engine.begin() as conn, pytest.raises(InputRejected, match="ít nhất 10"):
        users.add(conn, now, "admin", "lan", "ngan", frozenset({"police"}))
    with sqlite_engine.begin() as conn, pytest.raises(InputRejected, match="tên đăng nhập"):
        users.add(conn, now, "admin", "lan", "lan-mat-khau-dai", frozenset({"police"}))


def test_a_name_taken_in_another_case_is_refused(sqlite_engine: Engine, now: datetime) -> None:
    ensure_user(sqlite_engine, "lan", "police", now=now)
    with sqlite_engine.begin() as conn, pytest.raises(StateError, match="Đã có"):
        users.add(conn, now, "admin", "LAN", PASSWORD, frozenset({"police"}))


def test_unknown_roles_are_named() -> None:
    with pytest.raises(Exception, match="Vai trò không có: boss"):
        users.parse_roles(["police,boss"])
    assert users.parse_roles(["police,approver", "liaison"]) == {"police", "approver", "liaison"}


# -- logging in ---------------------------------------------------------------------------


def test_login_sets_a_hardened_cookie_and_goes_where_it_was_asked(app: FastAPI, sqlite_engine: Engine) -> None:
    ensure_user(sqlite_engine, "lan", "police")
    client = anonymous(app)
    answer = log_in(client, "lan", next="/alerts")
    assert answer.status_code == 303 and answer.headers["location"] == "/alerts"
    cookie = next(v for k, v in answer.headers.multi_items() if k == "set-cookie" and v.startswith(COOKIE))
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" in cookie and "Path=/" in cookie


def test_login_never_sends_a_person_to_another_site(app: FastAPI, sqlite_engine: Engine) -> None:
    ensure_user(sqlite_engine, "lan", "police")
    for target in ("//evil.example", "https://evil.example/", "/\\evil.example"):
        answer = log_in(anonymous(app), "lan", next=target)
        assert answer.headers["location"] == "/"


def test_a_wrong_password_and_an_unknown_name_get_the_same_words(app: FastAPI, sqlite_engine: Engine) -> None:
    ensure_user(sqlite_engine, "lan", "police")
    wrong = log_in(anonymous(app), "lan", password="sai-mat-khau-roi")
    unknown = log_in(anonymous(app), "khong-co-ai", password="sai-mat-khau-roi")
    assert wrong.status_code == unknown.status_code == 400
    assert "Tên đăng nhập hoặc mật khẩu không đúng" in wrong.text
    assert _error(wrong.text) == _error(unknown.text)


def _error(page: str) -> str:
    return re.search(r'<p class="error" role="alert">(.*?)</p>', page, re.S).group(1)


def test_the_login_form_needs_its_own_token(app: FastAPI, sqlite_engine: Engine) -> None:
    ensure_user(sqlite_engine, "lan", "police")
    client = anonymous(app)
    answer = client.post("/login", data={"username": "lan", "password": PASSWORD, "csrf_token": "forged"})
    assert answer.status_code == 403 and COOKIE not in answer.headers.get("set-cookie", "")


def test_repeated_failures_lock_the_name_out_even_with_the_right_password(
    app: FastAPI, sqlite_engine: Engine, clock: Clock
) -> None:
    ensure_user(sqlite_engine, "lan", "police")
    for _ in range(5):
        assert log_in(anonymous(app), "lan", password="sai-mat-khau-roi").status_code == 400
    locked = log_in(anonymous(app), "lan")
    assert locked.status_code == 429 and "tạm khoá" in locked.text
    clock.advance(15 * 60 + 1)
    assert log_in(anonymous(app), "lan").status_code == 303


def test_one_address_guessing_many_names_is_locked_out(app: FastAPI, sqlite_engine: Engine) -> None:
    ensure_user(sqlite_engine, "lan", "police")
    for n in range(20):
        log_in(anonymous(app), f"ten-{n}", password="sai-mat-khau-roi")
    assert log_in(anonymous(app), "lan").status_code == 429


def test_a_new_session_at_every_login_so_an_earlier_cookie_is_worthless(app: FastAPI, sqlite_engine: Engine) -> None:
    ensure_user(sqlite_engine, "minh", "operator")
    browser = signed_in(app, sqlite_engine, "lan", "police")
    old = browser.cookies.get(COOKIE)
    form = anonymous(app)
    token = form.get("/login").text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    browser.cookies.set("canhbao_login", form.cookies.get("canhbao_login"), domain="canhbao.test")
    answer = browser.post("/login", data={"username": "minh", "password": PASSWORD, "csrf_token": token})
    assert answer.status_code == 303 and browser.cookies.get(COOKIE) not in (None, old)
    earlier = anonymous(app)
    earlier.cookies.set(COOKIE, old, domain="canhbao.test")
    assert earlier.get("/login").status_code == 200  # the session it held ended at the new login


def test_logout_needs_the_csrf_token_and_ends_the_session(app: FastAPI, sqlite_engine: Engine) -> None:
    client = signed_in(app, sqlite_engine, "lan", "police")
    token = client.headers.pop("X-CSRF-Token")
    assert client.post("/logout").status_code == 403
    assert client.post("/logout", data={"csrf_token": "forged"}).status_code == 403
    secret = client.cookies.get(COOKIE)
    assert client.post("/logout", data={"csrf_token": token}).status_code == 303
    again = anonymous(app)
    again.cookies.set(COOKIE, secret, domain="canhbao.test")
    assert again.post("/logout", headers={"X-CSRF-Token": token}).status_code == 401
    browser = again.post("/logout", headers={"X-CSRF-Token": token, "Accept": "text/html"})
    assert browser.status_code == 303 and browser.headers["location"] == "/login?next=/logout"


def test_a_session_ends_when_idle_and_when_old(app: FastAPI, sqlite_engine: Engine, clock: Clock) -> None:
    client = signed_in(app, sqlite_engine, "lan", "police")
    clock.advance(29 * 60)
    assert client.get("/login").status_code == 303  # still signed in: straight on
    clock.advance(31 * 60)
    assert client.get("/login").status_code == 200  # idle more than 30 minutes: sign in again
    client = signed_in(app, sqlite_engine, "lan", "police")
    for _ in range(24):  # 11.6 hours, never idle
        clock.advance(29 * 60)
        assert client.get("/login").status_code == 303
    clock.advance(29 * 60)
    assert client.get("/login").status_code == 200  # more than 12 hours after login, busy or not


def test_disabling_or_a_new_password_ends_every_session(app: FastAPI, sqlite_engine: Engine, clock: Clock) -> None:
    client = signed_in(app, sqlite_engine, "lan", "police")
    with sqlite_engine.begin() as conn:
        users.set_password(conn, clock(), "admin", "lan", "mat-khau-moi-dai-hon")
    assert client.get("/login").status_code == 200
    client = anonymous(app)
    assert log_in(client, "lan", password="mat-khau-moi-dai-hon").status_code == 303
    with sqlite_engine.begin() as conn:
        users.disable(conn, clock(), "admin", "lan")
    assert client.get("/login").status_code == 200
    assert log_in(anonymous(app), "lan", password="mat-khau-moi-dai-hon").status_code == 400


def test_every_answer_carries_the_security_headers(app: FastAPI) -> None:
    """Pages, files and what providers are answered (ahead of the middleware) carry the same headers."""
    answers = [anonymous(app).get(path) for path in ("/login", "/healthz", "/static/app.css")]
    answers.append(anonymous(app).post("/hooks/twilio/status", content="MessageSid=SM1"))
    for headers in (answer.headers for answer in answers):
        assert "script-src 'self'" in headers["content-security-policy"]
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "same-origin"


def test_pages_hold_no_inline_script_or_style(app: FastAPI) -> None:
    page = anonymous(app).get("/login").text
    assert not re.search(r"<script(?![^>]*\bsrc=)", page) and " style=" not in page and "<style" not in page


# -- API tokens ---------------------------------------------------------------------------


def test_a_token_is_kept_hashed_works_until_revoked_and_records_its_last_use(
    app: FastAPI, sqlite_engine: Engine, clock: Clock
) -> None:
    client = api_client(app, sqlite_engine, "may", "operator")
    token = client.headers["Authorization"].split()[1]
    with sqlite_engine.connect() as conn:
        stored = conn.execute(select(api_tokens.c.token_hash)).scalar_one()
    assert token not in stored
    assert client.post("/logout").status_code == 303  # a token needs no CSRF token
    with sqlite_engine.connect() as conn:
        assert conn.execute(select(api_tokens.c.last_used_at)).scalar_one() == clock()
    with sqlite_engine.begin() as conn:
        users.revoke_token(conn, clock(), "admin", client.token_id)
    refused = client.post("/logout")
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    assert refused.headers["content-type"] == "application/problem+json"


def test_a_token_of_a_disabled_user_stops_working(app: FastAPI, sqlite_engine: Engine, clock: Clock) -> None:
    client = api_client(app, sqlite_engine, "may", "operator")
    with sqlite_engine.begin() as conn:
        users.disable(conn, clock(), "admin", "may")
    assert client.post("/logout").status_code == 401


# -- a rule on every route ----------------------------------------------------------------


def test_every_route_declares_who_may_use_it(app: FastAPI) -> None:
    missing = [f"{method} {path}" for method, path, rule in declared_routes(app) if rule is None]
    assert not missing, f"routes without allow(...) or public(): {missing}"


def test_every_role_is_allowed_exactly_where_its_route_says(app: FastAPI, sqlite_engine: Engine) -> None:
    clients = {role: signed_in(app, sqlite_engine, f"nguoi-{role}", role) for role in users.ROLES}
    nobody = anonymous(app)
    for method, path, rule in declared_routes(app):
        if not isinstance(rule, Rule) or path == "/logout":
            continue
        url = re.sub(r"\{[^}]+\}", "1", path)
        assert nobody.request(method, url).status_code in (303, 401), f"{method} {path} anonymous"
        for role, client in clients.items():
            status = client.request(method, url).status_code
            if role in rule.roles:
                assert status not in (401, 403), f"{method} {path} must let {role} in, got {status}"
            else:
                assert status == 403, f"{method} {path} must refuse {role}, got {status}"


# -- the command line ---------------------------------------------------------------------


def test_cli_manages_users_tokens_and_audits_it(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    code, doc = cli.json("users", "add", "lan", "--role", "police,approver", "--name", "Nguyễn Thị Lan",
                         "--password-stdin", user="root")  # fmt: skip
    assert code == 0 and doc["roles"] == ["approver", "police"]
    code, _out, err = cli("users", "add", "minh", "--role", "boss", "--password-stdin")
    assert code == 2 and "Vai trò không có: boss" in err
    code, doc = cli.json("users", "token", "lan", "--label", "báo cáo")
    assert code == 0 and doc["token"].startswith("cb_")
    listed = cli.json("users", "tokens")[1]
    assert listed[0]["name"] == "báo cáo" and "token" not in listed[0]
    assert cli.json("users", "revoke", str(doc["token_id"]))[0] == 0
    assert "đã bị thu hồi" in cli("users", "revoke", str(doc["token_id"]))[2]
    assert cli("users", "disable", "lan")[0] == 0
    code, out, _err = cli("users", "list")
    assert "lan" in out and "đã khoá" in out
    from sqlalchemy import create_engine

    engine = create_engine(f"sqlite:///{cli.root / 'canhbao.db'}")
    with engine.connect() as conn:
        actions = conn.execute(select(audit_log.c.actor, audit_log.c.action).order_by(audit_log.c.id)).all()
    engine.dispose()
    assert (
        ("root", "user.add") in actions
        and ("tester", "token.revoke") in actions
        and ("tester", "user.disable") in actions
    )


def test_cli_will_not_take_a_password_without_a_keyboard_or_stdin(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, _out, err = cli("users", "add", "lan", "--role", "police")
    assert code == 2 and "--password-stdin" in err


def test_cli_refuses_two_different_passwords_at_the_prompt(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    answers = iter([PASSWORD, PASSWORD + "x"])
    monkeypatch.setattr("sys.stdin", Tty(""))
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    code, _out, err = cli("users", "add", "lan", "--role", "police")
    assert code == 1 and "không giống nhau" in err


def test_a_due_last_seen_time_is_written_after_the_answer_is_sent(
    app: FastAPI, sqlite_engine: Engine, clock: Clock
) -> None:
    """A page read a minute after the last one is answered first; its session's last-seen time is written after."""
    import asyncio

    from dispatcher.web.auth import cookie_name
    from tests.web_helpers import BASE_URL

    client = signed_in(app, sqlite_engine, "lan", "police")
    secret = client.cookies.get(cookie_name(app.state.settings.web))
    clock.advance(90)
    host = BASE_URL.split("://", 1)[1].encode()
    headers = [(b"host", host), (b"cookie", f"{COOKIE}={secret}".encode())]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "https",
             "path": "/login", "raw_path": b"/login", "query_string": b"", "root_path": "", "client": ("1.2.3.4", 5),
             "server": (host.decode(), 443), "headers": headers}  # fmt: skip
    seen_when_answered = []

    def last_seen() -> datetime:
        with sqlite_engine.connect() as conn:
            return conn.execute(select(web_sessions.c.last_seen_at)).scalar_one()

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body"):
            seen_when_answered.append(last_seen())

    before = last_seen()
    asyncio.run(app(scope, receive, send))
    assert seen_when_answered == [before] and last_seen() == clock()


def test_a_session_read_without_writing_is_refused_when_idle_and_says_when_its_touch_is_due(
    sqlite_engine: Engine, now: datetime
) -> None:
    """`session(write=False)` writes nothing: a due touch is flagged, an idle session refused and left as it was."""
    web = load_settings(None, {}).web
    ensure_user(sqlite_engine, "lan", "police", now=now)
    with sqlite_engine.begin() as conn:
        secret = users.start_session(conn, now, users.get(conn, "lan"), "1.2.3.4")
    with sqlite_engine.connect() as conn:
        assert users.session(conn, now, secret, web, write=False).due is False
        assert users.session(conn, now + users.TOUCH_EVERY, secret, web, write=False).due is True
        assert users.session(conn, now + timedelta(hours=1), secret, web, write=False) is None
        stored = conn.execute(select(web_sessions.c.last_seen_at, web_sessions.c.ended_at)).one()
    assert tuple(stored) == (now, None)
