"""Reach reports: every figure against direct counts of the deliveries, idempotent rollups, periods, retention."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, insert, select, text

from dispatcher import db, queue, reports, retention, rollups
from dispatcher.config import DatabaseSettings, Settings
from dispatcher.domain import Audience
from dispatcher.errors import UsageError
from dispatcher.gateways.base import DeliveryReport, ReportStatus
from dispatcher.models import (
    alerts,
    audit_log,
    blasts,
    deliveries,
    delivery_attempts,
    inbound_ids,
    inbox,
    message_parts,
    provider_refs,
    subscribers,
)
from dispatcher.regions import RegionIndex
from tests import world
from tests.conftest import Cli

ZONE = "Asia/Ho_Chi_Minh"
SLUGS = ("dau-tu-tien-ao-ngoai-hoi", "gia-danh-cong-an-goi-video", "khong-cung-cap-ma-otp", "lay-lai-tien-bi-lua")
# (alert, channel policy, state, first send in UTC): the first crosses local midnight into 1 July.
BLASTS = (
    (0, "sms", "completed", datetime(2026, 6, 30, 16, 40, tzinfo=UTC)),
    (1, "zalo_then_sms", "completed", datetime(2026, 7, 10, 2, 0, tzinfo=UTC)),
    (2, "sms", "cancelled", datetime(2026, 7, 20, 3, 0, tzinfo=UTC)),
    (3, "sms", "running", datetime(2026, 7, 3, 1, 0, tzinfo=UTC)),
    (0, "sms", "completed", datetime(2026, 8, 4, 1, 0, tzinfo=UTC)),
)
PRICES = {"viettel": 700, "vinaphone": 680, "mobifone": 680}  # config.toml's, as Settings() defaults differ
FINAL = ("delivered", "failed", "undeliverable", "expired", "cancelled")


@pytest.fixture
def dataset(engine: Engine, regions: RegionIndex, now: datetime, tmp_path: Path) -> Engine:
    """300 people of Đà Nẵng, five blasts: retries, Zalo fallbacks, a cancelled one, one still awaiting reports."""
    return fill(engine, regions, now, tmp_path)


def fill(engine: Engine, regions: RegionIndex, now: datetime, tmp_path: Path) -> Engine:
    """The generated dataset of `dataset` in `engine`."""
    world.people(engine, regions, now, tmp_path, 300, seed=7)
    world.catalogue(engine, now, SLUGS)
    rng = random.Random(17)
    with engine.begin() as conn:
        ids = {s: conn.execute(select(alerts.c.id).where(alerts.c.slug == s)).scalar_one() for s in SLUGS}
        people = conn.execute(select(subscribers.c.id, subscribers.c.msisdn, subscribers.c.carrier,
                                     subscribers.c.province_code, subscribers.c.commune_code)).all()  # fmt: skip
        for number, (alert, channel, state, start) in enumerate(BLASTS, 1):
            _blast(conn, number, ids[SLUGS[alert]], channel, state, start)
            rows = [_delivery(rng, number, ids[SLUGS[alert]], channel, state, start, p) for p in people]
            conn.execute(insert(deliveries), [r for r in rows if r])
    return engine


def _blast(conn, number: int, alert_id: int, channel: str, state: str, start: datetime) -> None:  # type: ignore[no-untyped-def]
    conn.execute(insert(blasts).values(
        id=number, alert_id=alert_id, segment={}, channel=channel, encoding="auto", start_at=start, priority=0,
        state=state, preview={}, created_by="liaison", approved_by="chief", created_at=start, started_at=start,
    ))  # fmt: skip


def _delivery(rng, blast, alert_id, channel, state, start, person):  # type: ignore[no-untyped-def]
    """One person's message, its outcome drawn at random among what the blast's kind allows."""
    if rng.random() < 0.15:
        return None  # not in this blast's segment
    pid, msisdn, carrier, province, commune = person
    sent = start + timedelta(minutes=rng.randrange(0, 120))
    outcomes = ["delivered"] * 6 + ["failed", "undeliverable", "expired"]
    if state == "cancelled":
        outcomes += ["cancelled"] * 4
    if state == "running":
        outcomes += ["sent"] * 3 + ["unknown", "queued"]
    status = rng.choice(outcomes)
    went = status not in ("expired", "cancelled", "queued")
    via = "sms" if channel == "zalo_then_sms" and rng.random() < 0.4 else None
    return {"blast_id": blast, "subscriber_id": pid, "alert_id": alert_id, "msisdn": msisdn, "carrier": carrier,
            "province_code": province, "commune_code": commune, "priority": 0, "status": status, "channel": via,
            "attempts": rng.choice((1, 1, 2, 3)), "next_attempt_at": start, "gateway": "fake" if went else None,
            "provider_id": f"p{blast}-{pid}" if went else None, "parts": rng.choice((1, 2)) if went else None,
            "sent_at": sent if went else None,
            "finished_at": sent + timedelta(minutes=1) if status in FINAL and went else (
                start + timedelta(hours=3) if status in FINAL else None)}  # fmt: skip


# -- direct counts, straight from the deliveries ---------------------------------------------


def _direct(engine: Engine, period: reports.Period, communes: set[int] | None = None) -> dict:
    """The figures a report must show, counted from every delivery row with no rollup."""
    d, b, a, s = deliveries.c, blasts.c, alerts.c, subscribers.c
    with engine.connect() as conn:
        rows = conn.execute(select(d.subscriber_id, d.status, d.carrier, d.channel, d.sent_at, d.finished_at,
                                   d.parts, d.commune_code, b.channel, b.started_at, a.method, a.id, s.audience_mask)
                            .join(blasts, b.id == d.blast_id).join(alerts, a.id == d.alert_id)
                            .join(subscribers, s.id == d.subscriber_id)).all()  # fmt: skip
    local = ZoneInfo(ZONE)
    found = {"status": Counter(), "carrier": Counter(), "channel": Counter(), "people": set(), "method": {},
             "alert": {}, "audience": {}, "sent": 0, "parts": 0, "commune": Counter(), "weeks": {},
             "cost": 0.0}  # fmt: skip
    for pid, status, carrier, via, sent, finished, parts, commune, policy, started, method, alert, mask in rows:
        moment = sent or finished or started
        if not period.first <= moment.replace(tzinfo=UTC).astimezone(local).date() <= period.last:
            continue
        if communes is not None and commune not in communes:
            continue
        found["status"][status] += 1
        found["carrier"][carrier] += 1
        found["channel"]["sms" if policy == "sms" else ("zalo_sms" if via == "sms" else "zalo")] += 1
        found["sent"] += 1 if sent else 0
        found["parts"] += parts if sent else 0
        found["commune"][commune] += 1
        kind = "sms" if policy == "sms" or via == "sms" else "zalo"
        found["cost"] += (300 if kind == "zalo" else parts * PRICES.get(carrier, 650)) if sent else 0
        if status == "delivered":
            found["people"].add(pid)
            day = moment.replace(tzinfo=UTC).astimezone(local).date()
            week = max(day - timedelta(days=day.weekday()), period.first)
            found["weeks"].setdefault(f"{week:%d/%m/%Y}", set()).add(pid)
            found["method"].setdefault(method, set()).add(pid)
            found["alert"].setdefault(alert, set()).add(pid)
            for audience in Audience:
                if mask & audience.mask:
                    found["audience"].setdefault(audience.slug, set()).add(pid)
    return found


def _report(engine: Engine, regions: RegionIndex, period: str, province: str | None = None) -> reports.Report:
    with engine.connect() as conn:
        return reports.build(conn, Settings(), regions, reports.parse_period(period),
                             reports.scope(regions, province), datetime(2026, 12, 1, tzinfo=UTC))  # fmt: skip


def _roll(engine: Engine) -> rollups.RollupRun:
    return rollups.run(engine, ZONE, datetime(2026, 11, 23, tzinfo=UTC))


def _assert_matches(report: reports.Report, direct: dict) -> None:
    by_status = dict(report.totals.by_status)
    assert {k: v for k, v in by_status.items() if v} == {k: v for k, v in direct["status"].items() if k in FINAL}
    assert report.totals.pending == sum(v for k, v in direct["status"].items() if k not in FINAL)
    assert report.totals.messages == sum(direct["status"].values())
    assert (report.totals.sent, report.totals.parts) == (direct["sent"], direct["parts"])
    assert {k: c.messages for k, c in report.by_carrier.items()} == {
        reports.labels.carrier(k): v for k, v in direct["carrier"].items()}  # fmt: skip
    assert {k: c.messages for k, c in report.by_channel.items()} == {
        reports.CHANNEL_LABELS[k]: v for k, v in direct["channel"].items()}  # fmt: skip
    assert report.people == len(direct["people"])
    assert report.people_by_method == {reports.METHODS[m]: len(p) for m, p in direct["method"].items()}
    assert sorted(a["people"] for a in report.top_alerts) == sorted(len(p) for p in direct["alert"].values())
    reached = {c.audience: c.reached for c in report.coverage if c.reached}
    assert reached == {k: len(v) for k, v in direct["audience"].items()}


@pytest.mark.parametrize("period", ["2026-H2", "2026-07", "2026-Q3", "2026", "2026-07-01..2026-07-10", "2026-H1"])
def test_every_figure_matches_direct_counts(dataset: Engine, regions: RegionIndex, period: str) -> None:
    """Messages by state, carrier and channel, people reached overall, by method, alert and audience: as counted."""
    _roll(dataset)
    _assert_matches(_report(dataset, regions, period), _direct(dataset, reports.parse_period(period)))


def test_rerunning_the_rollup_changes_nothing(dataset: Engine) -> None:
    """A second run over the same deliveries adds nothing: every rollup table is as the first run left it."""
    _roll(dataset)
    first = _tables(dataset)
    again = _roll(dataset)
    assert again.deliveries == 0
    assert _tables(dataset) == first


def _tables(engine: Engine) -> dict[str, list]:
    with engine.connect() as conn:
        return {t: sorted(tuple(r) for r in conn.execute(text(f"SELECT * FROM {t}")))
                for t in ("delivery_facts", "rollup_pending", "reach_rows", "reach_counts")}  # fmt: skip


def test_late_reports_arriving_after_a_rollup_are_counted_once(dataset: Engine, regions: RegionIndex) -> None:
    """Reports for messages of 3 July arrive after 10 July's reach was rolled up: the people are re-linked, exactly."""
    _roll(dataset)
    with dataset.begin() as conn:
        waiting = conn.execute(select(deliveries.c.id, deliveries.c.provider_id)
                               .where(deliveries.c.status == "sent")).all()  # fmt: skip
        refs = [{"gateway": "fake", "provider_id": p, "delivery_id": i} for i, p in waiting]
        conn.execute(insert(provider_refs), refs)
        at = datetime(2026, 11, 22, tzinfo=UTC)
        queue.apply_reports(conn, [DeliveryReport(p, ReportStatus.DELIVERED, at, None, "fake") for _, p in waiting])
    _roll(dataset)
    _roll(dataset)
    for period in ("2026-07", "2026-07-04..2026-07-31", "2026"):
        _assert_matches(_report(dataset, regions, period), _direct(dataset, reports.parse_period(period)))


