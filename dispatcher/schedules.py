"""Recurring campaigns: one TOML file per schedule in schedules/, parsed and checked before use.

`when` is a standard 5-field cron line or a short English or Vietnamese phrase ("every Monday
09:00", "thứ hai hằng tuần 09:00"); both become an APScheduler CronTrigger in the schedule's
time zone. Every problem in a file is reported at once, each with the file and the line of the
key it is about, the way a compiler reports errors. Time is always a parameter here.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import re
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import Connection, select

from dispatcher.domain import fold
from dispatcher.errors import InputRejected, NotFound, UsageError
from dispatcher.models import alerts
from dispatcher.regions import RegionIndex
from dispatcher.segments import CHANNEL_POLICIES, SegmentSpec, resolve

NAME = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
TOP_KEYS = ("title", "when", "timezone", "channel", "encoding", "rate", "valid_hours", "enabled", "segment", "content")
SEGMENT_KEYS = ("provinces", "communes", "legacy_districts", "audiences", "carriers")
CONTENT_KEYS = ("alert", "rotation", "methods")
DEFAULT_VALID_HOURS = 24
MAX_VALID_HOURS = 720
WHEN_FORMS = (
    "cron 5 trường 'phút giờ ngày tháng thứ' như '0 9 * * 1' (09:00 thứ hai, 0 hoặc 7 là chủ nhật), "
    "'every day 09:00', 'every weekday 08:30', 'every Monday 09:00', 'every Monday and Thursday 09:00', "
    "'every month on day 1 09:00', 'hằng ngày 09:00', 'thứ hai hằng tuần 09:00', 'ngày 1 hằng tháng 09:00'"
)
# A fixed instant from which a trigger must fire at least once: "0 9 30 2 *" never does.
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


# -- time zones and `when` ----------------------------------------------------------------

_OFFSET = re.compile(r"^(?:UTC|GMT)?\s*([+-])(\d{1,2})(?::?(\d{2}))?$", re.IGNORECASE)


def zone(name: str) -> tzinfo:
    """The time zone `name`: an IANA name ('Asia/Ho_Chi_Minh') or a fixed offset ('UTC+07', '+07:00')."""
    if match := _OFFSET.match(name.strip()):
        sign, hours, minutes = match.groups()
        offset = timedelta(hours=int(hours), minutes=int(minutes or 0))
        if offset < timedelta(hours=15):
            return timezone(-offset if sign == "-" else offset)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"múi giờ '{name}' không hợp lệ (vd. 'Asia/Ho_Chi_Minh' hoặc 'UTC+07')") from None


def parse_when(text: str, timezone: str) -> CronTrigger:
    """The trigger for a cron line or phrase in `timezone`; ValueError with a Vietnamese message."""
    tz = zone(timezone)
    try:
        trigger = _cron(text, tz) if _looks_like_cron(text) else _phrase(text, tz)
    except ValueError as exc:
        raise ValueError(f"không hiểu được '{text}': {exc}. Các dạng nhận: {WHEN_FORMS}") from None
    if trigger.get_next_fire_time(None, _EPOCH) is None:
        raise ValueError(f"lịch '{text}' không bao giờ chạy (ngày không tồn tại)")
    return trigger


def next_runs(trigger: CronTrigger, after: datetime, count: int = 5, until: datetime | None = None) -> list[datetime]:
    """The next `count` fire times strictly after the aware instant `after` (and not after `until`)."""
    if after.tzinfo is None:
        raise ValueError("next_runs needs an aware datetime")
    runs, previous = [], after
    while len(runs) < count:
        # Given as the previous fire time, an instant is stepped past: the result is strictly later.
        fire = trigger.get_next_fire_time(previous, previous)
        if fire is None or (until is not None and fire > until):
            break
        runs.append(fire)
        previous = fire
    return runs


def _looks_like_cron(text: str) -> bool:
    return re.match(r"^[\d*]", text.strip()) is not None


def _cron(text: str, tz: tzinfo) -> CronTrigger:
    fields = ["*" if field == "?" else field for field in text.lower().split()]
    if len(fields) != 5:
        raise ValueError(f"cron cần 5 trường (phút giờ ngày tháng thứ), có {len(fields)}")
    if fields[2] != "*" and fields[4] != "*":
        # Cron fires when EITHER day field matches, APScheduler only when both do: refuse the ambiguity.
        raise ValueError("cron không được giới hạn cả ngày trong tháng lẫn thứ trong tuần; hãy tách thành hai lịch")
    fields[4] = _standard_weekdays(fields[4])
    try:
        return CronTrigger.from_crontab(" ".join(fields), timezone=tz)
    except ValueError as exc:
        raise ValueError(f"cron không hợp lệ ({exc})") from None


# Standard cron numbers weekdays from Sunday (0 and 7), APScheduler 3 from Monday (0): names
# mean the same to both, so numbers are rewritten as names.
_CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_CRON_PART = re.compile(r"^(\*|\d+)(?:-(\d+))?(?:/(\d+))?$")


def _standard_weekdays(field: str) -> str:
    if field == "*":
        return "*"
    return ",".join(_weekday_names(part) for part in field.split(","))


def _weekday_names(part: str) -> str:
    match = _CRON_PART.match(part)
    if not match:
        return part  # already names, like "mon-fri"
    start, end, step = match.groups()
    low = 0 if start == "*" else int(start)
    high = 7 if start == "*" or (step and not end) else int(end or start)
    if high > 7 or low > high or step == "0" or (start == "*" and end):
        raise ValueError(f"thứ trong tuần '{part}' không hợp lệ (0–7, 0 và 7 = chủ nhật)")
    days = range(low, high + 1, int(step or 1))
    return ",".join(dict.fromkeys(_CRON_DAYS[day % 7] for day in days))


# -- phrases ------------------------------------------------------------------------------

_TIME = re.compile(r"^(?P<head>.+?)\s+(?:at\s+|luc\s+)?(?P<hour>\d{1,2})(?::|h)(?P<minute>\d{2})$")
_WEEKDAYS = {
    "mon": ("monday", "mon", "thu hai", "thu 2"),
    "tue": ("tuesday", "tue", "tues", "thu ba", "thu 3"),
    "wed": ("wednesday", "wed", "thu tu", "thu 4"),
    "thu": ("thursday", "thu", "thur", "thurs", "thu nam", "thu 5"),
    "fri": ("friday", "fri", "thu sau", "thu 6"),
    "sat": ("saturday", "sat", "thu bay", "thu 7"),
    "sun": ("sunday", "sun", "chu nhat", "cn"),
}
_WEEKDAY_WORDS = {word: day for day, words in _WEEKDAYS.items() for word in words}


def _every_day(_: re.Match[str]) -> dict[str, str]:
    return {}


def _weekdays(_: re.Match[str]) -> dict[str, str]:
    return {"day_of_week": "mon-fri"}


def _days_of_week(match: re.Match[str]) -> dict[str, str]:
    words = re.split(r"\s*(?:,|&|\band\b|\bva\b)\s*", match["days"])
    unknown = [word for word in words if word not in _WEEKDAY_WORDS]
    if unknown:
        raise ValueError(f"không rõ thứ '{', '.join(unknown)}'")
    return {"day_of_week": ",".join(dict.fromkeys(_WEEKDAY_WORDS[word] for word in words))}


def _day_of_month(match: re.Match[str]) -> dict[str, str]:
    if not 1 <= int(match["day"]) <= 31:
        raise ValueError(f"ngày {match['day']} không có trong tháng (1–31)")
    return {"day": str(int(match["day"]))}


# Matched against the folded phrase (lower case, no accents) without its time, in this order.
_PHRASES: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], dict[str, str]]], ...] = tuple(
    (re.compile(pattern), build)
    for pattern, build in (
        (r"^(?:every day|daily|(?:hang|moi) ngay)$", _every_day),
        (r"^every weekdays?$", _weekdays),
        (r"^every month on (?:day |the )?(?P<day>\d{1,2})(?:st|nd|rd|th)?$", _day_of_month),
        (r"^ngay (?P<day>\d{1,2}) (?:hang|moi) thang$", _day_of_month),
        (r"^every (?P<days>.+)$", _days_of_week),
        (r"^(?P<days>.+) (?:hang|moi) tuan$", _days_of_week),
    )
)


def _phrase(text: str, tz: tzinfo) -> CronTrigger:
    match = _TIME.match(fold(text))
    if not match:
        raise ValueError("thiếu giờ chạy HH:MM ở cuối")
    hour, minute = int(match["hour"]), int(match["minute"])
    if hour > 23 or minute > 59:
        raise ValueError(f"giờ {hour}:{minute:02d} không hợp lệ")
    for pattern, build in _PHRASES:
        if day := pattern.match(match["head"]):
            return CronTrigger(**build(day), hour=hour, minute=minute, timezone=tz)
    raise ValueError("không phải cron hay một câu quen thuộc")


# -- the schedule -------------------------------------------------------------------------


@dataclass(frozen=True)
class ScheduleSpec:
    """One recurring campaign, as its file in schedules/ describes it."""

    name: str
    title: str
    when: str
    timezone: str
    segment: SegmentSpec
    channel: str
    encoding: str
    rate: float | None
    valid_hours: float
    enabled: bool
    alerts: tuple[str, ...]
    methods: tuple[str, ...]
    origin: str
    content_hash: str

    def trigger(self) -> CronTrigger:
        """When the campaign runs."""
        return parse_when(self.when, self.timezone)

    def is_rotation(self) -> bool:
        """A series: each person gets the next alert they have not received yet."""
        return len(self.alerts) > 1 or bool(self.methods)

    def to_json(self) -> dict[str, Any]:
        """Every field, JSON-serialisable."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScheduleSpec:
        """The spec `to_json` described."""
        segment = SegmentSpec(**{key: tuple(value) for key, value in data["segment"].items()})
        return cls(**{**data, "segment": segment, "alerts": tuple(data["alerts"]), "methods": tuple(data["methods"])})


