"""Statutory reports prepared ahead of their deadlines, kept as versions; the scheduler's rollup and purge jobs."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from dispatcher import jobs, prepared, retention
from dispatcher import scheduler as scheduling
from dispatcher.config import Settings, load_settings
from dispatcher.errors import ConfigError, NotFound, UsageError
from dispatcher.models import audit_log, deliveries, prepared_reports
from dispatcher.regions import RegionIndex
from tests.conftest import Cli
from tests.test_reach import fill

# Local midnight in Hà Nội is 17:00 UTC the day before.
JUNE_1 = datetime(2026, 5, 31, 17, 0, 30, tzinfo=UTC)  # 00:00:30 on 1 June, local


@pytest.fixture
def settings() -> Settings:
    """Defaults (preparation on 1 June and 1 November), whatever ./config.toml says."""
    return load_settings(None, {})


def _quiet(settings: Settings) -> Settings:
    """`settings` with only the statutory reports' jobs: no rollup or purge to wait for."""
    return settings.model_copy(update={"reports": settings.reports.model_copy(update={"rollup_minutes": 0,
                                                                                       "purge_at": ""})})  # fmt: skip


def _kept(engine: Engine) -> list[tuple]:
    r = prepared_reports.c
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(select(r.kind, r.year, r.version, r.period_last, r.prepared_by))]


def test_the_job_prepares_the_6_month_report_on_its_day_and_not_before(
    engine: Engine, settings: Settings, regions: RegionIndex
) -> None:
    """On 31 May at 23:59 local nothing is prepared; on 1 June the 6-month report, figures to the end of 31 May."""
    runner = jobs.Jobs(engine, _quiet(settings), regions)
    assert runner.run(JUNE_1 - timedelta(minutes=1)) == []
    done = runner.run(JUNE_1)
    assert [d["job"] for d in done] == ["prepare:h1"]
    assert _kept(engine) == [("h1", 2026, 1, date(2026, 5, 31), "scheduler")]


def test_the_job_prepares_once_across_restarts_and_two_schedulers(
    engine: Engine, settings: Settings, regions: RegionIndex
) -> None:
    """A restarted process and a second scheduler, later the same day and the next, prepare nothing more."""
    jobs.Jobs(engine, _quiet(settings), regions).run(JUNE_1)
    for later in (timedelta(hours=1), timedelta(days=1)):
        assert jobs.Jobs(engine, _quiet(settings), regions).run(JUNE_1 + later) == []
    assert len(_kept(engine)) == 1


def test_the_job_does_not_prepare_after_the_deadline(engine: Engine, settings: Settings, regions: RegionIndex) -> None:
    """A scheduler first started on 11 June leaves the 6-month report to a person: its deadline has passed."""
    assert jobs.Jobs(engine, _quiet(settings), regions).run(JUNE_1 + timedelta(days=10)) == []


def test_claiming_a_slot_twice_succeeds_once(engine: Engine, now: datetime) -> None:
    """The mark moves forward once per slot; an older slot is never claimed after a newer one."""
    with engine.begin() as conn:
        assert jobs.claim(conn, "purge", "2026-06-01", now)
        assert not jobs.claim(conn, "purge", "2026-06-01", now)
        assert not jobs.claim(conn, "purge", "2026-05-31", now)
        assert jobs.claim(conn, "purge", "2026-06-02", now)


def test_preparing_again_keeps_the_old_version_byte_for_byte(
    engine: Engine, settings: Settings, regions: RegionIndex
) -> None:
    """A second preparation is version 2; version 1's files are unchanged and both are listed, newest first."""
    first = prepared.prepare(engine, settings, regions, prepared.Kind.H1, 2026, JUNE_1, "operator")
    with engine.connect() as conn:
        before = {fmt: prepared.get(conn, first.id, fmt) for fmt in prepared.FORMATS}
    second = prepared.prepare(engine, settings, regions, prepared.Kind.H1, 2026, JUNE_1 + timedelta(days=2), "chief")
    with engine.connect() as conn:
        assert {fmt: prepared.get(conn, first.id, fmt) for fmt in prepared.FORMATS} == before
        listed = prepared.listing(conn)
    assert [(p.id, p.version, p.last) for p in listed] == [
        (second.id, 2, date(2026, 6, 2)),
        (first.id, 1, date(2026, 5, 31)),
    ]
    assert listed[1].sizes == {fmt: len(content) for fmt, content in before.items()}


def test_a_prepared_report_round_trips_its_bytes(engine: Engine, settings: Settings, regions: RegionIndex) -> None:
    """What `get` returns is exactly what was rendered, for every format (bytea on PostgreSQL, BLOB on SQLite)."""
    made = prepared.draft(engine, settings, regions, prepared.Kind.YEAR, 2025, JUNE_1, "operator")
    with engine.begin() as conn:
        kept = prepared.store(conn, made)
    with engine.connect() as conn:
        assert {fmt: prepared.get(conn, kept.id, fmt) for fmt in prepared.FORMATS} == made.files
    assert made.files["pdf"].startswith(b"%PDF") and made.files["xlsx"].startswith(b"PK")
    assert (kept.first, kept.last, kept.deadline) == (date(2025, 1, 1), date(2025, 12, 31), date(2025, 11, 10))


