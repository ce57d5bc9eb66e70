"""Blasts: preview, segments, four-eyes approval, materialised recipients and state changes."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, event, func, select, update

from dispatcher import alerts, blasts, population, smstext
from dispatcher.config import Settings, load_settings
from dispatcher.domain import METHODS, BlastState, DeliveryStatus
from dispatcher.errors import ConfigError, InputRejected, NotFound, UsageError
from dispatcher.models import blasts as blasts_table
from dispatcher.models import deliveries, delivery_queue, subscribers
from dispatcher.policy import QuietHours
from dispatcher.regions import AmbiguousRegion, RegionIndex
from dispatcher.segments import Segment, SegmentSpec, matches, resolve
from dispatcher.subscribers import RejectsFile, RowParser, SubscriberImporter, set_opt_out

MESSAGES = Path(__file__).parent.parent / "messages"
LOCAL = ZoneInfo("Asia/Ho_Chi_Minh")
ALERT = "lenh-bat-gia-gui-qua-zalo"
OTHER_ALERTS = ("khong-cung-cap-ma-otp", "phat-nguoi-gia-mao", "viec-nhe-luong-cao")
PRICES = {"default": 650, "viettel": 700, "vinaphone": 680}

# Exact people: the four communes of the former Huyện Duy Xuyên, two people listed only by that
# district, and people elsewhere. Columns: msisdn, province, commune, legacy district, audiences, channels.
PEOPLE = [
    ["0985000001", "48", "Xã Nam Phước", "", "public", "sms"],
    ["0912000002", "48", "Xã Thu Bồn", "", "student", "sms"],
    ["0905000003", "48", "Xã Duy Xuyên", "", "public, student", "sms, zalo"],
    ["0986000004", "48", "Xã Duy Nghĩa", "", "student", "sms"],
    ["0987000005", "Đà Nẵng", "", "Huyện Duy Xuyên", "elderly", "sms"],
    ["0913000006", "Đà Nẵng", "", "Huyện Duy Xuyên", "student", "sms"],
    ["0988000007", "48", "Phường Hải Châu", "", "student", "sms"],
    ["0906000008", "48", "Phường Hải Châu", "", "public", "sms, zalo"],
    ["0989000009", "48", "Phường Hải Châu", "Huyện Duy Xuyên", "student", "sms"],  # lives in Hải Châu now
    ["0984000010", "Hà Nội", "", "", "public", "sms"],
]
DUY_XUYEN = {"+84985000001", "+84912000002", "+84905000003", "+84986000004", "+84987000005", "+84913000006"}
DA_NANG = DUY_XUYEN | {"+84988000007", "+84906000008", "+84989000009"}
DUY_XUYEN_STUDENTS = {"+84912000002", "+84905000003", "+84986000004", "+84913000006"}
NAM_PHUOC = "+84985000001"  # viettel, sms only


# -- fixtures and helpers -----------------------------------------------------------------


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Defaults with per-carrier prices, whatever the developer's environment or ./config.toml say."""
    path = tmp_path / "settings.toml"
    prices = "\n".join(f"{carrier} = {price}" for carrier, price in PRICES.items())
    path.write_text(
        f"[sms.price_per_part]\n{prices}\n"
        "[dispatch]\nalready_received_days = 30\ncap_per_day = 3\nlease_seconds = 3600\n"
        '[policy]\ncapped = "skip"\nassumed_rate = 100\n[policy.quiet_hours]\nsms = "22:00-07:00"\n',
        encoding="utf-8",
    )
    return load_settings(path, {})


def _approve_alert(engine: Engine, slug: str, now: datetime) -> None:
    with engine.begin() as conn:
        alerts.submit(conn, slug, "police", now)
        alerts.approve(conn, slug, "chief", now)


@pytest.fixture
def catalogue(engine: Engine, now: datetime) -> Engine:
    """The shipped catalogue synced as drafts, with ALERT and OTHER_ALERTS approved."""
    loaded = alerts.load_catalogue_dir(MESSAGES, alerts.Catalogue(METHODS, 4))
    with engine.begin() as conn:
        alerts.sync(conn, loaded, "police", now - timedelta(days=2))
    for slug in (ALERT, *OTHER_ALERTS):
        _approve_alert(engine, slug, now - timedelta(days=1))
    return engine


@pytest.fixture
def people(catalogue: Engine, regions: RegionIndex, tmp_path: Path, now: datetime) -> Engine:
    """PEOPLE imported on each kind of database, next to the approved alerts."""
    path = tmp_path / "people.csv"
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["msisdn", "province", "commune", "legacy_district", "audiences", "channels"])
        writer.writerows(PEOPLE)
    summary = SubscriberImporter(catalogue, regions, tmp_path / "rejects").import_file(path, now - timedelta(days=30))
    assert (summary.added, summary.rejected) == (len(PEOPLE), 0)
    return catalogue


def _segment(regions: RegionIndex, **spec: tuple[str, ...]) -> Segment:
    return resolve(SegmentSpec(**spec), regions)


def _duy_xuyen(regions: RegionIndex) -> Segment:
    return _segment(regions, legacy_districts=("Huyện Duy Xuyên",))


def _request(segment: Segment, alert: str = ALERT, **options: Any) -> blasts.BlastRequest:
    return blasts.BlastRequest(alert, segment, **options)


def _preview(engine: Engine, request: blasts.BlastRequest, settings: Settings, regions, now: datetime) -> dict:
    with engine.connect() as conn:
        return blasts.preview(conn, request, settings, regions, now)


def _create(engine: Engine, request: blasts.BlastRequest, settings: Settings, regions, now: datetime) -> int:
    with engine.begin() as conn:
        blast_id, _ = blasts.create(conn, request, "liaison", settings, regions, now)
    return blast_id


def _scheduled(engine: Engine, request: blasts.BlastRequest, settings: Settings, regions, now: datetime) -> int:
    """A blast created by the liaison and approved by the chief."""
    blast_id = _create(engine, request, settings, regions, now)
    with engine.begin() as conn:
        blasts.approve(conn, blast_id, "chief", now)
    return blast_id


def _running(engine: Engine, request: blasts.BlastRequest, settings: Settings, regions, now: datetime) -> int:
    """A blast approved and started at `now`, its deliveries queued."""
    blast_id = _scheduled(engine, request, settings, regions, now)
    with engine.begin() as conn:
        assert blasts.start_due(conn, settings, now) == [blast_id]
    return blast_id


def _blast(engine: Engine, blast_id: int) -> dict[str, Any]:
    with engine.connect() as conn:
        return blasts.get(conn, blast_id)


def _deliveries(engine: Engine, blast_id: int) -> dict[str, str]:
    """msisdn → status of a blast's deliveries."""
    with engine.connect() as conn:
        query = select(deliveries.c.msisdn, deliveries.c.status).where(deliveries.c.blast_id == blast_id)
        return dict(conn.execute(query).all())


def _set_status(engine: Engine, blast_id: int, status: str, at: datetime, msisdns: set[str] | None = None) -> None:
    """Move a blast's deliveries (or those of `msisdns`) to `status`, as the worker would have."""
    statement = update(deliveries).where(deliveries.c.blast_id == blast_id)
    if msisdns is not None:
        statement = statement.where(deliveries.c.msisdn.in_(msisdns))
    with engine.begin() as conn:
        conn.execute(statement.values(status=status, sent_at=at))


def _blast_rows(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(blasts_table)).scalar_one()


