"""The audit log page and its export: who did what from where, filtered, paged by key, as CSV."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from datetime import datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, select

from dispatcher import audit
from dispatcher.config import Settings, load_settings
from dispatcher.errors import ConfigError
from dispatcher.models import audit_log, login_failures
from dispatcher.web.auth import cookie_name
from tests.clock import Clock
from tests.web_helpers import api_client, ensure_user, make_app, signed_in


@pytest.fixture
def app(sqlite_engine: Engine, now: datetime) -> FastAPI:
    return make_app(load_settings(None, {}), sqlite_engine, Clock(now))


def _last(engine: Engine, action: str) -> dict:
    with engine.connect() as conn:
        query = select(audit_log).where(audit_log.c.action == action).order_by(audit_log.c.id.desc())
        return dict(conn.execute(query).mappings().first())


def _many(engine: Engine, now: datetime, count: int) -> None:
    with engine.begin() as conn:
        for i in range(count):
            audit.audit(conn, now + timedelta(seconds=i), "lan", "user.passwd", f"user:u{i}", {})


def test_a_console_action_is_recorded_as_web_and_an_api_call_as_its_token(app: FastAPI, sqlite_engine: Engine) -> None:
    """Roles changed in the browser say 'web', which session and the address; through a token, 'api' and its id."""
    ensure_user(sqlite_engine, "minh", "police")
    admin = signed_in(app, sqlite_engine, "quan-tri", "admin")
    assert admin.post("/users/minh/roles", data={"role": ["police", "approver"]}).status_code == 303
    entry = _last(sqlite_engine, "user.roles")
    assert (entry["actor"], entry["source"], entry["via"], entry["address"]) == ("quan-tri", "web",
                                                                                   f"session:{admin.session_ref}",
                                                                                   "testclient")  # fmt: skip
    assert entry["before"] == {"roles": ["police"]} and entry["after"] == {"roles": ["approver", "police"]}
    program = api_client(app, sqlite_engine, "quan-tri", "admin")
    assert program.post("/users/minh/disable").status_code == 303
    entry = _last(sqlite_engine, "user.disable")
    assert (entry["source"], entry["via"]) == ("api", f"token:{program.token_id}")


def test_the_session_is_named_by_a_short_reference_never_its_cookie(app: FastAPI, sqlite_engine: Engine) -> None:
    """Two sessions of one person are told apart in the audit log and on the page; the cookie's secret is nowhere."""
    ensure_user(sqlite_engine, "minh", "police")
    first, second = (signed_in(app, sqlite_engine, "quan-tri", "admin") for _ in range(2))
    first.post("/users/minh/roles", data={"role": ["approver"]})
    second.post("/users/minh/roles", data={"role": ["police"]})
    with sqlite_engine.connect() as conn:
        vias = conn.execute(select(audit_log.c.via).where(audit_log.c.action == "user.roles")).scalars().all()
    assert vias == [f"session:{first.session_ref}", f"session:{second.session_ref}"] and len(set(vias)) == 2
    page = second.get("/audit", params={"action": "user.roles"}).text
    assert f"session:{first.session_ref}" in page
    secret = second.cookies.get(cookie_name(app.state.settings.web))
    assert secret and secret not in page and not any(secret in via for via in vias)


def _settings_behind(proxies: str) -> Settings:
    return load_settings(None, {"CANHBAO_WEB__TRUSTED_PROXIES": proxies})


def test_behind_a_trusted_proxy_the_forwarded_client_is_recorded(sqlite_engine: Engine, now: datetime) -> None:
    """From a proxy in [web] trusted_proxies, the address is the rightmost X-Forwarded-For hop that is no proxy."""
    app = make_app(_settings_behind('["10.0.0.0/24"]'), sqlite_engine, Clock(now))
    ensure_user(sqlite_engine, "minh", "police")
    admin = signed_in(app, sqlite_engine, "quan-tri", "admin", peer="10.0.0.5")
    forwarded = {"X-Forwarded-For": "198.51.100.9, 203.0.113.7, 10.0.0.4"}
    admin.post("/users/minh/roles", data={"role": ["approver"]}, headers=forwarded)
    assert _last(sqlite_engine, "user.roles")["address"] == "203.0.113.7"


def test_a_forged_forwarded_header_from_an_untrusted_peer_is_ignored(sqlite_engine: Engine, now: datetime) -> None:
    """A client not in trusted_proxies that writes X-Forwarded-For is recorded at its own address."""
    app = make_app(_settings_behind('["10.0.0.0/24"]'), sqlite_engine, Clock(now))
    ensure_user(sqlite_engine, "minh", "police")
    admin = signed_in(app, sqlite_engine, "quan-tri", "admin", peer="192.0.2.44")
    admin.post("/users/minh/roles", data={"role": ["approver"]}, headers={"X-Forwarded-For": "10.0.0.9"})
    assert _last(sqlite_engine, "user.roles")["address"] == "192.0.2.44"


def test_a_trusted_proxy_that_is_not_an_address_is_refused_at_start(sqlite_engine: Engine) -> None:
    """A typo in [web] trusted_proxies stops start-up with a Vietnamese line naming it."""
    with pytest.raises(ConfigError, match="không phải địa chỉ IP hay mạng CIDR"):
        _settings_behind('["10.0.0.0/33"]')


