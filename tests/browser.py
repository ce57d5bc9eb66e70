"""The console in a real browser: Debian's Chromium, headless, driven by Playwright, against a live server on 127.0.0.1.

Screenshots go to var/screenshots/ (not committed) for a person to look at. A page that breaks
the Content-Security-Policy (an inline script or style) shows it in the console log, which
`Browser` collects per test (the `browser` fixture of tests/conftest.py) so that a test can say
none of its pages did.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
SCREENSHOTS = Path(__file__).parent.parent / "var" / "screenshots"
OFFICE = {"width": 1366, "height": 768}
PHONE = {"width": 390, "height": 844}


@contextlib.contextmanager
def live_server(app: FastAPI) -> Iterator[str]:
    """Serve `app` on a free loopback port in a thread; yields its base URL."""
    listening = socket.create_server(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listening]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{listening.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        listening.close()


class Chromium:
    """One headless Chromium for a module's tests; each test works in a `Browser` of its own."""

    def __init__(self) -> None:
        from playwright.sync_api import sync_playwright

        self._playwright = sync_playwright().start()
        self.browser = self._playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)

    def session(self) -> Browser:
        """A test's own view of the browser: its pages and what their consoles say."""
        return Browser(self.browser)

    def close(self) -> None:
        self.browser.close()
        self._playwright.stop()


class Browser:
    """One test's pages, each in a fresh context, and what their consoles say; `close` closes them all.

    The log is the test's own and its pages close with it: a page of a failed test that still polls
    can then never put its errors on a later test.
    """

    def __init__(self, chromium: Any) -> None:
        self._chromium = chromium
        self._contexts: list[Any] = []
        self.console: list[str] = []

    def page(self, viewport: dict[str, int] = OFFICE) -> Any:
        """A fresh context (no cookies) and page, at `viewport`."""
        context = self._chromium.new_context(viewport=viewport, locale="vi-VN")
        self._contexts.append(context)
        page = context.new_page()
        page.on("console", lambda message: self.console.append(f"{message.type}: {message.text}"))
        page.on("pageerror", lambda error: self.console.append(f"pageerror: {error}"))
        return page

    def shoot(self, page: Any, name: str) -> Path:
        """Keep a full-page screenshot as a test artefact."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    def violations(self) -> list[str]:
        """What the browser refused or failed at (CSP refusals, script errors) on this test's pages."""
        return [line for line in self.console if "Refused" in line or line.startswith(("error", "pageerror"))]

    def close(self) -> None:
        """Close every page this test opened (their polling stops with them)."""
        for context in self._contexts:
            context.close()
        self._contexts.clear()


def overflows(page: Any) -> list[str]:
    """Elements wider than the viewport (a table in a scrolling wrapper is fine)."""
    return page.evaluate(
        """() => {
            const width = document.documentElement.clientWidth;
            const found = [];
            for (const el of document.querySelectorAll('body *')) {
                if (el.closest('.table-wrap')) continue;
                const box = el.getBoundingClientRect();
                if (box.right > width + 1 && box.width > 0) found.push(el.tagName + '.' + el.className);
            }
            return found.slice(0, 10);
        }"""
    )
