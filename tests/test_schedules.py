"""Recurring campaigns: the `when` grammar, file validation with file:line problems, and the shipped examples."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine

from dispatcher import alerts, schedules
from dispatcher.domain import METHODS
from dispatcher.errors import InputRejected
from dispatcher.regions import RegionIndex
from dispatcher.schedules import ScheduleSpec, next_runs, parse_file, parse_when

ROOT = Path(__file__).parent.parent
HCM = "Asia/Ho_Chi_Minh"
# Monday 23 November 2026, 09:00 in Hà Nội.
MONDAY_9_LOCAL = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)

# A valid schedule; the line numbers below are asserted by the validation tests.
VALID = """\
title = "Cảnh báo thử nghiệm"
when = "every Monday 09:00"
channel = "sms"

[segment]
provinces = ["Cao Bằng"]

[content]
alert = "viec-nhe-luong-cao"
"""


def write(directory: Path, text: str, name: str = "thu-nghiem") -> Path:
    """`text` saved as `directory/name.toml`."""
    path = directory / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def rejected(directory: Path, text: str, name: str = "thu-nghiem") -> tuple[Path, str]:
    """(the file, the message) of a schedule file parse_file refuses."""
    path = write(directory, text, name)
    with pytest.raises(InputRejected) as caught:
        parse_file(path, HCM)
    return path, str(caught.value)


def utc(trigger_text: str, timezone: str = HCM, after: datetime = MONDAY_9_LOCAL, count: int = 5) -> list[datetime]:
    """The next runs of `trigger_text`, in UTC."""
    return [run.astimezone(UTC) for run in next_runs(parse_when(trigger_text, timezone), after, count)]


@pytest.fixture
def catalogue_db(sqlite_engine: Engine) -> Engine:
    """A database holding the shipped alert catalogue, as `alerts sync` stores it."""
    loaded = alerts.load_catalogue_dir(ROOT / "messages", alerts.Catalogue(methods=METHODS, max_parts=4))
    with sqlite_engine.begin() as conn:
        alerts.sync(conn, loaded, "police", MONDAY_9_LOCAL)
    return sqlite_engine


def check_file(engine: Engine, regions: RegionIndex, path: Path) -> None:
    """parse_file then check against the database, the region data and the built-in methods."""
    spec = parse_file(path, HCM)
    with engine.connect() as conn:
        schedules.check(spec, conn, regions, METHODS)


# -- when: cron ---------------------------------------------------------------------------


def test_cron_one_is_monday() -> None:
    """'0 9 * * 1' fires at 09:00 local on Mondays, as in standard cron."""
    runs = next_runs(parse_when("0 9 * * 1", HCM), MONDAY_9_LOCAL)
    assert {(run.weekday(), run.hour, run.minute) for run in runs} == {(0, 9, 0)}


@pytest.mark.parametrize("sunday", ["0", "7"])
def test_cron_zero_and_seven_are_sunday(sunday: str) -> None:
    """Standard cron's 0 and 7 both mean Sunday, although APScheduler numbers Monday as 0."""
    runs = next_runs(parse_when(f"0 9 * * {sunday}", HCM), MONDAY_9_LOCAL)
    assert {run.weekday() for run in runs} == {6}


@pytest.mark.parametrize(
    ("field", "weekdays"),
    [
        ("1-5", {0, 1, 2, 3, 4}),
        ("5-7", {4, 5, 6}),
        ("0-2", {6, 0, 1}),
        ("1,3,5", {0, 2, 4}),
        ("*/2", {6, 1, 3, 5}),
        ("1-5/2", {0, 2, 4}),
        ("mon,thu", {0, 3}),
    ],
)
def test_cron_weekday_ranges_lists_and_steps_follow_standard_cron(field: str, weekdays: set[int]) -> None:
    """Numeric weekday ranges, lists and steps mean what they mean in standard cron."""
    runs = next_runs(parse_when(f"0 9 * * {field}", HCM), MONDAY_9_LOCAL, count=14)
    assert {run.weekday() for run in runs} == weekdays