def _at(local: str) -> datetime:
    """A Hà Nội wall-clock time as an aware UTC instant."""
    return datetime.fromisoformat(local).replace(tzinfo=LOCAL).astimezone(UTC)


# -- preview ------------------------------------------------------------------------------


def test_preview_of_a_generated_population_adds_up(engine, catalogue, regions, settings, now, tmp_path) -> None:
    """Recipients are the province's subscribers minus opt-outs, and carriers and communes sum to them."""
    rows = population.generate(regions, 48, 1_200, seed=7)
    positions = {name: i for i, name in enumerate(population.HEADER)}
    importer = SubscriberImporter(engine, regions, tmp_path / "rejects")
    importer.load(rows, RowParser(regions, positions), now, "test", RejectsFile(tmp_path / "r.csv"))
    with engine.begin() as conn:
        chosen = conn.execute(select(subscribers.c.msisdn).where(subscribers.c.opted_out_at.is_(None)).limit(3))
        for msisdn in chosen.scalars().all():
            assert set_opt_out(conn, msisdn, True, now)
        total = conn.execute(select(func.count()).select_from(subscribers)).scalar_one()
        opted_out = conn.execute(select(func.count()).where(subscribers.c.opted_out_at.is_not(None))).scalar_one()

    shown = _preview(engine, _request(_segment(regions, provinces=("Đà Nẵng",))), settings, regions, now)

    assert opted_out >= 3
    assert (shown["matched"], shown["recipients"]) == (total, total - opted_out)
    assert shown["excluded"] == {"opted_out": opted_out, "no_channel": 0, "already_received": 0, "capped": 0}
    assert sum(shown["by_carrier"].values()) == shown["recipients"]
    province = shown["by_province"]["48"]
    assert (province["name"], province["recipients"]) == ("Thành phố Đà Nẵng", shown["recipients"])
    assert sum(c["recipients"] for c in province["communes"].values()) == shown["recipients"]
    assert {c["name"] for c in province["communes"].values()} == {
        regions.commune(int(code)).name for code in province["communes"]
    }


def test_preview_counts_opted_out_people_as_excluded(people, regions, settings, now) -> None:
    """An opted-out subscriber inside the segment is excluded as opted_out, not counted as a recipient."""
    with people.begin() as conn:
        assert set_opt_out(conn, NAM_PHUOC, True, now)
    shown = _preview(people, _request(_duy_xuyen(regions)), settings, regions, now)
    assert (shown["matched"], shown["recipients"]) == (6, 5)
    assert shown["excluded"] == {"opted_out": 1, "no_channel": 0, "already_received": 0, "capped": 0}


def test_a_zalo_blast_excludes_people_without_zalo(people, regions, settings, now) -> None:
    """Only the subscriber with Zalo is a recipient; SMS-only people are no_channel, opt-outs stay opted_out."""
    with people.begin() as conn:
        set_opt_out(conn, NAM_PHUOC, True, now)
    shown = _preview(people, _request(_duy_xuyen(regions), channel="zalo"), settings, regions, now)
    assert shown["recipients"] == 1
    assert shown["excluded"] == {"opted_out": 1, "no_channel": 4, "already_received": 0, "capped": 0}
    assert shown["by_carrier"] == {"mobifone": 1}


def test_preview_breaks_recipients_down_by_carrier_and_commune(people, regions, settings, now) -> None:
    """by_carrier and by_province name every group, legacy-district-only people under '(chưa rõ xã)'."""
    shown = _preview(people, _request(_duy_xuyen(regions)), settings, regions, now)
    assert shown["by_carrier"] == {"viettel": 3, "vinaphone": 2, "mobifone": 1}
    assert shown["by_province"] == {
        "48": {
            "name": "Thành phố Đà Nẵng",
            "recipients": 6,
            "communes": {
                "0": {"name": "(chưa rõ xã)", "recipients": 2},
                "20599": {"name": "Xã Nam Phước", "recipients": 1},
                "20611": {"name": "Xã Thu Bồn", "recipients": 1},
                "20623": {"name": "Xã Duy Xuyên", "recipients": 1},
                "20635": {"name": "Xã Duy Nghĩa", "recipients": 1},
            },
        }
    }


def test_preview_cost_uses_each_carriers_price(people, regions, settings, now) -> None:
    """Cost is recipients × parts × the carrier's price per part, the default price for unlisted carriers."""
    shown = _preview(people, _request(_duy_xuyen(regions)), settings, regions, now)
    parts = shown["parts_per_message"]
    assert shown["cost"] == round(parts * (3 * PRICES["viettel"] + 2 * PRICES["vinaphone"] + 1 * PRICES["default"]))
    assert shown["currency"] == "VND"


@pytest.mark.parametrize(
    ("encoding", "expected_encoding", "expected_parts"),
    [("unicode", "UCS-2", 3), ("auto", "UCS-2", 3), ("ascii", "GSM-7", 1)],
)
def test_parts_per_message_follow_the_encoding(
    people, regions, settings, now, encoding, expected_encoding, expected_parts
) -> None:
    """Diacritics cost UCS-2 parts, không dấu one GSM-7 part, as the alert's own rendering says."""
    shown = _preview(people, _request(_duy_xuyen(regions), encoding=encoding), settings, regions, now)
    with people.connect() as conn:
        rendered = alerts.render(alerts.spec_of(alerts.latest(conn, ALERT)))
    rendering = rendered.ascii if encoding == "ascii" else rendered.unicode
    assert (shown["encoding"], shown["parts_per_message"]) == (expected_encoding, expected_parts)
    assert shown["parts_per_message"] == rendering.info.parts
    assert shown["total_parts"] == shown["recipients"] * expected_parts
    assert smstext.is_gsm7(shown["text"]) == (encoding == "ascii")


def test_preview_eta_follows_the_requested_rate(people, regions, settings, now) -> None:
    """Six messages at one every 100 s take 600 s from the start."""
    shown = _preview(people, _request(_duy_xuyen(regions), rate=0.01), settings, regions, now)
    assert shown["eta_seconds"] == 600
    assert datetime.fromisoformat(shown["finish_at"]) == now + timedelta(seconds=600)


def test_a_start_inside_quiet_hours_waits_for_the_morning(people, regions, settings, now) -> None:
    """A blast asked to start at 23:00 sends nothing before 07:00 the next day."""
    start = _at("2026-11-23 23:00")
    shown = _preview(people, _request(_duy_xuyen(regions), start_at=start, rate=0.01), settings, regions, now)
    finish = datetime.fromisoformat(shown["finish_at"])
    assert finish >= _at("2026-11-24 07:00")
    assert finish == _at("2026-11-24 07:10")
    assert shown["eta_seconds"] == 8 * 3600 + 600


def test_preview_stores_nothing(people, regions, settings, now) -> None:
    """A preview (the CLI's --dry-run) creates no blast and no delivery."""
    _preview(people, _request(_duy_xuyen(regions)), settings, regions, now)
    with people.connect() as conn:
        assert conn.execute(select(func.count()).select_from(deliveries)).scalar_one() == 0
    assert _blast_rows(people) == 0


def test_without_a_start_the_preview_says_it_starts_on_approval(people, regions, settings, now) -> None:
    """No start_at is "when approved", not the moment of the preview: the time to send counts from now."""
    shown = _preview(people, _request(_duy_xuyen(regions), rate=0.01), settings, regions, now)
    assert (shown["start_at"], shown["starts_on_approval"]) == (None, True)
    assert datetime.fromisoformat(shown["finish_at"]) == now + timedelta(seconds=600)


