"""The console in Chromium: it signs in, renders Vietnamese, fits an office screen and a phone, breaks no CSP rule."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from fastapi import FastAPI
from sqlalchemy import Engine

from dispatcher.config import load_settings
from tests.browser import PHONE, Browser, live_server, overflows
from tests.web_helpers import PASSWORD, ensure_user, make_app

pytestmark = pytest.mark.skipif(not __import__("os").path.exists("/usr/bin/chromium"), reason="needs Chromium")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = Browser()
    yield chromium
    chromium.close()


@pytest.fixture
def app(sqlite_engine: Engine) -> FastAPI:
    # The default settings: Secure cookies, which browsers accept from http://127.0.0.1 (a secure context).
    return make_app(load_settings(None, {}), sqlite_engine, lambda: datetime.now(UTC))


def sign_in(page, base: str, username: str, password: str = PASSWORD, then: str = "/") -> None:
    page.goto(f"{base}/login?next={then}")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")


def test_an_admin_signs_in_manages_users_and_signs_out(browser: Browser, app: FastAPI, sqlite_engine: Engine) -> None:
    ensure_user(sqlite_engine, "quan-tri", "admin")
    with live_server(app) as base:
        page = browser.page()
        page.goto(f"{base}/users")
        assert page.url.startswith(f"{base}/login?next=")
        browser.shoot(page, "login")
        sign_in(page, base, "quan-tri", then="/users")
        page.wait_for_url(f"{base}/users")
        page.fill("input[name=username] >> nth=-1", "lan")
        page.fill("input[name=display_name]", "Nguyễn Thị Lan")
        page.fill("input[name=password]", PASSWORD)
        page.check("form[action='/users'] input[value=police]")
        page.click("form[action='/users'] button[type=submit]")
        page.wait_for_load_state()
        assert "Nguyễn Thị Lan" in page.inner_text("table")
        assert not overflows(page)
        browser.shoot(page, "users")
        page.click("header button:has-text('Đăng xuất')")
        page.wait_for_url(f"{base}/login")
    assert not browser.violations(), browser.violations()


def test_pages_fit_a_phone(browser: Browser, app: FastAPI, sqlite_engine: Engine) -> None:
    ensure_user(sqlite_engine, "quan-tri", "admin")
    with live_server(app) as base:
        page = browser.page(PHONE)
        sign_in(page, base, "quan-tri", then="/account")
        page.wait_for_url(f"{base}/account")
        assert "Tài khoản của tôi" in page.inner_text("h1")
        assert not overflows(page)
        browser.shoot(page, "account-phone")
    assert not browser.violations(), browser.violations()