def test_cron_with_both_day_fields_is_refused() -> None:
    """A cron line restricting both day of month and weekday is refused: cron ORs them, APScheduler ANDs them."""
    with pytest.raises(ValueError, match="cả ngày trong tháng lẫn thứ"):
        parse_when("0 9 1 * 1", HCM)


def test_cron_that_never_fires_is_refused() -> None:
    """A cron line naming a day that never exists is refused."""
    with pytest.raises(ValueError, match="không bao giờ chạy"):
        parse_when("0 9 30 2 *", HCM)


# -- when: phrases and time zones ---------------------------------------------------------


def test_weekly_phrase_at_its_own_instant_gives_the_next_week() -> None:
    """'every Monday 09:00' asked at 09:00 on a Monday in Hà Nội gives the following Monday, not that instant."""
    assert utc("every Monday 09:00")[:2] == [
        datetime(2026, 11, 30, 2, 0, tzinfo=UTC),
        datetime(2026, 12, 7, 2, 0, tzinfo=UTC),
    ]


def test_local_run_before_seven_falls_on_the_previous_utc_day() -> None:
    """Monday 06:30 in Hà Nội is Sunday 23:30 UTC."""
    assert utc("every Monday 06:30")[0] == datetime(2026, 11, 29, 23, 30, tzinfo=UTC)


def test_day_31_skips_short_months() -> None:
    """A monthly run on day 31 happens only in months that have a 31st."""
    assert [run.date().isoformat() for run in utc("every month on day 31 09:00")] == [
        "2026-12-31", "2027-01-31", "2027-03-31", "2027-05-31", "2027-07-31",
    ]  # fmt: skip


def test_fixed_offset_time_zone() -> None:
    """'every day 09:00' in UTC+07 runs at 02:00 UTC."""
    assert utc("every day 09:00", "UTC+07")[:2] == [
        datetime(2026, 11, 24, 2, 0, tzinfo=UTC),
        datetime(2026, 11, 25, 2, 0, tzinfo=UTC),
    ]


def test_utc_schedule_runs_at_the_written_utc_time() -> None:
    """The same phrase in UTC runs at 09:00 UTC, later on the same day."""
    assert utc("every day 09:00", "UTC")[0] == datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("phrase", "cron"),
    [
        ("every day 09:00", "0 9 * * *"),
        ("every weekday 08:30", "30 8 * * 1-5"),
        ("every Monday 09:00", "0 9 * * 1"),
        ("EVERY SUNDAY 7:05", "5 7 * * 0"),
        ("every Monday and Thursday 09:00", "0 9 * * 1,4"),
        ("every mon,thu 09:00", "0 9 * * 1,4"),
        ("every month on day 1 09:00", "0 9 1 * *"),
        ("every month on the 15th 09:00", "0 9 15 * *"),
    ],
)
def test_english_phrases_mean_their_cron_line(phrase: str, cron: str) -> None:
    """Each English phrase runs exactly when its cron line does."""
    assert utc(phrase, count=12) == utc(cron, count=12)


@pytest.mark.parametrize(
    ("phrase", "cron"),
    [
        ("hằng ngày 09:00", "0 9 * * *"),
        ("hàng ngày 09:00", "0 9 * * *"),
        ("hang ngay 09:00", "0 9 * * *"),
        ("thứ hai hằng tuần 09:00", "0 9 * * 1"),
        ("Thứ 7 hằng tuần 09:00", "0 9 * * 6"),
        ("chủ nhật hàng tuần 18:00", "0 18 * * 0"),
        ("thứ hai và thứ năm hằng tuần 09:00", "0 9 * * 1,4"),
        ("ngày 1 hằng tháng 09:00", "0 9 1 * *"),
        ("ngày 15 hàng tháng 9h30", "30 9 15 * *"),
    ],
)
def test_vietnamese_phrases_mean_their_cron_line(phrase: str, cron: str) -> None:
    """Each Vietnamese phrase, with or without accents, runs exactly when its cron line does."""
    assert utc(phrase, count=12) == utc(cron, count=12)