def test_a_not_after_before_the_finish_counts_the_messages_that_would_expire(people, regions, settings, now) -> None:
    """Six messages at one per 100 s with a deadline after 300 s: three go, three would expire, and it says so."""
    request = _request(_duy_xuyen(regions), rate=0.01, not_after=now + timedelta(seconds=300))
    shown = _preview(people, request, settings, regions, now)
    assert (shown["recipients"], shown["expiring"]) == (6, 3)
    (warning,) = shown["warnings"]
    assert warning["code"] == "expiring"
    assert (
        "Chỉ 3 trong 6 tin gửi kịp trước giờ 'không gửi sau' 09:05 23/11/2026: 3 tin sẽ quá hạn" in warning["message"]
    )


def test_a_not_after_after_the_finish_expires_nothing(people, regions, settings, now) -> None:
    """A deadline the blast meets leaves nothing to expire and nothing to warn about."""
    request = _request(_duy_xuyen(regions), rate=0.01, not_after=now + timedelta(seconds=600))
    shown = _preview(people, request, settings, regions, now)
    assert (shown["expiring"], shown["warnings"]) == (0, [])


def test_a_zalo_then_sms_blast_prices_zalo_messages_at_the_zalo_price(people, regions, settings, now) -> None:
    """The one person on Zalo costs [zalo] price a message; the five without Zalo cost SMS parts at their carrier's."""
    shown = _preview(people, _request(_duy_xuyen(regions), channel="zalo_then_sms"), settings, regions, now)
    parts = shown["parts_per_message"]
    assert shown["recipients_by_channel"] == {"zalo": 1, "sms": 5}
    sms = round(parts * (3 * PRICES["viettel"] + 2 * PRICES["vinaphone"]))
    assert shown["cost_by_channel"] == {"zalo": round(settings.zalo.price), "sms": sms}
    assert shown["cost"] == sms + round(settings.zalo.price)
    assert shown["total_parts"] == 5 * parts


def test_a_zalo_preview_without_a_zalo_route_says_one_is_needed(people, regions, settings, now) -> None:
    """A dry run of a Zalo blast on a config without `[routes] zalo` warns, as the real create refuses."""
    shown = _preview(people, _request(_duy_xuyen(regions), channel="zalo"), settings, regions, now)
    assert [w["code"] for w in shown["warnings"]] == ["zalo_route_missing"]
    assert "cần cổng Zalo trong [routes] zalo" in shown["warnings"][0]["message"]


@pytest.mark.parametrize(
    ("start", "messages", "rate", "finish"),
    [
        pytest.param("2026-11-23 21:00", 720_000, 100, "2026-11-24 08:00", id="1h-before-22h-then-1h-after-7h"),
        pytest.param("2026-11-23 23:30", 360_000, 100, "2026-11-24 08:00", id="starts-inside-the-night"),
        pytest.param("2026-11-24 03:00", 0, 100, "2026-11-24 07:00", id="nothing-to-send-at-night"),
        pytest.param("2026-11-23 09:00", 360_000, 100, "2026-11-23 10:00", id="day-only"),
        pytest.param("2026-11-23 09:00", 1_800_000, 10, "2026-11-26 14:00", id="several-nights"),
    ],
)
def test_finish_time_waits_out_quiet_hours(start, messages, rate, finish) -> None:
    """No message leaves between 22:00 and 07:00 local time: sending resumes at 07:00."""
    quiet = QuietHours.parse("22:00", "07:00", "Asia/Ho_Chi_Minh")
    assert quiet.finish_time(_at(start), messages, rate) == _at(finish)


def test_equal_quiet_start_and_end_mean_no_quiet_hours() -> None:
    """A window from 00:00 to 00:00 is empty: two hours of sending from 23:00 end at 01:00."""
    quiet = QuietHours.parse("00:00", "00:00", "Asia/Ho_Chi_Minh")
    assert quiet.finish_time(_at("2026-11-23 23:00"), 720_000, 100) == _at("2026-11-24 01:00")


# -- segments -----------------------------------------------------------------------------


def _selected(engine: Engine, segment: Segment) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(select(subscribers.c.msisdn).where(matches(segment))).scalars())


def test_a_legacy_district_selects_its_communes_and_people_listed_by_it(people, regions) -> None:
    """'Huyện Duy Xuyên' is its four communes today plus people known only by that old district."""
    segment = _duy_xuyen(regions)
    assert set(segment.commune_codes) == {20599, 20611, 20623, 20635}
    assert _selected(people, segment) == DUY_XUYEN


def test_a_numbered_legacy_district_reaches_its_own_city(regions) -> None:
    """--legacy-district 'Quận 1' is Hồ Chí Minh City's old district 760, never Hà Nội's unit coded 1."""
    segment = _segment(regions, legacy_districts=("Quận 1",))
    assert segment.legacy_district_codes == (760,)
    assert segment.commune_codes
    assert {regions.commune(code).province_code for code in segment.commune_codes} == {79}


def test_a_legacy_label_says_what_the_name_is_today(regions) -> None:
    """The preview's label for an old district names it, its code marker, and the communes of today it became."""
    segment = _segment(regions, legacy_districts=("Huyện Duy Xuyên",), provinces=("Đà Nẵng",))
    assert segment.labels == (
        "Thành phố Đà Nẵng [mã tỉnh 48]",
        "Huyện Duy Xuyên (cũ) (Tỉnh Quảng Nam) [mã huyện cũ 508] → nay 4 xã/phường của Thành phố Đà Nẵng",
    )


def test_a_province_selects_everyone_living_in_it(people, regions) -> None:
    """'Đà Nẵng' selects its subscribers, whatever commune or old district they are listed by."""
    assert _selected(people, _segment(regions, provinces=("Đà Nẵng",))) == DA_NANG


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param({"audiences": ("student",)}, DUY_XUYEN_STUDENTS, id="student"),
        pytest.param({"carriers": ("viettel",)}, {"+84985000001", "+84986000004", "+84987000005"}, id="viettel"),
        pytest.param({"audiences": ("sinh viên",), "carriers": ("Viettel",)}, {"+84986000004"}, id="both"),
    ],
)
def test_audience_and_carrier_filters_narrow_the_segment(people, regions, spec, expected) -> None:
    """An audience or a carrier keeps only the people of the region who have it."""
    segment = _segment(regions, legacy_districts=("Huyện Duy Xuyên",), **spec)
    assert _selected(people, segment) == expected


def test_an_unknown_region_is_rejected(regions) -> None:
    """A province nobody has heard of is refused with a Vietnamese message naming it."""
    with pytest.raises(NotFound, match="Không tìm thấy địa danh 'Tỉnh Atlantis'"):
        _segment(regions, provinces=("Tỉnh Atlantis",))


def test_an_ambiguous_region_lists_its_candidates(regions) -> None:
    """'Xã Tân Phú' exists in several provinces: the refusal lists them so the liaison can choose."""
    with pytest.raises(AmbiguousRegion, match="không rõ ràng") as caught:
        _segment(regions, communes=("Xã Tân Phú",))
    assert len(caught.value.candidates) > 1
    assert "Nghệ An, Xã Tân Phú" in str(caught.value) and "Tây Ninh, Xã Tân Phú" in str(caught.value)


