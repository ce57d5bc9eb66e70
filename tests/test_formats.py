"""Numbers, durations and moments the Vietnamese way, and the moments users type."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dispatcher.formats import duration, moment, number, parse_moment

ZONE = "Asia/Ho_Chi_Minh"


@pytest.mark.parametrize(
    ("value", "decimals", "shown"),
    [(100_000, 0, "100.000"), (0.8, 1, "0,8"), (-1234.5, 1, "-1.234,5"), (999, 0, "999"), (1_234_567, 0, "1.234.567")],
)
def test_numbers_group_thousands_with_dots_and_decimals_with_commas(value: float, decimals: int, shown: str) -> None:
    """Thousands are grouped by '.', decimals follow ','."""
    assert number(value, decimals) == shown


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0.01, "dưới 0,1 giây"), (0.8, "0,8 giây"), (3, "3 giây"),
     (45, "45 giây"), (125, "2 phút 5 giây"), (3725, "1 giờ 2 phút"),
     (3600, "1 giờ"), (90_000, "1 ngày 1 giờ")],
)  # fmt: skip
def test_durations_read_as_a_person_says_them(seconds: float, shown: str) -> None:
    """A duration names its two largest units, in Vietnamese."""
    assert duration(seconds) == shown


def test_a_moment_is_time_then_date_day_first_in_local_time() -> None:
    """02:00 UTC is 09:00 in Hồ Chí Minh City, shown '09:00 01/12/2026'."""
    assert moment(datetime(2026, 12, 1, 2, 0, tzinfo=UTC), ZONE) == "09:00 01/12/2026"
    assert moment(datetime(2026, 12, 1, 2, 0, 5, tzinfo=UTC), ZONE, seconds=True) == "09:00:05 01/12/2026"


@pytest.mark.parametrize(
    "text",
    ["2026-12-01 09:00", "2026-12-01T09:00", "01/12/2026 09:00", "1/12/2026 9:00", "09:00 01/12/2026",
     " 01-12-2026  09:00 ", "2026-12-01T02:00:00+00:00", "01/12/2026 9h00"],
)  # fmt: skip
def test_moments_are_read_in_iso_and_the_vietnamese_way(text: str) -> None:
    """ISO and day-first dates name the same moment; without an offset it is local time."""
    assert parse_moment(text, ZONE) == datetime(2026, 12, 1, 2, 0, tzinfo=UTC)


def test_a_date_alone_means_its_midnight() -> None:
    """'01/12/2026' is the start of that day, local time."""
    assert parse_moment("01/12/2026", ZONE) == datetime(2026, 11, 30, 17, 0, tzinfo=UTC)


@pytest.mark.parametrize("text", ["tomorrow", "32/12/2026 09:00", "01/12/2026 25:00", "12/2026", "09:00"])
def test_what_is_not_a_moment_is_refused(text: str) -> None:
    """Anything else raises ValueError for the caller to explain."""
    with pytest.raises(ValueError):
        parse_moment(text, ZONE)