def test_unknown_phrase_lists_the_accepted_forms() -> None:
    """A phrase that is not understood is refused with the accepted forms and an example."""
    with pytest.raises(ValueError) as caught:
        parse_when("khi nào rảnh thì gửi", HCM)
    assert "không hiểu được" in str(caught.value)
    assert "'0 9 * * 1'" in str(caught.value) and "thứ hai hằng tuần 09:00" in str(caught.value)


@pytest.mark.parametrize(
    "text",
    ["every day 24:00", "every day 09:60", "every month on day 32 09:00", "every funday 09:00", "every day",
     "0 9 * *", "61 9 * * *", "0 9 * * 8"],
)  # fmt: skip
def test_malformed_when_is_refused(text: str) -> None:
    """Impossible times, days and cron fields are refused."""
    with pytest.raises(ValueError, match="không hiểu được"):
        parse_when(text, HCM)


def test_next_runs_are_strictly_increasing_and_after_the_instant() -> None:
    """next_runs gives the requested number of aware times, each later than the last."""
    runs = next_runs(parse_when("every weekday 08:30", HCM), MONDAY_9_LOCAL)
    assert len(runs) == 5
    assert all(run.tzinfo is not None for run in runs)
    assert all(a < b for a, b in zip([MONDAY_9_LOCAL, *runs], runs, strict=False))


# -- parse_file ---------------------------------------------------------------------------


def test_valid_file_with_defaults(tmp_path: Path) -> None:
    """A minimal file gets the deployment time zone, sms, auto, 24 hours, enabled, no rate limit."""
    path = write(tmp_path, VALID)
    spec = parse_file(path, "UTC")
    assert (spec.name, spec.timezone, spec.channel, spec.encoding) == ("thu-nghiem", "UTC", "sms", "auto")
    assert (spec.valid_hours, spec.enabled, spec.rate) == (24, True, None)
    assert (spec.alerts, spec.methods, spec.origin) == (("viec-nhe-luong-cao",), (), str(path))


def test_content_hash_is_the_sha256_of_the_file(tmp_path: Path) -> None:
    """The content hash fingerprints the file's bytes."""
    path = write(tmp_path, VALID)
    assert parse_file(path, HCM).content_hash == hashlib.sha256(path.read_bytes()).hexdigest()


def test_trigger_follows_the_file_time_zone(tmp_path: Path) -> None:
    """A file's own timezone overrides the deployment default."""
    spec = parse_file(write(tmp_path, VALID.replace("channel", 'timezone = "UTC"\nchannel')), HCM)
    assert next_runs(spec.trigger(), MONDAY_9_LOCAL, 1) == [datetime(2026, 11, 23, 9, 0, tzinfo=UTC)]


@pytest.mark.parametrize(
    ("content", "rotation"),
    [('alert = "a"', False), ('rotation = ["a", "b"]', True), ('methods = ["romance"]', True)],
)
def test_is_rotation(tmp_path: Path, content: str, rotation: bool) -> None:
    """A rotation or a methods series is a series; one alert is not."""
    spec = parse_file(write(tmp_path, VALID.replace('alert = "viec-nhe-luong-cao"', content)), HCM)
    assert spec.is_rotation() is rotation


def test_json_round_trip(tmp_path: Path) -> None:
    """to_json is JSON-serialisable and from_json rebuilds an equal spec."""
    spec = parse_file(ROOT / "schedules" / "cao-bang-hang-tuan.toml", HCM)
    assert ScheduleSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec


def test_toml_syntax_error_names_its_line(tmp_path: Path) -> None:
    """A TOML syntax error is reported at the line tomllib names."""
    path, message = rejected(tmp_path, VALID.replace('"every Monday 09:00"', "every Monday 09:00"))
    assert message.startswith(f"{path}:2: không đúng cú pháp TOML")