def test_a_segment_needs_a_region(regions) -> None:
    """Audiences or carriers alone are no segment: the command was called wrong."""
    with pytest.raises(UsageError, match="ít nhất một tỉnh"):
        _segment(regions, audiences=("student",))


@pytest.mark.parametrize(
    ("spec", "message"),
    [({"audiences": ("astronaut",)}, "Nhóm đối tượng không rõ"), ({"carriers": ("beeline",)}, "Nhà mạng")],
)
def test_an_unknown_audience_or_carrier_is_rejected(regions, spec, message) -> None:
    """A misspelt audience or carrier is refused rather than silently matching nobody."""
    with pytest.raises(UsageError, match=message):
        _segment(regions, provinces=("Đà Nẵng",), **spec)


def test_without_an_audience_a_blast_reaches_the_alerts_audiences(people, regions, settings, now) -> None:
    """viec-nhe-luong-cao is for students and workers: with no --audience it reaches those, in preview and at start."""
    request = _request(_duy_xuyen(regions), alert="viec-nhe-luong-cao")
    shown = _preview(people, request, settings, regions, now)
    assert shown["audiences"] == {"source": "alert", "groups": ["student", "worker"], "everyone": False}
    assert shown["recipients"] == len(DUY_XUYEN_STUDENTS)
    blast_id = _running(people, request, settings, regions, now)
    assert set(_deliveries(people, blast_id)) == DUY_XUYEN_STUDENTS


def test_an_alert_for_the_public_reaches_everyone(people, regions, settings, now) -> None:
    """An alert whose audiences include 'public' (người dân) goes to every person of the segment."""
    shown = _preview(people, _request(_duy_xuyen(regions)), settings, regions, now)
    assert shown["audiences"] == {"source": "alert", "groups": ["public", "business", "journalist"], "everyone": True}
    assert shown["recipients"] == len(DUY_XUYEN)


@pytest.mark.parametrize("everyone", ["all", "tất cả", "Tat ca"])
def test_audience_all_reaches_everyone_whatever_the_alert_says(people, regions, settings, now, everyone) -> None:
    """--audience all (or 'tất cả') asks for every person, the alert's own audiences notwithstanding."""
    segment = _segment(regions, legacy_districts=("Huyện Duy Xuyên",), audiences=(everyone,))
    shown = _preview(people, _request(segment, alert="viec-nhe-luong-cao"), settings, regions, now)
    assert shown["audiences"] == {"source": "all", "groups": [], "everyone": True}
    assert shown["recipients"] == len(DUY_XUYEN)


def test_audience_all_with_another_audience_is_rejected(regions) -> None:
    """'all' next to a group cannot mean both: refused rather than silently taking one."""
    with pytest.raises(UsageError, match="'tất cả' \\(all\\) không đi cùng nhóm khác"):
        _segment(regions, provinces=("Đà Nẵng",), audiences=("all", "student"))


# -- create -------------------------------------------------------------------------------


def _retire(engine: Engine, slug: str, now: datetime) -> None:
    _approve_alert(engine, slug, now)
    with engine.begin() as conn:
        alerts.retire(conn, slug, "chief", now)


def _submit(engine: Engine, slug: str, now: datetime) -> None:
    with engine.begin() as conn:
        alerts.submit(conn, slug, "police", now)


@pytest.mark.parametrize(
    ("prepare", "slug", "message"),
    [
        pytest.param(None, "gia-danh-cong-an-goi-video", "chưa được duyệt (trạng thái 'nháp')", id="draft"),
        pytest.param(_submit, "gia-danh-cong-an-goi-video", "chưa được duyệt (trạng thái 'chờ duyệt')", id="submitted"),
        pytest.param(_retire, "gia-danh-cong-an-goi-video", "đã ngừng dùng", id="retired"),
        pytest.param(None, "khong-co-mau-nay", "Không có mẫu cảnh báo 'khong-co-mau-nay'", id="unknown"),
    ],
)
def test_create_refuses_an_alert_that_is_not_approved(people, regions, settings, now, prepare, slug, message) -> None:
    """Only an approved alert can be blasted; the refusal says in Vietnamese what state it is in."""
    if prepare is not None:
        prepare(people, slug, now)
    with pytest.raises(UsageError, match=re.escape(message)):
        _create(people, _request(_duy_xuyen(regions), alert=slug), settings, regions, now)
    assert _blast_rows(people) == 0


def test_create_refuses_a_segment_without_recipients(people, regions, settings, now) -> None:
    """A province with no subscribers gives no blast."""
    with pytest.raises(InputRejected, match="không có người nhận nào"):
        _create(people, _request(_segment(regions, provinces=("Cao Bằng",))), settings, regions, now)
    assert _blast_rows(people) == 0


def test_create_refuses_a_segment_whose_people_are_all_excluded(people, regions, settings, now) -> None:
    """People who are all opted out are no recipients either."""
    with people.begin() as conn:
        set_opt_out(conn, "+84984000010", True, now)
    with pytest.raises(InputRejected, match="không có người nhận nào"):
        _create(people, _request(_segment(regions, provinces=("Hà Nội",))), settings, regions, now)


def test_a_start_in_the_past_is_refused_saying_when_and_now(people, regions, settings, now) -> None:
    """A start_at two minutes ago would send at once: preview and create refuse it, naming both times."""
    request = _request(_duy_xuyen(regions), start_at=now - timedelta(minutes=2))
    for attempt in (_preview, _create):
        with pytest.raises(
            UsageError, match=re.escape("Giờ bắt đầu 08:58 23/11/2026 đã qua (bây giờ là 09:00 23/11/2026)")
        ):
            attempt(people, request, settings, regions, now)
    assert _blast_rows(people) == 0


def test_a_start_within_a_minute_of_now_is_clock_skew_not_the_past(people, regions, settings, now) -> None:
    """Half a minute behind is two clocks disagreeing: the blast is created."""
    request = _request(_duy_xuyen(regions), start_at=now - timedelta(seconds=30))
    assert _blast(people, _create(people, request, settings, regions, now))["state"] == "pending_approval"


def test_a_window_inside_quiet_hours_is_refused(people, regions, settings, now) -> None:
    """23:30 to 06:00 is all night: nothing could go, so the preview (a dry run) and create both refuse."""
    request = _request(_duy_xuyen(regions), start_at=_at("2026-11-23 23:30"), not_after=_at("2026-11-24 06:00"))
    for attempt in (_preview, _create):
        with pytest.raises(
            UsageError, match="Không tin nào gửi kịp trước giờ 'không gửi sau' 06:00 24/11/2026"
        ) as caught:
            attempt(people, request, settings, regions, now)
        assert "giờ yên lặng 22:00–07:00, tin đầu tiên sớm nhất đi lúc 07:00 24/11/2026" in str(caught.value)
    assert _blast_rows(people) == 0


def test_an_urgent_blast_allowed_at_night_keeps_no_quiet_hours(people, regions, settings, now) -> None:
    """With urgent_in_quiet_hours an urgent alert's night window is open: nothing expires, the finish is at night."""
    policy = settings.policy.model_copy(update={"urgent_in_quiet_hours": True})
    settings = settings.model_copy(update={"policy": policy})
    start, deadline = _at("2026-11-23 23:30"), _at("2026-11-24 06:00")
    request = _request(_duy_xuyen(regions), alert="phat-nguoi-gia-mao", start_at=start, not_after=deadline)
    shown = _preview(people, request, settings, regions, now)
    assert (shown["expiring"], shown["quiet_hours"]) == (0, None)
    assert datetime.fromisoformat(shown["finish_at"]) < deadline


