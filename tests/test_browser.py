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


def _records(engine: Engine) -> None:
    """Audit entries from every face and texts in the inbox, for the audit and inbox pages to show."""
    from dispatcher import audit
    from dispatcher.inbound import receive

    now = datetime.now(UTC)
    ensure_user(engine, "lan", "police")
    with engine.begin() as conn:
        with audit.acting_through("cli", "--as, os-user:root"):
            audit.audit(conn, now, "lien-lac", "blast.pause", "blast:12", {"from": "running"},
                        before={"state": "running"}, after={"state": "paused"})  # fmt: skip
        with audit.acting_through("api", "token:3", "10.20.30.40"):
            audit.audit(conn, now, "duyet", "alert.approve", "alert:gia-danh-cong-an", {"version": 2},
                        before={"status": "submitted"}, after={"status": "approved"})  # fmt: skip
        receive(conn, "+84905123456", "Có người giả danh công an gọi số 0912 345 678 đòi chuyển tiền", "viettel", now)
        receive(conn, "+84977000111", "Cho hỏi tổng đài phản ánh lừa đảo là số nào ạ?", "twilio", now)


def test_an_operator_reads_the_audit_log_and_the_inbox(browser: Browser, app: FastAPI, sqlite_engine: Engine) -> None:
    """The audit page shows each face and before → after; the inbox masks numbers and reveals one with a reason."""
    ensure_user(sqlite_engine, "van-hanh", "operator", "admin")
    _records(sqlite_engine)
    with live_server(app) as base:
        page = browser.page()
        sign_in(page, base, "van-hanh", then="/audit")
        page.wait_for_url(f"{base}/audit")
        table = page.inner_text("table")
        assert "dòng lệnh" in table and "API" in table and "tạm dừng đợt gửi" in table
        assert not overflows(page)
        browser.shoot(page, "audit")
        page.goto(f"{base}/inbox")
        assert "+8490****456" in page.inner_text("table") and "0912 345 678" not in page.content()
        assert not overflows(page)
        browser.shoot(page, "inbox")
        page.click("tr:has-text('giả danh') summary")
        page.fill("tr:has-text('giả danh') input[name=reason]", "gọi lại cho người báo tin")
        page.click("tr:has-text('giả danh') form button")
        page.wait_for_url(f"{base}/inbox/*/reveal")
        assert "+84905123456" in page.inner_text("main")
        page.goto(f"{base}/audit?action=number.reveal")
        assert "gọi lại cho người báo tin" in page.inner_text("table")
        browser.shoot(page, "audit-reveal")
    assert not browser.violations(), browser.violations()


def test_the_audit_and_inbox_pages_fit_a_phone(browser: Browser, app: FastAPI, sqlite_engine: Engine) -> None:
    """On a phone the two pages keep their tables in a scrolling frame: nothing else runs off the screen."""
    ensure_user(sqlite_engine, "van-hanh", "operator", "admin")
    _records(sqlite_engine)
    with live_server(app) as base:
        page = browser.page(PHONE)
        sign_in(page, base, "van-hanh", then="/audit")
        page.wait_for_url(f"{base}/audit")
        assert not overflows(page)
        browser.shoot(page, "audit-phone")
        page.goto(f"{base}/inbox")
        assert not overflows(page)
        browser.shoot(page, "inbox-phone")
    assert not browser.violations(), browser.violations()