def test_a_message_after_local_midnight_belongs_to_the_next_day(dataset: Engine, regions: RegionIndex) -> None:
    """17:30 UTC on 30 June is 00:30 on 1 July in Việt Nam: H1 and July split the first blast there."""
    _roll(dataset)
    h1, july = _report(dataset, regions, "2026-H1"), _report(dataset, regions, "2026-07")
    direct = _direct(dataset, reports.parse_period("2026-H1"))
    assert 0 < h1.totals.messages == sum(direct["status"].values())
    assert july.totals.messages > 0
    assert (
        h1.totals.messages + july.totals.messages + _report(dataset, regions, "2026-08").totals.messages
        == sum(_report(dataset, regions, "2026").totals.by_status.values())
        + _report(dataset, regions, "2026").totals.pending
    )


def test_an_empty_period_reports_zeros(dataset: Engine, regions: RegionIndex) -> None:
    """A period with nothing sent still has its totals, coverage rows at 0 and no blasts."""
    _roll(dataset)
    report = _report(dataset, regions, "2025-Q1")
    assert (report.totals.messages, report.people, report.blasts, report.uncounted) == (0, 0, [], {})
    assert all(c.reached == 0 for c in report.coverage)
    assert report.tables()[0][0] == "Tổng hợp"


def test_a_former_province_selects_the_communes_it_became(dataset: Engine, regions: RegionIndex) -> None:
    """'Quảng Nam' (merged into Đà Nẵng) reports only its own former communes, with a note."""
    _roll(dataset)
    where = reports.scope(regions, "Quảng Nam")
    assert where.commune_codes and where.notes
    with dataset.connect() as conn:
        report = reports.build(conn, Settings(), regions, reports.parse_period("2026"), where, datetime.now(UTC))
    direct = _direct(dataset, reports.parse_period("2026"), set(where.commune_codes))
    assert 0 < report.totals.messages < _report(dataset, regions, "2026").totals.messages
    _assert_matches(report, direct)