@pytest.mark.parametrize("offset", [timedelta(0), timedelta(hours=-1)], ids=["at-start", "before-start"])
def test_not_after_must_come_after_the_start(people, regions, settings, now, offset) -> None:
    """A deadline at or before the start could never be met."""
    request = _request(
        _duy_xuyen(regions), start_at=now + timedelta(hours=2), not_after=now + timedelta(hours=2) + offset
    )
    with pytest.raises(UsageError, match="Giờ 'không gửi sau' phải sau"):
        _create(people, request, settings, regions, now)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"channel": "fax"}, "Kênh 'fax'"),
        ({"encoding": "utf8"}, "Bảng mã 'utf8'"),
        ({"rate": 0}, "Tốc độ gửi phải lớn hơn 0"),
        ({"rate": 0.0001}, "Tốc độ gửi tối thiểu"),
        ({"rate": float("nan")}, "Tốc độ gửi phải là một số hữu hạn"),
        ({"rate": float("inf")}, "Tốc độ gửi phải là một số hữu hạn"),
    ],
    ids=["channel", "encoding", "rate", "rate-slower-than-the-lease-allows", "rate-nan", "rate-inf"],
)
def test_an_unknown_channel_encoding_or_rate_is_a_usage_error(people, regions, settings, now, options, message) -> None:
    """Channel and encoding come from fixed lists; the rate must be positive, one message's wait inside a lease."""
    with pytest.raises(UsageError, match=message):
        _create(people, _request(_duy_xuyen(regions), **options), settings, regions, now)


def test_create_stores_the_preview_waiting_for_approval(people, regions, settings, now) -> None:
    """A created blast is pending_approval, and keeps the preview and the segment the liaison saw."""
    request = _request(_duy_xuyen(regions))
    shown = _preview(people, request, settings, regions, now)
    blast = _blast(people, _create(people, request, settings, regions, now))
    assert (blast["state"], blast["created_by"]) == (BlastState.PENDING_APPROVAL.value, "liaison")
    assert blast["preview"]["recipients"] == shown["recipients"] == 6
    assert Segment.from_json(blast["segment"]) == request.segment


def test_an_urgent_alert_gives_a_priority_blast(people, regions, settings, now) -> None:
    """A blast of an urgent alert, and each of its deliveries, carry priority 1 so workers take it first."""
    blast_id = _running(people, _request(_duy_xuyen(regions), alert="phat-nguoi-gia-mao"), settings, regions, now)
    with people.connect() as conn:
        priorities = set(conn.execute(select(deliveries.c.priority).where(deliveries.c.blast_id == blast_id)).scalars())
    assert (_blast(people, blast_id)["priority"], priorities) == (1, {1})


# -- four eyes ----------------------------------------------------------------------------


@pytest.mark.parametrize("actor", ["liaison", "LIAISON"])
def test_the_creator_cannot_approve_their_own_blast(people, regions, settings, now, actor) -> None:
    """Four eyes: the creator's approval is refused (whatever the letter case) and nothing changes."""
    blast_id = _create(people, _request(_duy_xuyen(regions)), settings, regions, now)
    with pytest.raises(UsageError, match="bốn mắt"), people.begin() as conn:
        blasts.approve(conn, blast_id, actor, now)
    blast = _blast(people, blast_id)
    assert (blast["state"], blast["approved_by"]) == (BlastState.PENDING_APPROVAL.value, None)


def test_another_person_approves_and_the_blast_is_scheduled(people, regions, settings, now) -> None:
    """A second person's approval schedules the blast and records who approved it."""
    blast_id = _create(people, _request(_duy_xuyen(regions)), settings, regions, now)
    with people.begin() as conn:
        blasts.approve(conn, blast_id, "chief", now + timedelta(minutes=5))
    blast = _blast(people, blast_id)
    assert (blast["state"], blast["approved_by"]) == (BlastState.SCHEDULED.value, "chief")
    assert blasts.utc(blast["approved_at"]) == now + timedelta(minutes=5)


def test_approving_twice_is_refused_naming_the_state(people, regions, settings, now) -> None:
    """A blast already approved cannot be approved again; the message names its state."""
    blast_id = _scheduled(people, _request(_duy_xuyen(regions)), settings, regions, now)
    with pytest.raises(UsageError, match="trạng thái 'đã lên lịch'"), people.begin() as conn:
        blasts.approve(conn, blast_id, "deputy", now)


def test_an_unknown_blast_is_a_usage_error(people, now) -> None:
    """Approving a blast number that does not exist says so."""
    with pytest.raises(UsageError, match="Không có đợt gửi số 999"), people.begin() as conn:
        blasts.approve(conn, 999, "chief", now)


# -- starting -----------------------------------------------------------------------------


def test_nothing_starts_before_start_at(people, regions, settings, now) -> None:
    """A scheduled blast whose start is an hour away stays scheduled, with no deliveries."""
    request = _request(_duy_xuyen(regions), start_at=now + timedelta(hours=1))
    blast_id = _scheduled(people, request, settings, regions, now)
    with people.begin() as conn:
        assert blasts.start_due(conn, settings, now + timedelta(minutes=59)) == []
    assert _blast(people, blast_id)["state"] == BlastState.SCHEDULED.value
    assert _deliveries(people, blast_id) == {}


@pytest.fixture
def statements(people: Engine) -> Iterator[list[str]]:
    """Every SQL statement the database receives while the test runs."""
    seen: list[str] = []

    def record(_conn, _cursor, statement, _parameters, _context, _executemany) -> None:
        seen.append(" ".join(statement.split()))

    event.listen(people, "before_cursor_execute", record)
    yield seen
    event.remove(people, "before_cursor_execute", record)


def test_at_start_at_each_recipient_gets_one_queued_delivery(people, regions, settings, now, statements) -> None:
    """Starting inserts one queued delivery per recipient in a single statement and marks the blast running."""
    start = now + timedelta(hours=1)
    blast_id = _scheduled(people, _request(_duy_xuyen(regions), start_at=start), settings, regions, now)
    statements.clear()
    with people.begin() as conn:
        assert blasts.start_due(conn, settings, start) == [blast_id]
    assert _deliveries(people, blast_id) == dict.fromkeys(DUY_XUYEN, DeliveryStatus.QUEUED.value)
    assert len([s for s in statements if s.upper().startswith("INSERT INTO DELIVERIES")]) == 1
    blast = _blast(people, blast_id)
    assert blast["state"] == BlastState.RUNNING.value
    assert blasts.utc(blast["started_at"]) == start


def test_a_started_blast_records_its_number_of_recipients(people, regions, settings, now, request) -> None:
    """blasts.recipients is the number of deliveries materialised at the start."""
    blast_id = _running(people, _request(_duy_xuyen(regions)), settings, regions, now)
    assert _blast(people, blast_id)["recipients"] == len(_deliveries(people, blast_id)) == 6


def test_materialising_again_adds_nothing(people, regions, settings, now) -> None:
    """One delivery per blast and subscriber: a second materialise leaves the same rows."""
    blast_id = _running(people, _request(_duy_xuyen(regions)), settings, regions, now)
    before = _deliveries(people, blast_id)
    with people.begin() as conn:
        blasts.materialise(conn, blasts.get(conn, blast_id), settings, now + timedelta(minutes=1))
    assert _deliveries(people, blast_id) == before and len(before) == 6