@pytest.mark.parametrize(
    ("old", "new", "line", "key"),
    [
        ('channel = "sms"\n', 'channel = "sms"\ncolour = "red"\n', 4, "colour"),
        ('provinces = ["Cao Bằng"]\n', 'provinces = ["Cao Bằng"]\nprovince = ["Huế"]\n', 7, "province"),
        ('alert = "viec-nhe-luong-cao"\n', 'alert = "viec-nhe-luong-cao"\nalerts = ["a"]\n', 10, "alerts"),
        ("[segment]", "[segmnet]", 5, "segmnet"),
    ],
)
def test_unknown_key_is_reported_at_its_line(tmp_path: Path, old: str, new: str, line: int, key: str) -> None:
    """An unknown key, at the top level, in [segment] or in [content], is reported at its line."""
    path, message = rejected(tmp_path, VALID.replace(old, new))
    assert f"{path}:{line}: khoá không hợp lệ '{key}'" in message


@pytest.mark.parametrize("key", ["title", "when"])
def test_missing_required_key(tmp_path: Path, key: str) -> None:
    """A file without a title or a when is refused, naming the key."""
    text = "\n".join(line for line in VALID.splitlines() if not line.startswith(key)) + "\n"
    path, message = rejected(tmp_path, text)
    assert f"{path}: thiếu '{key}'" in message


def test_bad_when_is_reported_at_its_line(tmp_path: Path) -> None:
    """A when that is not understood is reported at its line with the accepted forms."""
    path, message = rejected(tmp_path, VALID.replace("every Monday 09:00", "mỗi khi rảnh"))
    assert f"{path}:2: 'when' không hiểu được 'mỗi khi rảnh'" in message
    assert "every Monday 09:00" in message


def test_bad_time_zone_is_reported_at_its_line(tmp_path: Path) -> None:
    """An unknown time zone is reported at its line."""
    path, message = rejected(tmp_path, VALID.replace('channel = "sms"', 'timezone = "Asia/Hanoi_City"'))
    assert f"{path}:3: 'timezone' múi giờ 'Asia/Hanoi_City' không hợp lệ" in message


@pytest.mark.parametrize(("key", "value"), [("channel", "fax"), ("encoding", "ebcdic")])
def test_channel_and_encoding_must_be_allowed(tmp_path: Path, key: str, value: str) -> None:
    """A channel policy or encoding outside the allowed ones is reported at its line with the choices."""
    path, message = rejected(tmp_path, VALID.replace('channel = "sms"', f'{key} = "{value}"'))
    assert f"{path}:3: '{key}' = '{value}' không hợp lệ (nhận: " in message


@pytest.mark.parametrize("value", ["0", "-5", '"nhanh"', "true"])
def test_rate_must_be_a_positive_number(tmp_path: Path, value: str) -> None:
    """A rate that is not a number above zero is reported at its line."""
    path, message = rejected(tmp_path, VALID.replace('channel = "sms"', f"rate = {value}"))
    assert f"{path}:3: 'rate' phải là" in message


@pytest.mark.parametrize(("key", "value"), [("rate", "inf"), ("rate", "nan"), ("valid_hours", "+inf")])
def test_a_non_finite_number_is_refused(tmp_path: Path, key: str, value: str) -> None:
    """TOML's nan and inf are no rate and no validity: refused at their line, not read as 'no limit'."""
    path, message = rejected(tmp_path, VALID.replace('channel = "sms"', f"{key} = {value}"))
    assert f"{path}:3: '{key}' phải là một số hữu hạn" in message


@pytest.mark.parametrize("value", ["0", "0.5", "721", '"1 ngày"'])
def test_valid_hours_must_be_in_range(tmp_path: Path, value: str) -> None:
    """valid_hours outside 1..720, or not a number, is reported at its line."""
    path, message = rejected(tmp_path, VALID.replace('channel = "sms"', f"valid_hours = {value}"))
    assert f"{path}:3: 'valid_hours' phải là" in message


def test_enabled_must_be_a_boolean(tmp_path: Path) -> None:
    """enabled must be true or false."""
    path, message = rejected(tmp_path, VALID.replace('channel = "sms"', 'enabled = "có"'))
    assert f"{path}:3: 'enabled' phải là true hoặc false" in message