def test_a_report_over_purged_deliveries_comes_out_the_same(dataset: Engine, regions: RegionIndex) -> None:
    """Purging every delivery of a closed blast leaves the report unchanged, and the purge is audited."""
    _roll(dataset)
    before = _report(dataset, regions, "2026")
    dry = retention.purge(dataset, datetime(2029, 1, 1, tzinfo=UTC), 24, "admin", dry_run=True)
    done = retention.purge(dataset, datetime(2029, 1, 1, tzinfo=UTC), 24, "admin")
    with dataset.connect() as conn:
        left = conn.execute(select(deliveries.c.blast_id).distinct()).scalars().all()
        audited = conn.execute(select(audit_log.c.detail).where(audit_log.c.action == "deliveries.purge")).scalars()
        audited = list(audited)
    assert dry.deliveries == done.deliveries > 0 and left == [4]  # the running blast stays
    assert audited == [{"cutoff": done.cutoff.isoformat(), "deliveries": done.deliveries, "blasts": 4, "inbox": 0}]
    assert _report(dataset, regions, "2026") == before


def _with_children(engine: Engine) -> None:
    """Every message that went gets its ref, an earlier attempt (with an id of its own, also a ref) and a part."""
    with engine.begin() as conn:
        went = conn.execute(select(deliveries.c.id, deliveries.c.provider_id)
                            .where(deliveries.c.provider_id.is_not(None))).all()  # fmt: skip
        at = datetime(2026, 7, 1, tzinfo=UTC)
        conn.execute(insert(provider_refs), [{"gateway": "fake", "provider_id": p, "delivery_id": i} for i, p in went]
                     + [{"gateway": "old", "provider_id": f"o{i}", "delivery_id": i} for i, _ in went])  # fmt: skip
        conn.execute(
            insert(delivery_attempts),
            [
                {
                    "delivery_id": i,
                    "attempt": 1,
                    "gateway": "old",
                    "at": at,
                    "outcome": "fallback",
                    "provider_id": f"o{i}",
                }
                for i, _ in went
            ],
        )
        conn.execute(insert(message_parts), [{"gateway": "fake", "provider_id": f"{p}-1", "delivery_id": i}
                                             for i, p in went])  # fmt: skip