def _queue(engine: Engine, blast_id: int) -> set[tuple[int, datetime, int]]:
    """(priority, due time, delivery id) of what a blast has waiting on the queue."""
    q = delivery_queue.c
    with engine.connect() as conn:
        rows = conn.execute(select(q.priority, q.due_at, q.delivery_id).where(q.blast_id == blast_id)).all()
    return {(priority, blasts.utc(due), delivery_id) for priority, due, delivery_id in rows}


def test_a_started_blast_queues_each_new_delivery_once_and_a_second_materialise_none(
    people, regions, settings, now
) -> None:
    """The queue holds each delivery the start wrote, at its priority and due time; materialising again adds none."""
    blast_id = _running(people, _request(_duy_xuyen(regions)), settings, regions, now)
    d = deliveries.c
    with people.connect() as conn:
        rows = conn.execute(select(d.priority, d.next_attempt_at, d.id).where(d.blast_id == blast_id)).all()
    expected = {(priority, blasts.utc(due), delivery_id) for priority, due, delivery_id in rows}
    assert _queue(people, blast_id) == expected and len(expected) == 6
    with people.begin() as conn:
        blasts.materialise(conn, blasts.get(conn, blast_id), settings, now + timedelta(minutes=1))
    assert _queue(people, blast_id) == expected


def test_materialise_returns_how_many_rows_it_added(people, regions, settings, now, request) -> None:
    """The first call reports every recipient and their range of ids, a repeated call 0 and an empty range."""
    blast_id = _scheduled(people, _request(_duy_xuyen(regions)), settings, regions, now)
    with people.begin() as conn:
        blast = blasts.get(conn, blast_id)
        added, held, (first, last) = blasts.materialise(conn, blast, settings, now)
        assert (added, held, last - first + 1) == (6, {"capped": 0}, 6)
        added, held, (first, last) = blasts.materialise(conn, blast, settings, now)
        assert (added, held, last - first + 1) == (0, {"capped": 0}, 0)


def test_opt_outs_after_approval_are_respected_at_start(people, regions, settings, now) -> None:
    """Someone who opts out between approval and start gets no delivery."""
    start = now + timedelta(hours=1)
    blast_id = _scheduled(people, _request(_duy_xuyen(regions), start_at=start), settings, regions, now)
    with people.begin() as conn:
        set_opt_out(conn, NAM_PHUOC, True, now + timedelta(minutes=30))
        blasts.start_due(conn, settings, start)
    assert set(_deliveries(people, blast_id)) == DUY_XUYEN - {NAM_PHUOC}


def test_a_blast_past_its_not_after_expires_instead_of_starting(people, regions, settings, now) -> None:
    """A scheduled blast first seen after its not_after becomes expired and queues nothing."""
    request = _request(_duy_xuyen(regions), not_after=now + timedelta(hours=1))
    blast_id = _scheduled(people, request, settings, regions, now)
    later = now + timedelta(hours=2)
    with people.begin() as conn:
        assert blasts.start_due(conn, settings, later) == []
    blast = _blast(people, blast_id)
    assert blast["state"] == BlastState.EXPIRED.value
    assert blasts.utc(blast["finished_at"]) == later
    assert _deliveries(people, blast_id) == {}


def test_a_start_given_in_local_time_starts_at_that_instant(people, regions, settings, now, request) -> None:
    """start_at written with the +07:00 offset means the same instant on every database."""
    start = now.astimezone(LOCAL) + timedelta(hours=1)
    blast_id = _scheduled(people, _request(_duy_xuyen(regions), start_at=start), settings, regions, now)
    with people.begin() as conn:
        assert blasts.start_due(conn, settings, now + timedelta(minutes=59)) == []
        assert blasts.start_due(conn, settings, now + timedelta(hours=1)) == [blast_id]


# -- already received and the daily cap ---------------------------------------------------


def test_people_who_received_the_alert_are_not_sent_it_again(people, regions, settings, now) -> None:
    """A second blast of the same alert excludes those the first one reached, in preview and at start."""
    first = _running(people, _request(_duy_xuyen(regions)), settings, regions, now)
    _set_status(people, first, DeliveryStatus.SENT.value, now)
    later = now + timedelta(days=1)
    request = _request(_segment(regions, provinces=("Đà Nẵng",)))
    shown = _preview(people, request, settings, regions, later)
    assert shown["excluded"]["already_received"] == 6
    assert shown["recipients"] == 3
    second = _running(people, request, settings, regions, later)
    assert set(_deliveries(people, second)) == DA_NANG - DUY_XUYEN


def test_already_received_lapses_after_the_configured_days(people, regions, settings, now) -> None:
    """Once already_received_days have passed, the same alert may reach the same people again."""
    first = _running(people, _request(_duy_xuyen(regions)), settings, regions, now)
    _set_status(people, first, DeliveryStatus.SENT.value, now)
    later = now + timedelta(days=settings.dispatch.already_received_days, minutes=1)
    shown = _preview(people, _request(_duy_xuyen(regions)), settings, regions, later)
    assert (shown["excluded"]["already_received"], shown["recipients"]) == (0, 6)


@pytest.mark.parametrize(("hours_later", "capped"), [(1, 3), (25, 0)], ids=["within-24h", "after-24h"])
def test_the_daily_cap_counts_messages_sent_in_the_last_24_hours(
    people, regions, settings, now, hours_later, capped
) -> None:
    """People sent cap_per_day messages in the last 24 h are capped; those with fewer, or older ones, are not."""
    assert settings.dispatch.cap_per_day == 3
    for slug, carriers in zip(OTHER_ALERTS, [(), (), ("viettel",)], strict=True):
        # Everyone asked: viec-nhe-luong-cao alone would reach only its students and workers.
        segment = _segment(regions, legacy_districts=("Huyện Duy Xuyên",), carriers=carriers, audiences=("all",))
        blast_id = _running(people, _request(segment, alert=slug), settings, regions, now)
        _set_status(people, blast_id, DeliveryStatus.SENT.value, now)
    later = now + timedelta(hours=hours_later)
    shown = _preview(people, _request(_duy_xuyen(regions)), settings, regions, later)
    assert (shown["excluded"]["capped"], shown["recipients"]) == (capped, 6 - capped)


@pytest.mark.parametrize(("cap", "capped"), [(2, 6), (3, 0)], ids=["cap-reached", "fewer-blasts-than-cap"])
def test_two_blasts_cap_everyone_only_when_the_cap_is_two(people, regions, settings, now, cap, capped) -> None:
    """Two blasts reaching everyone fill a cap of 2; with a cap of 3 (more than the day's blasts) nobody is held."""
    settings = settings.model_copy(update={"dispatch": settings.dispatch.model_copy(update={"cap_per_day": cap})})
    for slug in OTHER_ALERTS[:2]:
        blast_id = _running(people, _request(_duy_xuyen(regions), alert=slug), settings, regions, now)
        _set_status(people, blast_id, DeliveryStatus.SENT.value, now)
    shown = _preview(people, _request(_duy_xuyen(regions)), settings, regions, now + timedelta(hours=1))
    assert (shown["excluded"]["capped"], shown["recipients"]) == (capped, 6 - capped)


# -- pause, resume, cancel, resend --------------------------------------------------------