def test_empty_segment_is_reported_at_its_table(tmp_path: Path) -> None:
    """A segment naming no province, commune or legacy district is reported at [segment]."""
    path, message = rejected(tmp_path, VALID.replace('provinces = ["Cao Bằng"]', 'audiences = ["student"]'))
    assert f"{path}:5: phân đoạn trống" in message


def test_missing_segment_is_an_empty_segment(tmp_path: Path) -> None:
    """A file without [segment] has an empty segment."""
    _, message = rejected(tmp_path, VALID.replace('[segment]\nprovinces = ["Cao Bằng"]\n', ""))
    assert "phân đoạn trống" in message


def test_content_without_alert_rotation_or_methods(tmp_path: Path) -> None:
    """An empty [content] is reported at its table."""
    path, message = rejected(tmp_path, VALID.replace('alert = "viec-nhe-luong-cao"\n', ""))
    assert f"{path}:8: [content] cần đúng một trong alert, rotation, methods" in message


def test_content_with_two_kinds(tmp_path: Path) -> None:
    """[content] with both an alert and methods is reported at the second one."""
    text = VALID.replace('alert = "viec-nhe-luong-cao"\n', 'alert = "viec-nhe-luong-cao"\nmethods = ["romance"]\n')
    path, message = rejected(tmp_path, text)
    assert f"{path}:10: [content] cần đúng một trong alert, rotation, methods (có alert, methods)" in message


def test_empty_rotation(tmp_path: Path) -> None:
    """An empty rotation is reported at its line."""
    path, message = rejected(tmp_path, VALID.replace('alert = "viec-nhe-luong-cao"', "rotation = []"))
    assert f"{path}:9: 'rotation' trống" in message


def test_duplicate_slug_in_rotation(tmp_path: Path) -> None:
    """A rotation naming an alert twice is reported at its line with the repeated slug."""
    path, message = rejected(tmp_path, VALID.replace('alert = "viec-nhe-luong-cao"', 'rotation = ["a", "b", "a"]'))
    assert f"{path}:9: 'rotation' có mục trùng: a" in message


def test_file_name_must_be_a_slug(tmp_path: Path) -> None:
    """A campaign whose file name is not a slug is refused."""
    path, message = rejected(tmp_path, VALID, name="Cao_Bang")
    assert f"{path}: tên tệp 'Cao_Bang'" in message


def test_several_problems_are_reported_together(tmp_path: Path) -> None:
    """Every problem of a file comes in one message, in the order of the file."""
    text = VALID.replace("every Monday 09:00", "bao giờ cũng được").replace('"sms"', '"fax"')
    path, message = rejected(tmp_path, text.replace("[segment]", 'colour = "red"\n[segment]'))
    assert [problem.split(": ")[0] for problem in message.split("; ")] == [f"{path}:2", f"{path}:3", f"{path}:5"]


# -- load_dir -----------------------------------------------------------------------------


def test_load_dir_reports_every_bad_file(tmp_path: Path) -> None:
    """load_dir reports the problems of all files together, one per line."""
    write(tmp_path, VALID, "tot")
    bad_when = write(tmp_path, VALID.replace("every Monday 09:00", "không bao giờ"), "a-xau")
    bad_rate = write(tmp_path, VALID.replace('channel = "sms"', "rate = 0"), "b-xau")
    with pytest.raises(InputRejected) as caught:
        schedules.load_dir(tmp_path, HCM)
    lines = str(caught.value).splitlines()
    assert [line.split(": ")[0] for line in lines] == [f"{bad_when}:2", f"{bad_rate}:3"]


def test_load_dir_sorts_by_name(tmp_path: Path) -> None:
    """load_dir gives every schedule of the folder, by file name."""
    write(tmp_path, VALID, "b-hang-tuan")
    write(tmp_path, VALID, "a-hang-tuan")
    assert [spec.name for spec in schedules.load_dir(tmp_path, HCM)] == ["a-hang-tuan", "b-hang-tuan"]


# -- check against the catalogue and the regions ------------------------------------------