def _orphans(engine: Engine) -> dict[str, int]:
    """Rows about a delivery that is gone, per table (a half-deleted message)."""
    with engine.connect() as conn:
        return {t: conn.execute(text(f"SELECT count(*) FROM {t} WHERE delivery_id NOT IN (SELECT id FROM deliveries)"))
                .scalar_one() for t in ("provider_refs", "delivery_attempts", "message_parts")}  # fmt: skip


def test_purge_deletes_a_slice_a_transaction(dataset: Engine) -> None:
    """With 100 rows a slice, each committed slice deletes at most 100 deliveries with everything about them."""
    _roll(dataset)
    _with_children(dataset)
    at = datetime(2029, 1, 1, tzinfo=UTC)
    dry = retention.purge(dataset, at, 24, "admin", dry_run=True)
    totals = list(retention.slices(dataset, at, 24, "admin", slice_rows=100))
    assert len(totals) == -(-dry.deliveries // 100) and totals[-1] == dry.deliveries
    assert all(0 < b - a <= 100 for a, b in zip([0, *totals], totals, strict=False))
    done = retention.finish(dataset, at, "admin")
    assert (done.deliveries, done.blasts, done.slices) == (dry.deliveries, dry.blasts, len(totals))
    assert _orphans(dataset) == {"provider_refs": 0, "delivery_attempts": 0, "message_parts": 0}


def test_a_purge_killed_between_slices_is_finished_by_the_next_and_audited_once(
    dataset: Engine, regions: RegionIndex
) -> None:
    """Killed after two slices: whole messages went, nothing is audited yet; the next purge finishes with the totals."""
    _roll(dataset)
    _with_children(dataset)
    before = _report(dataset, regions, "2026")
    at = datetime(2029, 1, 1, tzinfo=UTC)
    dry = retention.purge(dataset, at, 24, "admin", dry_run=True)
    killed = retention.slices(dataset, at, 24, "admin", slice_rows=100)
    assert [next(killed), next(killed)] == [100, 200]
    killed.close()
    assert _orphans(dataset) == {"provider_refs": 0, "delivery_attempts": 0, "message_parts": 0}
    assert retention.purge(dataset, at, 24, "admin", dry_run=True).deliveries == dry.deliveries - 200
    done = retention.purge(dataset, at + timedelta(hours=1), 24, "scheduler", slice_rows=100)
    with dataset.connect() as conn:
        audited = conn.execute(select(audit_log.c.actor, audit_log.c.detail)
                               .where(audit_log.c.action == "deliveries.purge")).all()  # fmt: skip
    detail = {"cutoff": done.cutoff.isoformat(), "deliveries": dry.deliveries, "blasts": dry.blasts, "inbox": 0}
    assert (done.deliveries, done.blasts) == (dry.deliveries, dry.blasts) and audited == [("scheduler", detail)]
    assert retention.purge(dataset, at, 24, "admin", dry_run=True).deliveries == 0
    assert _report(dataset, regions, "2026") == before


def test_purge_keeps_what_is_younger_than_the_retention(dataset: Engine) -> None:
    """24 months after November 2026 nothing of July 2026 is old enough to go."""
    _roll(dataset)
    assert retention.purge(dataset, datetime(2028, 6, 1, tzinfo=UTC), 24, "admin").deliveries == 0


def test_purge_takes_the_texts_received_before_the_cutoff(engine: Engine) -> None:
    """Texts received (with the sender's number) and their once-only ids go after the retention, younger ones stay."""
    old, young = datetime(2026, 1, 5, tzinfo=UTC), datetime(2028, 3, 1, tzinfo=UTC)
    with engine.begin() as conn:
        for n, at in enumerate((old, young)):
            conn.execute(insert(inbox).values(msisdn=f"+8490512345{n}", text="HOI", gateway="viettel", received_at=at))
            conn.execute(insert(inbound_ids).values(gateway="viettel", provider_id=f"id-{n}", received_at=at))
    dry = retention.purge(engine, datetime(2028, 6, 1, tzinfo=UTC), 24, "admin", dry_run=True)
    with engine.connect() as conn:
        assert dry.inbox == 1 and len(conn.execute(select(inbox)).all()) == 2
    done = retention.purge(engine, datetime(2028, 6, 1, tzinfo=UTC), 24, "admin")
    with engine.connect() as conn:
        kept = conn.execute(select(inbox.c.received_at)).scalars().all()
        ids = conn.execute(select(inbound_ids.c.provider_id)).scalars().all()
        audited = conn.execute(select(audit_log.c.detail).where(audit_log.c.action == "deliveries.purge")).scalar_one()
    assert done.inbox == 1 and kept == [young] and ids == ["id-1"]
    assert audited["inbox"] == 1 and audited["deliveries"] == 0


def test_periods_are_local_calendar_spans() -> None:
    """H1 ends 30 June, Q3 spans July to September, a month its own days, a range both its ends."""
    assert reports.parse_period("2026-H1").days == (20260101, 20260630)
    assert reports.parse_period("2026-Q3").days == (20260701, 20260930)
    assert reports.parse_period("2026-02").days == (20260201, 20260228)
    assert reports.parse_period("2026").days == (20260101, 20261231)
    assert reports.parse_period("2026-01-15..2026-02-14").first == date(2026, 1, 15)
    assert reports.parse_period("2026-H1").title == "6 tháng đầu năm 2026"


@pytest.mark.parametrize("bad", ["2026-H3", "2026-13", "26", "2026-02-01..2026-01-01", "hôm qua"])
def test_a_period_not_understood_is_refused_in_vietnamese(bad: str) -> None:
    """A period that is not one of the forms says which forms there are."""
    with pytest.raises(UsageError, match="Kỳ báo cáo"):
        reports.parse_period(bad)


def test_retention_cutoff_counts_calendar_months() -> None:
    """24 months before 31 March 2028 is 31 March 2026; 1 month before 31 March is the end of February."""
    assert retention.cutoff(datetime(2028, 3, 31, tzinfo=UTC), 24) == datetime(2026, 3, 31, tzinfo=UTC)
    assert retention.cutoff(datetime(2026, 3, 31, tzinfo=UTC), 1) == datetime(2026, 2, 28, tzinfo=UTC)


# -- the command line ---------------------------------------------------------------------------


@pytest.fixture
def cli_data(cli: Cli, regions: RegionIndex, now: datetime, tmp_path: Path) -> Cli:
    """The command line over the generated dataset."""
    engine = db.make_engine(DatabaseSettings(url=f"sqlite:///{tmp_path / 'canhbao.db'}"))
    fill(engine, regions, now, tmp_path)
    engine.dispose()
    return cli


def test_report_json_has_the_figures_of_the_domain(cli_data: Cli, regions: RegionIndex, tmp_path: Path) -> None:
    """`canhbao report --period 2026 --json` prints the report the domain builds, rollups run first."""
    code, document = cli_data.json("report", "--period", "2026")
    assert code == 0
    assert document["period"] == {"name": "2026", "title": "năm 2026", "first": "2026-01-01", "last": "2026-12-31"}
    engine = db.make_engine(DatabaseSettings(url=f"sqlite:///{tmp_path / 'canhbao.db'}"))
    assert document["people"] == len(_direct(engine, reports.parse_period("2026"))["people"]) > 0
    assert {c["audience"]: c["target"] for c in document["coverage"]}["official"] == 85.0


def test_report_csv_carries_every_table_for_excel(cli_data: Cli) -> None:
    """The CSV starts with a BOM and holds each table behind its Vietnamese title."""
    code, out, _ = cli_data("report", "--period", "2026-Q3", "--format", "csv")
    assert code == 0 and out.startswith("\ufeffTổng hợp")
    for title in ("Theo nhà mạng", "Độ bao phủ theo nhóm đối tượng", "Các đợt gửi", "Xu hướng theo tuần"):
        assert f"{title}\r\n" in out


def test_report_xlsx_has_a_sheet_per_table_and_native_charts(cli_data: Cli, tmp_path: Path) -> None:
    """The workbook has one sheet per table and bar charts beside the province and coverage tables."""
    from openpyxl import load_workbook

    path = tmp_path / "r.xlsx"
    assert cli_data("report", "--period", "2026-H2", "--format", "xlsx", "--output", str(path))[0] == 0
    book = load_workbook(path)
    assert "Theo nhà mạng" in book.sheetnames
    assert book["Độ bao phủ theo nhóm đối tượng"]._charts


def test_report_on_screen_and_a_bad_period_or_format(cli_data: Cli) -> None:
    """Without --format the summary is printed; a period or format not understood exits 2 saying so."""
    code, out, _ = cli_data("report", "--period", "2026-07")
    assert code == 0 and "Số người đã nhận" in out
    assert cli_data("report", "--period", "2026-H3")[0] == 2
    code, _, err = cli_data("report", "--period", "2026", "--format", "docx")
    assert code == 2 and "Định dạng 'docx'" in err


def test_rollup_twice_adds_nothing_the_second_time(cli_data: Cli) -> None:
    """`canhbao rollup` adds the final deliveries once; run again it adds none."""
    assert cli_data.json("rollup")[1]["deliveries"] > 0
    assert cli_data.json("rollup")[1]["deliveries"] == 0


def test_purge_dry_run_says_what_would_go_and_keeps_it(cli_data: Cli) -> None:
    """`purge --dry-run --months 1` counts the old deliveries of closed blasts and deletes nothing."""
    code, found = cli_data.json("purge", "--dry-run", "--months", "1")
    assert code == 0 and found["dry_run"] and found["deliveries"] > 0
    assert cli_data.json("purge", "--dry-run", "--months", "1")[1]["deliveries"] == found["deliveries"]


def test_communes_weeks_cost_and_blasts_match_direct_counts(dataset: Engine, regions: RegionIndex) -> None:
    """Messages per commune, people per week, the cost at the carriers' prices, and every blast with its people."""
    _roll(dataset)
    period = reports.parse_period("2026-Q3")
    settings = Settings(sms={"price_per_part": {"default": 650, **PRICES}})
    with dataset.connect() as conn:
        report = reports.build(conn, settings, regions, period, reports.scope(regions, None), datetime.now(UTC))
    direct = _direct(dataset, period)
    assert sorted(c.messages for c in report.by_commune.values()) == sorted(direct["commune"].values())
    assert {w["week"]: w["people"] for w in report.weekly if w["people"]} == {
        k: len(v) for k, v in direct["weeks"].items()}  # fmt: skip
    assert report.cost["tổng"] == pytest.approx(direct["cost"])
    assert [(b["id"], b["created_by"], b["approved_by"]) for b in report.blasts] == [
        (i, "liaison", "chief") for i in (1, 2, 3, 4, 5)]  # fmt: skip


def test_the_statutory_html_has_the_decree_30_layout_and_no_script(cli_data: Cli, tmp_path: Path) -> None:
    """Issuer, national motto, number and date lines, the title, charts as inline SVG, recipients and signature."""
    path = tmp_path / "r.html"
    assert cli_data("report", "--period", "2026-H1", "--format", "html", "--output", str(path))[0] == 0
    page = path.read_text(encoding="utf-8")
    for part in ("CÔNG AN TỈNH", "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM", "Độc lập - Tự do - Hạnh phúc", "Số: ……/BC-……",
                 "ngày …… tháng …… năm ……", "gửi trước ngày 10/6/2026", "Nơi nhận:", "THỦ TRƯỞNG ĐƠN VỊ", "size:A4",
                 "Kết quả tuyên truyền phòng, chống lừa đảo qua tin nhắn — 6 tháng đầu năm 2026"):  # fmt: skip
        assert part in page
    assert page.count("<svg") == 3 and "<script" not in page


def test_the_pdf_is_a4_with_the_form(cli_data: Cli, tmp_path: Path) -> None:
    """`--format pdf` writes an A4 PDF of the statutory form (WeasyPrint), text searchable in Vietnamese."""
    import subprocess

    path = tmp_path / "r.pdf"
    assert cli_data("report", "--period", "2025-Q1", "--format", "pdf", "--output", str(path))[0] == 0
    assert path.read_bytes().startswith(b"%PDF")
    info = subprocess.run(["pdfinfo", str(path)], capture_output=True, text=True, check=True).stdout
    assert "595.276 x 841.89 pts (A4)" in info
    words = subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True, check=True).stdout
    assert "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM" in words and "Nơi nhận:" in words


@pytest.mark.parametrize(("targets", "problem"), [({"farmer": 50}, "farmer"), ({"public": 150}, "từ 0 đến 100")])
def test_coverage_targets_name_audiences_and_percents(targets: dict, problem: str) -> None:
    """A target for an audience that does not exist, or over 100 %, is refused naming it."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=problem):
        Settings(reports={"targets": targets})


def test_a_blast_another_run_closed_is_not_added_again(dataset: Engine) -> None:
    """A run that reaches a blast a concurrent run has just closed stops there, adding nothing."""
    _roll(dataset)
    before = _tables(dataset)
    with pytest.raises(rollups.Raced), dataset.begin() as conn:
        rollups.roll_blast(conn, 1, ZONE, datetime(2026, 11, 24, tzinfo=UTC))
    assert _tables(dataset) == before