def _act(engine: Engine, action: str, blast_id: int, now: datetime) -> Any:
    with engine.begin() as conn:
        return getattr(blasts, action)(conn, blast_id, "operator", now)


def test_a_running_blast_pauses_and_resumes(people, regions, settings, now) -> None:
    """pause takes a running blast to paused; resume takes it back to running."""
    blast_id = _running(people, _request(_duy_xuyen(regions)), settings, regions, now)
    assert _act(people, "pause", blast_id, now)["state"] == BlastState.PAUSED.value
    assert _act(people, "resume", blast_id, now)["state"] == BlastState.RUNNING.value


def test_a_paused_blast_that_never_started_resumes_as_scheduled(people, regions, settings, now) -> None:
    """Pausing before the start and resuming leaves the blast waiting for its start."""
    request = _request(_duy_xuyen(regions), start_at=now + timedelta(hours=1))
    blast_id = _scheduled(people, request, settings, regions, now)
    assert _act(people, "pause", blast_id, now)["state"] == BlastState.PAUSED.value
    assert _act(people, "resume", blast_id, now)["state"] == BlastState.SCHEDULED.value


def test_a_paused_blast_does_not_start(people, regions, settings, now) -> None:
    """A blast paused before its start queues nothing when the start comes."""
    request = _request(_duy_xuyen(regions), start_at=now + timedelta(hours=1))
    blast_id = _scheduled(people, request, settings, regions, now)
    _act(people, "pause", blast_id, now)
    with people.begin() as conn:
        assert blasts.start_due(conn, settings, now + timedelta(hours=2)) == []
    assert _deliveries(people, blast_id) == {}


def test_a_blast_waiting_for_approval_cannot_be_paused(people, regions, settings, now) -> None:
    """Only a scheduled or running blast can pause; the refusal names the current state."""
    blast_id = _create(people, _request(_duy_xuyen(regions)), settings, regions, now)
    with pytest.raises(UsageError, match="trạng thái 'chờ duyệt'"):
        _act(people, "pause", blast_id, now)


def test_cancel_cancels_queued_messages_and_keeps_sent_ones(people, regions, settings, now) -> None:
    """Cancelling stops the blast: queued deliveries become cancelled, one already sent stays sent."""
    blast_id = _running(people, _request(_duy_xuyen(regions)), settings, regions, now)
    _set_status(people, blast_id, DeliveryStatus.SENT.value, now, {NAM_PHUOC})
    blast = _act(people, "cancel", blast_id, now + timedelta(minutes=1))
    assert blast["state"] == BlastState.CANCELLED.value
    assert blasts.utc(blast["finished_at"]) == now + timedelta(minutes=1)
    expected = dict.fromkeys(DUY_XUYEN - {NAM_PHUOC}, DeliveryStatus.CANCELLED.value)
    assert _deliveries(people, blast_id) == {**expected, NAM_PHUOC: DeliveryStatus.SENT.value}


def test_a_cancelled_blast_cannot_resume(people, regions, settings, now) -> None:
    """Cancelled is for good."""
    blast_id = _running(people, _request(_duy_xuyen(regions)), settings, regions, now)
    _act(people, "cancel", blast_id, now)
    with pytest.raises(UsageError, match="trạng thái 'đã huỷ'"):
        _act(people, "resume", blast_id, now)


def test_resend_unknown_requeues_them_and_reopens_a_completed_blast(people, regions, settings, now) -> None:
    """Messages left unknown go back to queued, and a completed blast runs again to send them."""
    blast_id = _running(people, _request(_duy_xuyen(regions)), settings, regions, now)
    unknown = {NAM_PHUOC, "+84912000002"}
    _set_status(people, blast_id, DeliveryStatus.DELIVERED.value, now)
    _set_status(people, blast_id, DeliveryStatus.UNKNOWN.value, now, unknown)
    with people.begin() as conn:
        conn.execute(update(blasts_table).where(blasts_table.c.id == blast_id).values(state="completed"))
    assert _act(people, "resend_unknown", blast_id, now + timedelta(hours=1)) == 2
    statuses = _deliveries(people, blast_id)
    assert {m for m, status in statuses.items() if status == DeliveryStatus.QUEUED.value} == unknown
    assert _blast(people, blast_id)["state"] == BlastState.RUNNING.value


def test_resend_unknown_is_refused_for_a_cancelled_blast(people, regions, settings, now) -> None:
    """A cancelled blast sends nothing again."""
    blast_id = _running(people, _request(_duy_xuyen(regions)), settings, regions, now)
    _set_status(people, blast_id, DeliveryStatus.UNKNOWN.value, now, {NAM_PHUOC})
    _act(people, "cancel", blast_id, now)
    with pytest.raises(UsageError, match="không gửi lại"):
        _act(people, "resend_unknown", blast_id, now)
    assert _deliveries(people, blast_id)[NAM_PHUOC] == DeliveryStatus.UNKNOWN.value


def test_counts_lists_every_delivery_status(people, regions, settings, now) -> None:
    """counts() has a key for every DeliveryStatus, zeros included."""
    blast_id = _running(people, _request(_duy_xuyen(regions)), settings, regions, now)
    _set_status(people, blast_id, DeliveryStatus.SENT.value, now, {NAM_PHUOC})
    with people.connect() as conn:
        found = blasts.counts(conn, blast_id)
    assert found == {**dict.fromkeys((s.value for s in DeliveryStatus), 0), "queued": 5, "sent": 1}


# -- the command line ---------------------------------------------------------------------


@pytest.fixture
def cli_ready(cli):
    """The CLI's database with ALERT approved by a second person and 2,000 subscribers in Đà Nẵng."""
    assert cli("alerts", "sync", user="police")[0] == 0
    assert cli("alerts", "submit", ALERT, user="police")[0] == 0
    assert cli("alerts", "approve", ALERT, user="chief")[0] == 0
    assert cli("subscribers", "generate", "--province", "48", "--count", "2000", "--json")[0] == 0
    return cli


# What a liaison must see before a blast exists (shared/DESIGN.md: "show parts and cost before a blast").
PREVIEW_KEYS = {"recipients", "excluded", "by_carrier", "by_province", "parts_per_message", "total_parts"}
PREVIEW_KEYS |= {"cost", "eta_seconds"}
CREATE = ("blast", "create", "--alert", ALERT, "--province", "Đà Nẵng")


def test_cli_dry_run_prints_the_preview_and_creates_nothing(cli_ready) -> None:
    """`blast create --dry-run --json` prints the preview without a blast_id, and no blast exists after."""
    code, doc = cli_ready.json(*CREATE, "--dry-run", user="liaison")
    assert code == 0
    assert doc.keys() >= PREVIEW_KEYS and "blast_id" not in doc
    assert 1_900 <= doc["recipients"] <= 2_000
    assert doc["total_parts"] == doc["recipients"] * doc["parts_per_message"]
    assert cli_ready.json("blast", "list")[1] == []


def test_cli_create_then_four_eyes_approval(cli_ready) -> None:
    """The creator's `blast approve` exits 2; another user's exits 0 and schedules the blast."""
    code, doc = cli_ready.json(*CREATE, user="liaison")
    assert code == 0 and doc.keys() >= PREVIEW_KEYS
    blast_id = str(doc["blast_id"])
    code, _out, err = cli_ready("blast", "approve", blast_id, user="liaison")
    assert code == 2 and "bốn mắt" in err
    code, doc = cli_ready.json("blast", "approve", blast_id, user="chief")
    assert (code, doc["state"]) == (0, "scheduled")