def parse_file(path: Path, default_timezone: str) -> ScheduleSpec:
    """The schedule in `path`, or InputRejected listing every problem as 'file:line: …'."""
    spec, problems = _read(path, default_timezone)
    if problems or spec is None:
        raise InputRejected("; ".join(problems))
    return spec


def load_dir(
    directory: Path, default_timezone: str, checker: Callable[[ScheduleSpec], None] | None = None
) -> list[ScheduleSpec]:
    """Every *.toml of `directory` by name, each parsed file also given to `checker` (e.g. `check`);
    InputRejected lists the problems of all files, one a line."""
    if not directory.is_dir():
        raise NotFound(f"Không có thư mục lịch gửi {directory}.")
    specs, problems = [], []
    for path in sorted(directory.glob("*.toml")):
        spec, found = _read(path, default_timezone)
        if spec is not None and checker is not None:
            try:
                checker(spec)
            except InputRejected as exc:
                found.append(str(exc))
        problems += found
        specs += [spec] if spec else []
    if problems:
        raise InputRejected("\n".join(problems))
    return specs


def _read(path: Path, default_timezone: str) -> tuple[ScheduleSpec | None, list[str]]:
    raw, origin = path.read_bytes(), str(path)
    try:
        text = raw.decode("utf-8")
        data = tomllib.loads(text)
    except UnicodeDecodeError:
        return None, [f"{origin}: không phải UTF-8"]
    except tomllib.TOMLDecodeError as exc:
        return None, [_syntax_problem(origin, text, exc)]
    reader = _Reader(origin, text, data)
    spec = reader.spec(path.stem, default_timezone, hashlib.sha256(raw).hexdigest())
    return (None if reader.problems else spec), reader.messages()


