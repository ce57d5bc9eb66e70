"""The users page (admin) and one's own account page: the same operations as `canhbao users`."""

from __future__ import annotations

from datetime import datetime

import pytest
from fastapi import FastAPI
from sqlalchemy import Engine

from dispatcher import users
from dispatcher.config import load_settings
from dispatcher.errors import StateError
from tests.clock import Clock
from tests.web_helpers import PASSWORD, anonymous, ensure_user, log_in, make_app, signed_in


@pytest.fixture
def app(sqlite_engine: Engine, now: datetime) -> FastAPI:
    return make_app(load_settings(None, {}), sqlite_engine, Clock(now))


def test_an_admin_adds_a_user_who_can_then_sign_in(app: FastAPI, sqlite_engine: Engine) -> None:
    admin = signed_in(app, sqlite_engine, "quan-tri", "admin")
    form = {"username": "lan", "display_name": "Nguyễn Thị Lan", "password": PASSWORD, "role": ["police", "approver"]}
    assert admin.post("/users", data=form).status_code == 303
    page = admin.get("/users").text
    assert "Nguyễn Thị Lan" in page and "Công an" in page
    assert log_in(anonymous(app), "lan").status_code == 303


def test_a_bad_new_user_is_refused_on_the_form_in_vietnamese(app: FastAPI, sqlite_engine: Engine) -> None:
    admin = signed_in(app, sqlite_engine, "quan-tri", "admin")
    short = admin.post("/users", data={"username": "lan", "password": "ngan", "role": ["police"]})
    assert short.status_code == 400 and "ít nhất 10 ký tự" in short.text and 'value="lan"' in short.text
    no_role = admin.post("/users", data={"username": "lan", "password": PASSWORD})
    assert no_role.status_code == 400 and "Cần ít nhất một vai trò" in no_role.text


def test_an_admin_disables_a_user_and_their_session_ends(app: FastAPI, sqlite_engine: Engine) -> None:
    admin = signed_in(app, sqlite_engine, "quan-tri", "admin")
    officer = signed_in(app, sqlite_engine, "lan", "police")
    assert officer.get("/account").status_code == 200
    assert admin.post("/users/lan/disable").status_code == 303
    assert officer.get("/account", headers={"Accept": "text/html"}).status_code == 303  # to the login page
    assert admin.post("/users/lan/enable").status_code == 303
    assert admin.post("/users/nobody/disable").status_code == 404


def test_the_last_admin_cannot_be_locked_out_or_demoted(app: FastAPI, sqlite_engine: Engine, now: datetime) -> None:
    admin = signed_in(app, sqlite_engine, "quan-tri", "admin")
    refused = admin.post("/users/quan-tri/disable")
    assert refused.status_code == 409 and "người quản trị cuối cùng" in refused.text
    assert admin.post("/users/quan-tri/roles", data={"role": ["operator"]}).status_code == 400
    ensure_user(sqlite_engine, "pho-quan-tri", "admin")
    assert admin.post("/users/quan-tri/roles", data={"role": ["operator"]}).status_code == 303
    with sqlite_engine.begin() as conn, pytest.raises(StateError, match="cuối cùng"):
        users.disable(conn, now, "x", "pho-quan-tri")


def test_a_token_is_shown_once_then_only_its_number(app: FastAPI, sqlite_engine: Engine) -> None:
    admin = signed_in(app, sqlite_engine, "quan-tri", "admin")
    ensure_user(sqlite_engine, "may-bao-cao", "operator")
    shown = admin.post("/users/may-bao-cao/tokens", data={"label": "Prometheus"})
    token = shown.text.split('<code class="token">', 1)[1].split("<", 1)[0]
    assert token.startswith("cb_")
    assert token not in admin.get("/users").text
    bearer = anonymous(app)
    bearer.headers["Authorization"] = f"Bearer {token}"
    assert bearer.get("/account").status_code == 200
    token_id = int(shown.text.split("Prometheus", 1)[0].rsplit('<td class="num">', 1)[1].split("<", 1)[0])
    assert admin.post(f"/tokens/{token_id}/revoke").status_code == 303
    assert bearer.get("/account").status_code == 401


def test_a_person_changes_their_own_password_after_proving_the_old_one(app: FastAPI, sqlite_engine: Engine) -> None:
    officer = signed_in(app, sqlite_engine, "lan", "police")
    new = "mật khẩu mới cũng dài"
    wrong = officer.post("/account/password", data={"current": "sai-roi-sai-roi", "password": new, "repeat": new})
    assert wrong.status_code == 400 and "Mật khẩu hiện tại không đúng" in wrong.text
    differ = officer.post("/account/password", data={"current": PASSWORD, "password": new, "repeat": new + "x"})
    assert differ.status_code == 400
    assert (
        officer.post("/account/password", data={"current": PASSWORD, "password": new, "repeat": new}).status_code == 303
    )
    assert officer.get("/account", headers={"Accept": "text/html"}).status_code == 303  # signed out everywhere
    assert log_in(anonymous(app), "lan", password=new).status_code == 303


def test_a_person_cannot_revoke_someone_elses_token(app: FastAPI, sqlite_engine: Engine, now: datetime) -> None:
    ensure_user(sqlite_engine, "minh", "operator")
    with sqlite_engine.begin() as conn:
        token_id, _token = users.issue_token(conn, now, "x", "minh", "của minh")
    officer = signed_in(app, sqlite_engine, "lan", "police")
    assert officer.post(f"/account/tokens/{token_id}/revoke").status_code == 404
    with sqlite_engine.connect() as conn:
        assert users.tokens(conn, "minh")[0]["revoked_at"] is None


def test_the_pages_read_in_english_on_request(app: FastAPI, sqlite_engine: Engine) -> None:
    admin = signed_in(app, sqlite_engine, "quan-tri", "admin")
    assert "Người dùng mới" in admin.get("/users").text
    admin.get("/lang/en?next=/users")
    page = admin.get("/users").text
    assert "New user" in page and "Sign out" in page and '<html lang="en">' in page
