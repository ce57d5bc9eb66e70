"""How a Vietnamese reader writes numbers, durations and moments, and the moments they type.

Vietnamese groups thousands with a dot and writes decimals with a comma (`100.000`, `0,8`),
and puts the time before the date, the date day first (`09:00 01/12/2026`). Human output uses
these; `--json` keeps plain numbers and ISO 8601.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo


def number(value: float, decimals: int = 0) -> str:
    """`100000` → '100.000', `0.85` with one decimal → '0,9', `-1234.5` with one → '-1.234,5'."""
    text = f"{value:,.{decimals}f}"
    return text.replace(",", "\u0000").replace(".", ",").replace("\u0000", ".")


def duration(seconds: float) -> str:
    """A span as a person says it: 'dưới 0,1 giây', '0,8 giây', '2 phút 5 giây', '1 giờ 2 phút', '3 ngày 4 giờ'."""
    if seconds < 0.05:
        return "dưới 0,1 giây"  # not '0 giây': something did take time
    if seconds < 10:
        return f"{number(seconds, 1).removesuffix(',0')} giây"
    whole = round(seconds)
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    units = [(days, "ngày"), (hours, "giờ"), (minutes, "phút"), (secs, "giây")]
    first = next(i for i, (n, _) in enumerate(units) if n)
    return " ".join(f"{n} {unit}" for n, unit in units[first : first + 2] if n)


def moment(value: datetime, zone: str | ZoneInfo, seconds: bool = False) -> str:
    """'09:00 01/12/2026' in `zone` (with ':SS' when `seconds`)."""
    local = value.astimezone(ZoneInfo(zone) if isinstance(zone, str) else zone)
    return local.strftime("%H:%M:%S %d/%m/%Y" if seconds else "%H:%M %d/%m/%Y")


WEEKDAYS = ("Thứ Hai", "Thứ Ba", "Thứ Tư", "Thứ Năm", "Thứ Sáu", "Thứ Bảy", "Chủ Nhật")


def weekday(value: datetime, zone: str | ZoneInfo) -> str:
    """The day of the week of `value` in `zone`, as Vietnamese write it: 'Thứ Hai' … 'Chủ Nhật'."""
    return WEEKDAYS[value.astimezone(ZoneInfo(zone) if isinstance(zone, str) else zone).weekday()]


# '01/12/2026 09:00', '1/12/2026 9:00', '01-12-2026', '09:00 01/12/2026', '01/12/2026 09:00:30'
_DAY_FIRST = re.compile(r"(?P<d>\d{1,2})[/.-](?P<m>\d{1,2})[/.-](?P<y>\d{4})")
_CLOCK = re.compile(r"(?P<H>\d{1,2})[:h](?P<M>\d{2})?(?::(?P<S>\d{2}))?")


def parse_moment(text: str, zone: str) -> datetime:
    """A moment typed by a user, in UTC: ISO 8601 ('2026-12-01 09:00', with or without offset) or
    the Vietnamese way ('01/12/2026 09:00', '09:00 01/12/2026', '01/12/2026' for midnight).

    A moment without an offset is local time in `zone`. Raises ValueError when it is neither.
    """
    cleaned = " ".join(text.strip().split())
    try:
        parsed = datetime.fromisoformat(cleaned)
    except ValueError:
        parsed = _day_first(cleaned)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=ZoneInfo(zone))
    return parsed.astimezone(UTC)


def _day_first(text: str) -> datetime:
    parts = text.replace(",", " ").split()
    dates = [p for p in parts if _DAY_FIRST.fullmatch(p)]
    clocks = [p for p in parts if _CLOCK.fullmatch(p)]
    if len(dates) != 1 or len(clocks) > 1 or len(dates) + len(clocks) != len(parts):
        raise ValueError(text)
    date = _DAY_FIRST.fullmatch(dates[0])
    clock = _CLOCK.fullmatch(clocks[0]) if clocks else None
    assert date is not None
    hour, minute, second = (int(clock[g] or 0) for g in "HMS") if clock else (0, 0, 0)
    return datetime(int(date["y"]), int(date["m"]), int(date["d"]), hour, minute, second)