def test_the_page_shows_entries_with_their_origin_and_change(app: FastAPI, sqlite_engine: Engine) -> None:
    """An entry shows its actor, the face it came through, the action's Vietnamese name and before → after."""
    ensure_user(sqlite_engine, "minh", "police")
    admin = signed_in(app, sqlite_engine, "quan-tri", "admin")
    admin.post("/users/minh/roles", data={"role": ["approver"]})
    page = signed_in(app, sqlite_engine, "van-hanh", "operator").get("/audit", params={"action": "user.roles"})
    assert page.status_code == 200
    assert "bảng điều khiển" in page.text and "session" in page.text and "đổi vai trò" in page.text
    assert "{&#34;roles&#34;: [&#34;police&#34;]} → {&#34;roles&#34;: [&#34;approver&#34;]}" in page.text


def test_pages_go_by_key_and_filters_are_kept(app: FastAPI, sqlite_engine: Engine, now: datetime) -> None:
    """Fifty entries a page; the next page's link carries the filters and the last id, never an offset."""
    _many(sqlite_engine, now, 60)
    admin = signed_in(app, sqlite_engine, "quan-tri", "admin")
    first = admin.get("/audit", params={"actor": "lan"})
    assert first.text.count("user:u") == 50 and "user:u59" in first.text and "user:u9<" not in first.text
    assert "/audit?actor=lan&amp;before=11" in first.text
    second = admin.get("/audit", params={"actor": "lan", "before": 11})
    assert second.text.count("user:u") == 10 and "Trang sau" not in second.text


def test_the_filters_narrow_the_page(app: FastAPI, sqlite_engine: Engine, now: datetime) -> None:
    """Actor, source and a day range each narrow what the page shows."""
    _many(sqlite_engine, now, 3)
    operator = signed_in(app, sqlite_engine, "van-hanh", "operator")
    assert "Không có thao tác nào khớp." in operator.get("/audit", params={"actor": "someone-else"}).text
    assert "user:u0" in operator.get("/audit", params={"source": "system"}).text
    assert "user:u0" not in operator.get("/audit", params={"source": "web"}).text
    day_before = (now - timedelta(days=1)).strftime("%Y-%m-%d")
    assert "Không có thao tác nào khớp." in operator.get("/audit", params={"until": day_before}).text
    assert "user:u2" in operator.get("/audit", params={"since": day_before}).text


def test_bad_filters_are_said_in_vietnamese(app: FastAPI, sqlite_engine: Engine) -> None:
    """A day that is no date, or an unknown source, is a 400 page saying what is wrong."""
    operator = signed_in(app, sqlite_engine, "van-hanh", "operator")
    answer = operator.get("/audit", params={"since": "hôm qua"})
    assert answer.status_code == 400 and "Từ ngày: không hiểu ngày" in answer.text
    assert operator.get("/audit", params={"source": "email"}).status_code == 400
    assert operator.get("/audit.csv", params={"until": "32/13/2026"}).status_code == 400


def test_the_export_is_a_streamed_csv_of_the_filtered_log(app: FastAPI, sqlite_engine: Engine, now: datetime) -> None:
    """The CSV has a BOM and a header, then every matching entry (more than one streamed piece)."""
    _many(sqlite_engine, now, 2_500)
    admin = signed_in(app, sqlite_engine, "quan-tri", "admin")
    answer = admin.get("/audit.csv", params={"actor": "lan"})
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
    lines = answer.content.decode("utf-8").splitlines()
    assert lines[0].startswith("\ufeffmã,lúc,người thực hiện") and len(lines) == 2_501
    assert lines[0].count("\ufeff") == 1 and sum("người thực hiện" in line for line in lines) == 1
    empty = admin.get("/audit.csv", params={"actor": "nobody"}).content.decode("utf-8").splitlines()
    assert len(empty) == 1


def test_canhbao_web_believes_no_forwarded_header_from_an_untrusted_peer(sqlite_engine: Engine, tmp_path) -> None:
    """Over real loopback, a failed login forging X-Forwarded-For is counted against 127.0.0.1, not the forged one."""
    (tmp_path / "none.toml").write_text("", encoding="utf-8")
    env = {**os.environ, "CANHBAO_CONFIG": str(tmp_path / "none.toml"), "CANHBAO_WEB__SECURE_COOKIES": "false",
           "CANHBAO_DATABASE__URL": sqlite_engine.url.render_as_string(hide_password=False)}  # fmt: skip
    web = subprocess.Popen([sys.executable, "-m", "dispatcher", "web", "--port", "0"], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        base = _listening_at(web)
        with httpx.Client(base_url=base, timeout=10) as browser:
            form = browser.get("/login").text
            token = form.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
            forged = {"X-Forwarded-For": "203.0.113.9"}
            browser.post("/login", data={"username": "ai-do", "password": "sai mat khau", "csrf_token": token},
                         headers=forged)  # fmt: skip
    finally:
        web.send_signal(signal.SIGTERM)
        web.communicate(timeout=30)
    with sqlite_engine.connect() as conn:
        assert conn.execute(select(login_failures.c.address)).scalars().all() == ["127.0.0.1"]


def _listening_at(web: subprocess.Popen) -> str:
    """The address `canhbao web --port 0` says it listens at, from its first line on stderr."""
    assert web.stderr is not None
    for line in web.stderr:
        if found := re.search(r"http://127\.0\.0\.1:\d+", line):
            return found.group(0)
    raise AssertionError("canhbao web never said where it listens")
