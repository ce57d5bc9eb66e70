"""The operators' pages on a fresh database: they render, refuse bad input clearly, and keep numbers out of URLs."""

from __future__ import annotations

import asyncio
from datetime import datetime

import pytest
from fastapi import FastAPI
from sqlalchemy import Engine

from dispatcher.config import load_settings
from tests.clock import Clock
from tests.web_helpers import make_app, signed_in


@pytest.fixture
def app(sqlite_engine: Engine, now: datetime) -> FastAPI:
    return make_app(load_settings(None, {}), sqlite_engine, Clock(now))


def test_the_pages_render_for_an_operator(app: FastAPI, sqlite_engine: Engine) -> None:
    operator = signed_in(app, sqlite_engine, "van-hanh", "operator")
    assert "Không có đợt nào đang chạy hay chờ." in operator.get("/").text
    assert "Cổng gửi" in operator.get("/dashboard/live").text
    assert operator.get("/blasts").status_code == 200
    assert "Không có tin nào khớp." in operator.get("/deliveries").text
    assert operator.get("/blasts/99").status_code == 404


def test_the_log_export_is_a_csv_for_excel(app: FastAPI, sqlite_engine: Engine) -> None:
    operator = signed_in(app, sqlite_engine, "van-hanh", "operator")
    answer = operator.get("/deliveries.csv", params={"province": "Đà Nẵng"})
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
    assert answer.content.startswith("\ufeff".encode())


def test_bad_filters_and_numbers_are_said_in_vietnamese(app: FastAPI, sqlite_engine: Engine) -> None:
    operator = signed_in(app, sqlite_engine, "van-hanh", "operator")
    assert operator.get("/deliveries", params={"carrier": "khong-co"}).status_code == 400
    searched = operator.post("/deliveries/search", data={"msisdn": "12345"})
    assert searched.status_code == 400 and "12345" not in str(searched.url)


def test_a_reveal_needs_the_operator_role_and_a_delivery(app: FastAPI, sqlite_engine: Engine) -> None:
    liaison = signed_in(app, sqlite_engine, "lien-lac", "liaison")
    assert liaison.post("/deliveries/1/reveal", data={"reason": "kiểm tra lỗi"}).status_code == 403
    operator = signed_in(app, sqlite_engine, "van-hanh", "operator")
    assert operator.post("/deliveries/1/reveal", data={"reason": "kiểm tra lỗi"}).status_code == 404


def test_the_dashboard_is_counted_once_for_everyone_and_served_while_counted_again() -> None:
    """Within `every` seconds callers share one value; after it, they get the last one while one count runs again."""
    from dispatcher.web.fresh import Fresh

    made, now = [], [0.0]

    async def make() -> int:
        made.append(len(made) + 1)
        await asyncio.sleep(0)
        return made[-1]

    async def visits() -> list[int]:
        fresh = Fresh(5, clock=lambda: now[0])
        first = await asyncio.gather(*(fresh.get(make) for _ in range(3)))
        now[0] = 6
        stale = await fresh.get(make)
        await asyncio.sleep(0.01)  # the count started by that visit ends
        return [*first, stale, await fresh.get(make), await Fresh(0).get(make)]

    assert asyncio.run(visits()) == [1, 1, 1, 1, 2, 3]


def test_a_dashboard_count_that_took_long_rests_four_times_as_long_before_the_next() -> None:
    """A count of 3 s is made again no sooner than 12 s later, though `every` says 5."""
    from dispatcher.web.fresh import Fresh

    made, now = [], [0.0]

    async def make() -> int:
        now[0] += 3  # the count takes three seconds of the clock
        made.append(len(made) + 1)
        return made[-1]

    async def visits() -> list[int]:
        fresh = Fresh(5, clock=lambda: now[0])
        seen = [await fresh.get(make)]
        now[0] = 3 + 11
        seen.append(await fresh.get(make))  # 11 s after it was made: still resting
        now[0] = 3 + 12
        seen.append(await fresh.get(make))  # starts the next count, served the last value meanwhile
        await asyncio.sleep(0)
        return [*seen, await fresh.get(make)]

    assert asyncio.run(visits()) == [1, 1, 1, 2]