def test_shipped_examples_parse_and_check(catalogue_db: Engine, regions: RegionIndex) -> None:
    """The campaigns shipped in schedules/ are valid against the real catalogue and region data."""
    specs = schedules.load_dir(ROOT / "schedules", HCM)
    assert [spec.name for spec in specs] == ["an-giang-sinh-vien-hang-thang", "cao-bang-hang-tuan"]
    with catalogue_db.connect() as conn:
        for spec in specs:
            schedules.check(spec, conn, regions, METHODS)


def test_shipped_examples_run_when_documented() -> None:
    """Cao Bằng runs on Monday mornings and An Giang on the 1st of each month, at 09:00 in Hà Nội."""
    weekly, monthly = (parse_file(ROOT / "schedules" / f"{name}.toml", HCM).trigger() for name in
                       ("cao-bang-hang-tuan", "an-giang-sinh-vien-hang-thang"))  # fmt: skip
    assert {(run.weekday(), run.hour) for run in next_runs(weekly, MONDAY_9_LOCAL)} == {(0, 9)}
    assert {(run.day, run.hour) for run in next_runs(monthly, MONDAY_9_LOCAL)} == {(1, 9)}


def test_unknown_alert_is_reported_with_close_matches(
    tmp_path: Path, catalogue_db: Engine, regions: RegionIndex
) -> None:
    """An alert slug that is not in the catalogue is reported at its line with the closest slugs."""
    path = write(tmp_path, VALID.replace("viec-nhe-luong-cao", "viec-nhe-luong-ca"))
    with pytest.raises(InputRejected, match=f"{path}:9: không có mẫu cảnh báo 'viec-nhe-luong-ca'") as caught:
        check_file(catalogue_db, regions, path)
    assert "gần giống: viec-nhe-luong-cao" in str(caught.value)


def test_unknown_alert_in_rotation(tmp_path: Path, catalogue_db: Engine, regions: RegionIndex) -> None:
    """Every unknown slug of a rotation is reported at the rotation's line."""
    rotation = 'rotation = ["viec-nhe-luong-cao", "khong-co", "cung-khong-co"]'
    path = write(tmp_path, VALID.replace('alert = "viec-nhe-luong-cao"', rotation))
    with pytest.raises(InputRejected) as caught:
        check_file(catalogue_db, regions, path)
    assert str(caught.value).count(f"{path}:9: không có mẫu cảnh báo") == 2


def test_unknown_method_is_reported(tmp_path: Path, catalogue_db: Engine, regions: RegionIndex) -> None:
    """A method outside the taxonomy is reported at its line with the closest method."""
    path = write(tmp_path, VALID.replace('alert = "viec-nhe-luong-cao"', 'methods = ["romance", "romanse"]'))
    with pytest.raises(InputRejected, match=f"{path}:9: phương thức lừa đảo không rõ 'romanse' .gần giống: romance"):
        check_file(catalogue_db, regions, path)


def test_unresolved_segment_is_reported_at_its_table(
    tmp_path: Path, catalogue_db: Engine, regions: RegionIndex
) -> None:
    """A segment naming an unknown province is reported at [segment] with the region index's reason."""
    path = write(tmp_path, VALID.replace("Cao Bằng", "Tỉnh Không Có"))
    with pytest.raises(InputRejected, match=f"{path}:5: \\[segment\\] Không tìm thấy"):
        check_file(catalogue_db, regions, path)


def test_unknown_audience_is_reported_at_the_segment(
    tmp_path: Path, catalogue_db: Engine, regions: RegionIndex
) -> None:
    """An audience group that does not exist is reported at [segment]."""
    path = write(tmp_path, VALID.replace('provinces = ["Cao Bằng"]', 'provinces = ["Cao Bằng"]\naudiences = ["ma"]'))
    with pytest.raises(InputRejected, match=f"{path}:5: \\[segment\\] Nhóm đối tượng không rõ 'ma'"):
        check_file(catalogue_db, regions, path)


def test_check_accepts_alerts_of_any_status(tmp_path: Path, catalogue_db: Engine, regions: RegionIndex) -> None:
    """An alert stored as a draft is enough: approval is checked when a run creates its blast."""
    check_file(catalogue_db, regions, write(tmp_path, VALID))