def test_cli_status_prints_state_and_counts(cli_ready) -> None:
    """`blast status ID --json` gives the blast's id, state and a count for every delivery status."""
    _code, doc = cli_ready.json(*CREATE, user="liaison")
    code, status = cli_ready.json("blast", "status", str(doc["blast_id"]))
    assert code == 0
    assert {"blast_id", "state", "counts"} <= set(status)  # plus "by_carrier" for operators
    assert (status["blast_id"], status["state"]) == (doc["blast_id"], "pending_approval")
    assert status["counts"] == dict.fromkeys((s.value for s in DeliveryStatus), 0)


def test_cli_shows_a_blasts_state_in_vietnamese(cli_ready) -> None:
    """Approve, status and list name the state as a Vietnamese user reads it; --json keeps the code."""
    blast_id = str(cli_ready.json(*CREATE, user="liaison")[1]["blast_id"])
    assert "Đợt gửi 1: đã lên lịch." in cli_ready("blast", "approve", blast_id, user="chief")[1]
    assert "Đợt gửi 1: tạm dừng." in cli_ready("blast", "pause", blast_id)[1]
    assert "Đợt gửi 1: tạm dừng" in cli_ready("blast", "status", blast_id)[1]
    assert "tạm dừng" in cli_ready("blast", "list")[1]
    assert cli_ready.json("blast", "status", blast_id)[1]["state"] == "paused"
    code, _out, err = cli_ready("blast", "approve", blast_id, user="chief")
    assert code == 2 and "trạng thái 'tạm dừng': không thể chuyển sang 'đã lên lịch'" in err


def test_cli_reads_a_day_first_start(cli_ready) -> None:
    """`--start-at "01/12/2099 09:00"` is 09:00 local time on 1 December, as the ISO form would be."""
    code, doc = cli_ready.json(*CREATE, "--start-at", "01/12/2099 09:00", "--dry-run", user="liaison")
    assert code == 0
    assert datetime.fromisoformat(doc["start_at"]) == datetime(2099, 12, 1, 2, 0, tzinfo=UTC)


def test_cli_an_unreadable_time_shows_both_accepted_forms(cli_ready) -> None:
    """A time neither ISO nor day-first exits 2 naming the option and both forms it takes."""
    code, _out, err = cli_ready(*CREATE, "--not-after", "mai 9 giờ", "--dry-run", user="liaison")
    assert code == 2
    assert "--not-after: không hiểu thời điểm 'mai 9 giờ' (dạng 01/12/2026 09:00 hoặc 2026-12-01 09:00)" in err


@pytest.mark.parametrize("rate", ["nan", "inf", "-inf"])
def test_cli_a_non_finite_rate_is_refused(cli_ready, rate) -> None:
    """`--rate nan` or `inf` is no rate limit the liaison meant: exit 2 naming --rate, nothing created."""
    code, _out, err = cli_ready(*CREATE, "--rate", rate, user="liaison")
    assert code == 2 and "--rate: Tốc độ gửi phải là một số hữu hạn" in err
    assert cli_ready.json("blast", "list")[1] == []


def test_cli_preview_speaks_vietnamese_numbers_times_and_start(cli_ready) -> None:
    """The human preview groups thousands with dots, says the start is on approval, and gives durations in words."""
    code, out, _err = cli_ready(*CREATE, "--dry-run", user="liaison")
    assert code == 0
    recipients = re.search(r"Người nhận: ([\d.]+) / ([\d.]+)", out)
    assert recipients and re.fullmatch(r"1\.\d{3}", recipients[1])
    assert "Bắt đầu: khi được duyệt" in out
    assert re.search(r"Gửi xong sau khoảng [\d,]+ giây \(nếu duyệt ngay: lúc \d\d:\d\d \d\d/\d\d/\d{4}", out)
    assert re.search(r"Chi phí ước tính: [\d.]+ VND — SMS [\d.]+ VND cho [\d.]+ người", out)
    assert "Đối tượng: theo mẫu — người dân" in out


def test_cli_preview_names_carriers_as_people_write_them(cli_ready) -> None:
    """The preview's carrier table says 'Viettel', 'VinaPhone', not the stored codes."""
    code, out, _err = cli_ready(*CREATE, "--dry-run", user="liaison")
    assert code == 0 and "Viettel" in out and "VinaPhone" in out
    assert not re.search(r"\b(viettel|vinaphone|mobifone)\b", out)


def test_cli_the_slowest_rate_is_named_the_vietnamese_way(cli_ready) -> None:
    """A rate below what a lease allows is refused naming the minimum as '0,067', rounded up so it is accepted."""
    code, _out, err = cli_ready(*CREATE, "--rate", "0.0001", "--dry-run", user="liaison")
    assert code == 2 and "--rate: Tốc độ gửi tối thiểu 0,067 tin/giây (một tin mỗi 15 giây)" in err
    assert cli_ready(*CREATE, "--rate", "0.067", "--dry-run", user="liaison")[0] == 0


def test_cli_a_preview_warning_names_the_option_that_changes_it(cli_ready) -> None:
    """The domain's warning about a missing Zalo route is printed after the option to change (--channel)."""
    code, out, _err = cli_ready(*CREATE, "--channel", "zalo_then_sms", "--dry-run", user="liaison")
    assert code == 0 and "Lưu ý (--channel): Kênh 'zalo_then_sms' cần cổng Zalo" in " ".join(out.split())


def test_cli_a_dry_run_of_a_hopeless_window_is_a_refusal(cli_ready) -> None:
    """A dry run of 23:30 → 06:00 exits 2 with the reason, as the real create would."""
    window = ("--start-at", "01/12/2099 23:30", "--not-after", "02/12/2099 06:00")
    cli_ready.quiet_hours("22:00-07:00")
    code, out, err = cli_ready(*CREATE, *window, "--dry-run", user="liaison")
    assert (code, out) == (2, "")
    assert "--not-after: Không tin nào gửi kịp trước giờ 'không gửi sau' 06:00 02/12/2099" in err


def test_cli_every_blast_create_option_has_help() -> None:
    """Each option of `blast create` explains itself in `--help` (province, commune… included)."""
    import typer.main

    from dispatcher.cli.app import app

    create = typer.main.get_command(app).commands["blast"].commands["create"]
    options = [param for param in create.params if param.name != "help"]
    assert {"province", "commune", "legacy_district", "audience", "carrier"} <= {o.name for o in options}
    assert [o.name for o in options if not getattr(o, "help", None)] == []


def test_cli_unknown_province_exits_2_with_the_reason_on_stderr(cli_ready) -> None:
    """A province that does not exist is a bad option value: exit 2, Vietnamese reason on stderr, nothing on stdout."""
    code, out, err = cli_ready("blast", "create", "--alert", ALERT, "--province", "Tỉnh Atlantis", user="liaison")
    assert code == 2
    assert out == ""
    assert "Không tìm thấy địa danh 'Tỉnh Atlantis'" in err


def test_a_zalo_blast_needs_a_zalo_route(people, regions, settings, now) -> None:
    """Without `[routes] zalo` a Zalo blast is previewed (who has Zalo) but not created."""
    request = _request(_duy_xuyen(regions), channel="zalo")
    assert _preview(people, request, settings, regions, now)["recipients"] > 0
    with pytest.raises(ConfigError, match="cần cổng Zalo"):
        _create(people, request, settings, regions, now)