def _syntax_problem(origin: str, text: str, exc: tomllib.TOMLDecodeError) -> str:
    where = re.search(r"\s*\(at (?:line (\d+), column \d+|end of document)\)", str(exc))
    line = int(where[1]) if where and where[1] else len(text.splitlines())
    message = str(exc).replace(where[0], "") if where else str(exc)
    return _at(origin, line, f"không đúng cú pháp TOML: {message}")


def _at(origin: str, line: int | None, message: str) -> str:
    return f"{origin}:{line}: {message}" if line else f"{origin}: {message}"


_HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(?:#.*)?$")


def _line_of(text: str, key: str | None, table: str | None = None) -> int | None:
    """The line of `key =` inside `[table]` (top level when None), else of the table itself."""
    current, header = None, None
    for number, line in enumerate(text.splitlines(), 1):
        if found := _HEADER.match(line):
            current = found[1].strip("\"'")
            header = header or (number if current == table else None)
        elif key and current == table and re.match(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*[.=]", line):
            return number
    # A table may also be written inline or dotted at the top level: `segment = {…}`.
    return header or (_line_of(text, table) if table else None)


class _Reader:
    """One schedule file's values, with each problem noted at the line of its key."""

    def __init__(self, origin: str, text: str, data: dict[str, Any]) -> None:
        self.origin, self.text, self.data = origin, text, data
        self.problems: list[tuple[int, str]] = []

    def note(self, message: str, key: str | None = None, table: str | None = None) -> None:
        """Record a problem about `key` of `table` (the table itself when key is None)."""
        self.problems.append((_line_of(self.text, key, table) or 0, message))

    def messages(self) -> list[str]:
        """The problems in the order of the file, as 'file:line: …'."""
        return [_at(self.origin, line, message) for line, message in sorted(self.problems, key=lambda p: p[0])]

    def spec(self, name: str, default_timezone: str, digest: str) -> ScheduleSpec:
        """The schedule, built even when problems were noted (the caller then discards it)."""
        if not NAME.match(name):
            self.note(f"tên tệp '{name}' phải gồm chữ thường không dấu, số và '-' (vd. cao-bang-hang-tuan)")
        self.unknown(self.data, TOP_KEYS)
        tz = self.timezone(default_timezone)
        alerts_, methods = self.content()
        return ScheduleSpec(
            name=name, title=self.required("title"), when=self.when(tz), timezone=tz, segment=self.segment(),
            channel=self.choice("channel", tuple(CHANNEL_POLICIES), "sms"),
            encoding=self.choice("encoding", _encodings(), "auto"), rate=self.rate(), valid_hours=self.valid_hours(),
            enabled=self.enabled(), alerts=alerts_, methods=methods, origin=self.origin, content_hash=digest,
        )  # fmt: skip

    def unknown(self, values: dict[str, Any], known: tuple[str, ...], table: str | None = None) -> None:
        """Note every key that is not in `known`."""
        where = f" trong [{table}]" if table else ""
        for key in values.keys() - set(known):
            # A misspelt [table] has no `key =` line: point at its header instead.
            at = (None, key) if table is None and isinstance(values[key], dict) else (key, table)
            self.note(f"khoá không hợp lệ '{key}'{where} (nhận: {', '.join(known)})", *at)

    def table(self, name: str) -> dict[str, Any]:
        """The table `name`, empty when missing or not a table."""
        values = self.data.get(name, {})
        if not isinstance(values, dict):
            self.note(f"'{name}' phải là một bảng [{name}]", name)
            return {}
        return values

    def required(self, key: str) -> str:
        """A non-empty string value."""
        value = self.data.get(key)
        if not isinstance(value, str) or not value.strip():
            self.note(f"thiếu '{key}'", key)
            return ""
        return value.strip()

    def timezone(self, default: str) -> str:
        """The time zone name, or UTC after noting an invalid one so `when` can still be checked."""
        name = self.data.get("timezone", default)
        try:
            zone(name if isinstance(name, str) else "")
        except ValueError as exc:
            self.note(f"'timezone' {exc}", "timezone")
            return "UTC"
        return name

    def when(self, tz: str) -> str:
        """The `when` text, noted when it is not understood."""
        text = self.required("when")
        try:
            if text:
                parse_when(text, tz)
        except ValueError as exc:
            self.note(f"'when' {exc}", "when")
        return text

    def choice(self, key: str, allowed: tuple[str, ...], default: str) -> str:
        """One of `allowed`."""
        value = self.data.get(key, default)
        if value not in allowed:
            self.note(f"'{key}' = '{value}' không hợp lệ (nhận: {', '.join(allowed)})", key)
        return value

    def number(self, key: str, default: float | None) -> float | None:
        """A finite number (not a boolean: TOML's nan and inf neither), or None after noting it."""
        value = self.data.get(key, default)
        if value is None:
            return None
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        finite = " hữu hạn (không nhận nan hay inf)" if isinstance(value, float) else ""
        self.note(f"'{key}' phải là một số{finite}", key)
        return None

    def rate(self) -> float | None:
        """Messages per second, when limited."""
        value = self.number("rate", None)
        if value is not None and value <= 0:
            self.note("'rate' phải là số tin/giây lớn hơn 0", "rate")
        return value

    def valid_hours(self) -> float:
        """How long each run's blast stays valid."""
        value = self.number("valid_hours", DEFAULT_VALID_HOURS)
        if value is not None and not 1 <= value <= MAX_VALID_HOURS:
            self.note(f"'valid_hours' phải là số giờ từ 1 đến {MAX_VALID_HOURS}", "valid_hours")
        return value or DEFAULT_VALID_HOURS

    def enabled(self) -> bool:
        """Whether the campaign runs."""
        value = self.data.get("enabled", True)
        if not isinstance(value, bool):
            self.note("'enabled' phải là true hoặc false", "enabled")
        return value is True

    def strings(self, values: dict[str, Any], key: str, table: str) -> tuple[str, ...]:
        """A list of non-empty strings."""
        value = values.get(key, [])
        if not isinstance(value, list) or not all(isinstance(item, str) and item.strip() for item in value):
            self.note(f"'{key}' phải là danh sách chuỗi", key, table)
            return ()
        return tuple(item.strip() for item in value)

    def segment(self) -> SegmentSpec:
        """Who the campaign reaches, as written."""
        values = self.table("segment")
        self.unknown(values, SEGMENT_KEYS, "segment")
        spec = SegmentSpec(**{key: self.strings(values, key, "segment") for key in SEGMENT_KEYS})
        if not (spec.provinces or spec.communes or spec.legacy_districts):
            self.note("phân đoạn trống: [segment] cần provinces, communes hoặc legacy_districts", None, "segment")
        return spec

    def content(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(alerts, methods): one alert, a rotation of alerts, or every alert of some methods."""
        values = self.table("content")
        self.unknown(values, CONTENT_KEYS, "content")
        given = [key for key in CONTENT_KEYS if key in values]
        if len(given) != 1:
            found = f" (có {', '.join(given)})" if given else ""
            key = given[-1] if given else None
            self.note(f"[content] cần đúng một trong alert, rotation, methods{found}", key, "content")
            return (), ()
        if given == ["alert"]:
            return (self.slug(values),), ()
        series = self.series(values, given[0])
        return (series, ()) if given == ["rotation"] else ((), series)

    def slug(self, values: dict[str, Any]) -> str:
        """The single alert."""
        value = values["alert"]
        if not isinstance(value, str) or not value.strip():
            self.note("'alert' phải là slug của một mẫu cảnh báo", "alert", "content")
            return ""
        return value.strip()

    def series(self, values: dict[str, Any], key: str) -> tuple[str, ...]:
        """A rotation or a list of methods: not empty, nothing twice."""
        items = self.strings(values, key, "content")
        repeated = sorted({item for item in items if items.count(item) > 1})
        if isinstance(values[key], list) and not values[key]:
            self.note(f"'{key}' trống", key, "content")
        if repeated:
            self.note(f"'{key}' có mục trùng: {', '.join(repeated)}", key, "content")
        return items


def _encodings() -> tuple[str, ...]:
    # Imported here: blasts will start runs of schedules, and a module-level import would be a cycle.
    from dispatcher.blasts import ENCODINGS

    return ENCODINGS


# -- checks against the database and the region data --------------------------------------


def check(spec: ScheduleSpec, conn: Connection, regions: RegionIndex, methods: dict[str, str]) -> None:
    """InputRejected ('file:line: …') unless every alert exists, every method is known and the segment resolves."""
    text = _source(spec)
    known = set(conn.execute(select(alerts.c.slug).distinct()).scalars())
    problems = [
        *_missing(spec, text, spec.alerts, known, "không có mẫu cảnh báo", _alerts_key(spec)),
        *_missing(spec, text, spec.methods, set(methods), "phương thức lừa đảo không rõ", "methods"),
        *_unresolved(spec, text, regions),
    ]
    if problems:
        raise InputRejected("; ".join(problems))


def _source(spec: ScheduleSpec) -> str:
    """The file's text when it is still the one parsed: lines are only reported against it."""
    path = Path(spec.origin)
    raw = path.read_bytes() if path.is_file() else b""
    return raw.decode("utf-8") if hashlib.sha256(raw).hexdigest() == spec.content_hash else ""


def _alerts_key(spec: ScheduleSpec) -> str:
    # A rotation of one alert is reported at the [content] header: `alert` is not found there.
    return "alert" if len(spec.alerts) == 1 else "rotation"


def _missing(spec: ScheduleSpec, text: str, names: Iterable[str], known: set[str], label: str, key: str) -> list[str]:
    line = _line_of(text, key, "content")
    problems = []
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=3)
            hint = f" (gần giống: {', '.join(close)})" if close else ""
            problems.append(_at(spec.origin, line, f"{label} '{name}'{hint}"))
    return problems


def _unresolved(spec: ScheduleSpec, text: str, regions: RegionIndex) -> list[str]:
    try:
        resolve(spec.segment, regions)
    except (InputRejected, UsageError) as exc:
        return [_at(spec.origin, _line_of(text, None, "segment"), f"[segment] {str(exc).rstrip('.')}")]
    return []