def test_the_report_says_up_to_which_day_its_figures_run(
    engine: Engine, settings: Settings, regions: RegionIndex
) -> None:
    """The title and a note say the figures end on 31 May and the report serves the 10 June deadline."""
    made = prepared.draft(engine, settings, regions, prepared.Kind.H1, 2026, JUNE_1, prepared.SCHEDULER)
    page = made.files["html"].decode("utf-8")
    assert "6 tháng đầu năm 2026 (số liệu tính đến hết ngày 31/05/2026)" in page
    assert "phục vụ hạn nộp trước ngày 10/06/2026" in page and "tự động theo lịch" in page


def test_a_bad_id_or_format_is_refused_in_vietnamese(engine: Engine) -> None:
    """An id nobody prepared is NotFound; a format that does not exist is a UsageError naming the formats."""
    with engine.connect() as conn, pytest.raises(NotFound, match="số 42"):
        prepared.get(conn, 42, "pdf")
    with engine.connect() as conn, pytest.raises(UsageError, match="'docx' không có"):
        prepared.get(conn, 1, "docx")


def test_a_year_without_a_whole_day_yet_is_refused() -> None:
    """On 1 January there is nothing to report for that year yet."""
    with pytest.raises(UsageError, match="Năm 2027"):
        prepared.period(prepared.Kind.YEAR, 2027, date(2027, 1, 1))


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [("h1_prepare_on", "06-31", "MM-DD"), ("year_deadline", "10-01", "hạn nộp phải từ ngày chuẩn bị"),
     ("purge_at", "3h", "HH:MM"), ("h1_deadline", "02-29", "MM-DD")],
)  # fmt: skip
def test_a_bad_preparation_date_names_the_key_and_the_file(tmp_path: Path, key: str, value: str, problem: str) -> None:
    """A day no year has, a deadline before its preparation or a bad purge hour: the key, the file, the reason."""
    path = tmp_path / "config.toml"
    path.write_text(f'[reports]\n{key} = "{value}"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, {})
    assert f"'reports.{key}'" in str(caught.value) and str(path) in str(caught.value) and problem in str(caught.value)


# -- the rollup and purge jobs ------------------------------------------------------------------


@pytest.fixture
def dataset(sqlite_engine: Engine, regions: RegionIndex, now: datetime, tmp_path: Path) -> Engine:
    """test_reach's generated blasts (summer 2026) on SQLite."""
    return fill(sqlite_engine, regions, now, tmp_path)


def test_the_rollup_job_runs_once_per_slot(dataset: Engine, settings: Settings, regions: RegionIndex) -> None:
    """Every 5 minutes: the first run adds the finished deliveries, the same slot again nothing, the next adds none."""
    at = datetime(2026, 9, 1, 3, 0, 10, tzinfo=UTC)  # 10:00 local, outside every preparation window
    runner = jobs.Jobs(dataset, settings.model_copy(update={"reports": settings.reports.model_copy(
        update={"purge_at": ""})}), regions)  # fmt: skip
    first = runner.run(at)
    assert first[0]["job"] == "rollup" and first[0]["deliveries"] > 0
    assert runner.run(at + timedelta(minutes=4)) == []
    assert [(d["job"], d["deliveries"]) for d in runner.run(at + timedelta(minutes=5))] == [("rollup", 0)]


def test_the_purge_job_runs_daily_from_its_hour_and_is_audited(
    dataset: Engine, settings: Settings, regions: RegionIndex
) -> None:
    """Past retention, nothing goes before 03:00 local; at 03:00 the closed blasts' rows go, audited; once a day."""
    two_am = datetime(2029, 9, 1, 19, 0, tzinfo=UTC)  # 02:00 on 2 September 2029, local
    runner = jobs.Jobs(dataset, settings, regions)
    assert [d["job"] for d in runner.run(two_am)] == ["rollup"]
    done = [d for d in runner.run(two_am + timedelta(hours=1)) if d["job"] == "purge"]
    assert done and done[0]["deliveries"] > 0
    assert [d for d in runner.run(two_am + timedelta(hours=5)) if d["job"] == "purge"] == []
    with dataset.connect() as conn:
        entries = conn.execute(select(audit_log.c.actor).where(audit_log.c.action == "deliveries.purge")).all()
        left = conn.execute(select(func.count()).select_from(deliveries)).scalar()
    assert entries == [("scheduler",)] and left > 0  # the running blast's rows stay


def test_the_purge_job_finishes_a_purge_killed_between_slices(
    dataset: Engine, settings: Settings, regions: RegionIndex
) -> None:
    """A purge killed after one slice the night before: the 03:00 job deletes the rest and audits the whole once."""
    three_am = datetime(2029, 9, 1, 20, 0, tzinfo=UTC)  # 03:00 on 2 September 2029, local
    runner = jobs.Jobs(dataset, settings.model_copy(update={"reports": settings.reports.model_copy(
        update={"purge_slice_rows": 100})}), regions)  # fmt: skip
    runner.run(three_am - timedelta(hours=2))  # the rollup: only what it holds may go
    whole = retention.purge(dataset, three_am, settings.reports.retention_months, "admin", dry_run=True)
    killed = retention.slices(dataset, three_am, settings.reports.retention_months, "admin", slice_rows=100)
    assert next(killed) == 100
    killed.close()
    [done] = [d for d in runner.run(three_am) if d["job"] == "purge"]
    with dataset.connect() as conn:
        audited = conn.execute(select(audit_log.c.detail).where(audit_log.c.action == "deliveries.purge")).scalars()
        totals = [detail["deliveries"] for detail in audited]
    assert done["deliveries"] == whole.deliveries and totals == [whole.deliveries]


def test_the_leading_scheduler_runs_the_jobs_in_its_loop(
    engine: Engine, settings: Settings, regions: RegionIndex
) -> None:
    """A scheduler step on 1 June prepares the 6-month report (on the jobs' thread); a standby's prepares nothing."""
    scheduling.LeaderLease(engine, "b:2", seconds=30).hold(JUNE_1)
    standby = scheduling.SchedulerService(engine, _quiet(settings), regions, "a:1", clock=lambda: JUNE_1)
    assert not standby.step() and _kept(engine) == []
    leader = scheduling.SchedulerService(engine, _quiet(settings), regions, "b:2", clock=lambda: JUNE_1)
    try:
        assert leader.step()
        leader.wait_for_jobs()
    finally:
        leader._stop_aps()
    assert len(_kept(engine)) == 1


# -- the command line -------------------------------------------------------------------------


def test_report_prepare_list_and_get_round_trip(cli: Cli, tmp_path: Path) -> None:
    """Prepared by hand (audited), listed with its sizes, and fetched byte for byte as stored."""
    code, kept = cli.json("report", "prepare", "--which", "h1", "--year", "2025", user="operator")
    assert code == 0 and (kept["first"], kept["last"], kept["deadline"]) == ("2025-01-01", "2025-06-30", "2025-06-10")
    code, listed = cli.json("report", "list")
    assert code == 0 and [r["id"] for r in listed] == [kept["id"]] and listed[0]["prepared_by"] == "operator"
    path = tmp_path / "bao-cao.pdf"
    assert cli("report", "get", str(kept["id"]), "--format", "pdf", "-o", str(path))[0] == 0
    assert path.read_bytes().startswith(b"%PDF") and len(path.read_bytes()) == listed[0]["sizes"]["pdf"]
    code, out, _ = cli("report", "list")
    assert code == 0 and "Báo cáo 6 tháng 2025" in out and "01/01–30/06/2025" in out and "10/06/2025" in out
    _, entries = cli.json("audit", "--action", "report.prepare")
    assert entries and entries[0]["actor"] == "operator"


def test_report_get_refuses_a_bad_id_or_format_with_exit_2(cli: Cli) -> None:
    """An unknown id, an id that is not a number, a format that does not exist, a PDF to the screen: exit 2."""
    for args, said in ((("99", "--format", "pdf", "-o", "x.pdf"), "số 99"), (("abc", "--format", "json"), "'abc'"),
                       (("1", "--format", "docx"), "'docx'"), (("1", "--format", "pdf"), "--output")):  # fmt: skip
        code, _, err = cli("report", "get", *args)
        assert code == 2 and said in err, err


def test_report_prepare_refuses_an_unknown_report(cli: Cli) -> None:
    """`--which q3` is neither the 6-month nor the annual report."""
    code, _, err = cli("report", "prepare", "--which", "q3")
    assert code == 2 and "h1 (6 tháng) hoặc year (năm)" in err


def test_report_without_a_period_or_a_command_says_what_it_needs(cli: Cli) -> None:
    """`canhbao report` alone names --period and the commands."""
    code, _, err = cli("report")
    assert code == 2 and "--period" in err and "list" in err


def test_a_bad_preparation_date_in_config_exits_2(cli: Cli) -> None:
    """The command line stops on `h1_prepare_on = "13-01"`, naming the key."""
    cli.config.write_text(cli.config.read_text(encoding="utf-8") + '[reports]\nh1_prepare_on = "13-01"\n', "utf-8")
    code, _, err = cli("report", "list")
    assert code == 2 and "reports.h1_prepare_on" in err


def test_report_still_takes_as_after_its_options(cli: Cli) -> None:
    """`canhbao report --period 2026 --as tester` works as before `report` held subcommands."""
    assert cli("report", "--period", "2026", "--as", "tester")[0] == 0


def test_retention_keeps_whole_months_on_an_early_day_of_the_month() -> None:
    """On 7 December 2026, 24 months back is 7 December 2024, not the 28th (which purged three weeks too many)."""
    assert retention.cutoff(datetime(2026, 12, 7, 21, 39, tzinfo=UTC), 24) == datetime(2024, 12, 7, 21, 39, tzinfo=UTC)
    assert retention.cutoff(datetime(2026, 3, 1, tzinfo=UTC), 1) == datetime(2026, 2, 1, tzinfo=UTC)
