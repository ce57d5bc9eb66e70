"""Subscriber import: every row added, updated or rejected with its reason, in one transaction."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from dispatcher import population
from dispatcher.domain import Audience, Channel
from dispatcher.errors import UsageError
from dispatcher.models import subscribers
from dispatcher.subscribers import RejectsFile, RowParser, SubscriberImporter, set_opt_out

from .conftest import DATA


@pytest.fixture
def importer(engine: Engine, regions, tmp_path: Path) -> SubscriberImporter:
    """An importer on each kind of database, with small batches so batching is exercised."""
    return SubscriberImporter(engine, regions, tmp_path / "rejects", batch_size=100)


def _rows(engine: Engine) -> dict[str, dict]:
    with engine.connect() as conn:
        return {r["msisdn"]: dict(r) for r in conn.execute(select(subscribers)).mappings()}


def _write_csv(path: Path, rows: list[list[str]], header: list[str] | None = None, **kwargs) -> Path:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, **kwargs)
        writer.writerow(header or ["msisdn", "province", "commune", "audiences", "channels", "carrier", "opt_out"])
        writer.writerows(rows)
    return path


def _rejects(summary) -> list[list[str]]:
    with summary.rejects_file.open(encoding="utf-8-sig") as fh:
        return list(csv.reader(fh))[1:]


def test_vietnamese_csv_with_bom_is_imported_and_bad_rows_reported(importer, now) -> None:
    """The sample CSV (UTF-8 BOM, Vietnamese headers) adds the good rows and reports each bad one."""
    summary = importer.import_file(DATA / "thue-bao-da-nang.csv", now)
    assert (summary.rows, summary.added, summary.updated, summary.rejected) == (19, 7, 0, 12)
    reasons = {int(row): reason for row, _value, reason in _rejects(summary)}
    assert "máy bàn" in reasons[9]
    assert "nước ngoài" in reasons[10]
    assert "không tìm thấy xã/phường 'Phường Không Có'" in reasons[14]
    assert "trùng số với dòng 20" in reasons[2]
    stored = _rows(importer.engine)
    assert stored["+84905123401"]["commune_code"] == 20209  # the later row (Phường Thanh Khê) wins


def test_every_written_form_is_stored_as_e164_with_its_region(importer, now) -> None:
    """Spaces, dots, 84…, +84… and old 11-digit numbers all land as E.164 in the right commune."""
    importer.import_file(DATA / "thue-bao-da-nang.csv", now)
    stored = _rows(importer.engine)
    assert stored["+84935123402"]["commune_code"] == 20410  # Phường Hội An
    assert stored["+84985123403"]["commune_code"] == 20599  # by NSO code
    old = stored["+84385123404"]  # 0168 512 3404, legacy district only
    assert (old["province_code"], old["commune_code"], old["legacy_district_code"]) == (48, None, 508)
    assert stored["+84912512345"]["province_code"] == 48  # "Quảng Nam" is in Đà Nẵng today
    assert stored["+84388512346"]["commune_code"] == 20599  # Thị trấn Nam Phước became Xã Nam Phước


def test_audiences_channels_and_declared_carrier_are_stored(importer, now) -> None:
    """Vietnamese audience names, channel lists and a declared (ported) carrier are kept."""
    importer.import_file(DATA / "thue-bao-da-nang.csv", now)
    stored = _rows(importer.engine)
    student = stored["+84935123402"]
    assert student["audience_mask"] == Audience.STUDENT.mask
    assert student["channel_mask"] == Channel.SMS.mask | Channel.ZALO.mask
    ported = stored["+84388512346"]
    assert (ported["carrier"], ported["carrier_declared"]) == ("vinaphone", True)
    assert stored["+84905123401"]["carrier"] == "mobifone"


def test_xlsx_with_english_headers_is_imported(importer, now) -> None:
    """The sample XLSX imports, numbers typed as Excel numbers included."""
    summary = importer.import_file(DATA / "subscribers-cao-bang-da-nang.xlsx", now)
    assert (summary.added, summary.rejected) == (5, 4)
    stored = _rows(importer.engine)
    assert stored["+84905123501"]["commune_code"] == 20194  # typed as the number 905123501
    assert stored["+84912123504"]["province_code"] == 4
    reasons = [reason for _row, _value, reason in _rejects(summary)]
    assert any("Beeline" in reason for reason in reasons)


def test_reimporting_the_same_file_changes_nothing(importer, now) -> None:
    """Upsert by number: the second import adds nothing, updates nothing, duplicates nothing."""
    importer.import_file(DATA / "thue-bao-da-nang.csv", now)
    again = importer.import_file(DATA / "thue-bao-da-nang.csv", now + timedelta(hours=1))
    assert (again.added, again.updated, again.unchanged) == (0, 0, 7)
    with importer.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(subscribers)).scalar() == 7


def test_reimport_updates_changed_rows_and_keeps_empty_cells(importer, now, tmp_path) -> None:
    """A changed commune is updated; an empty audiences cell keeps what was stored."""
    first = _write_csv(tmp_path / "a.csv", [["0905123401", "48", "20242", "elderly", "sms", "", ""]])
    importer.import_file(first, now)
    second = _write_csv(tmp_path / "b.csv", [["0905123401", "48", "20209", "", "", "", ""]])
    summary = importer.import_file(second, now + timedelta(days=1))
    assert (summary.added, summary.updated) == (0, 1)
    row = _rows(importer.engine)["+84905123401"]
    assert (row["commune_code"], row["audience_mask"]) == (20209, Audience.ELDERLY.mask)


def test_an_import_never_clears_an_opt_out(importer, now, tmp_path) -> None:
    """An opt-out stands until the person opts in again, whatever later files say."""
    importer.import_file(_write_csv(tmp_path / "a.csv", [["0905123401", "48", "", "", "", "", "có"]]), now)
    importer.import_file(_write_csv(tmp_path / "b.csv", [["0905123401", "48", "", "", "", "", ""]]), now)
    assert _rows(importer.engine)["+84905123401"]["opted_out_at"] is not None


def test_opt_out_and_opt_in_by_number(importer, now, tmp_path) -> None:
    """opt-out records the first refusal; opt-in clears it; an unknown number is reported."""
    importer.import_file(_write_csv(tmp_path / "a.csv", [["0905123401", "48", "", "", "", "", ""]]), now)
    with importer.engine.begin() as conn:
        assert set_opt_out(conn, "+84905123401", True, now)
        assert set_opt_out(conn, "+84905123401", True, now + timedelta(days=1))
        assert not set_opt_out(conn, "+84905999999", True, now)
    first_refusal = _rows(importer.engine)["+84905123401"]["opted_out_at"]
    assert first_refusal.replace(tzinfo=now.tzinfo) == now
    with importer.engine.begin() as conn:
        set_opt_out(conn, "+84905123401", False, now)
    assert _rows(importer.engine)["+84905123401"]["opted_out_at"] is None


def test_a_declared_carrier_survives_a_reimport_without_one(importer, now, tmp_path) -> None:
    """A ported number keeps the carrier someone declared when a later list has none."""
    importer.import_file(_write_csv(tmp_path / "a.csv", [["0905123401", "48", "", "", "", "Viettel", ""]]), now)
    importer.import_file(_write_csv(tmp_path / "b.csv", [["0905123401", "48", "", "", "", "", ""]]), now)
    row = _rows(importer.engine)["+84905123401"]
    assert (row["carrier"], row["carrier_declared"]) == ("viettel", True)


def test_semicolon_separated_csv_is_read(importer, now, tmp_path) -> None:
    """Spreadsheets saved with ';' as the separator import the same."""
    path = _write_csv(
        tmp_path / "semi.csv", [["0905123401", "Đà Nẵng", "Phường Hải Châu", "", "", "", ""]], delimiter=";"
    )
    assert importer.import_file(path, now).added == 1


def test_a_crash_mid_import_leaves_the_database_as_it_was(importer, regions, now, tmp_path) -> None:
    """Ctrl-C after some batches were staged rolls everything back and removes the rejects file."""
    importer.import_file(_write_csv(tmp_path / "a.csv", [["0905123401", "48", "", "", "", "", ""]]), now)
    before = _rows(importer.engine)

    def rows() -> Iterator[list[str]]:
        yield ["02363812345", "48", "", "", "", "", ""]  # rejected, so a rejects file is started
        for i in range(500):
            yield [f"0905{200000 + i}", "48", "", "", "", "", ""]
        raise KeyboardInterrupt

    positions = {name: i for i, name in enumerate(["msisdn", "province", "commune"])}
    rejects = RejectsFile(tmp_path / "rejects" / "crash.csv")
    with pytest.raises(KeyboardInterrupt):
        importer.load(rows(), RowParser(regions, positions), now, "test", rejects)
    assert _rows(importer.engine) == before
    assert not rejects.path.exists()


def test_a_file_without_a_number_column_is_refused_whole(importer, now, tmp_path) -> None:
    """No msisdn column: nothing is imported and the message lists the columns found."""
    path = _write_csv(tmp_path / "x.csv", [["a", "b"]], header=["tên", "tỉnh"])
    with pytest.raises(UsageError, match="thiếu cột số điện thoại.*'tên'"):
        importer.import_file(path, now)
    assert _rows(importer.engine) == {}


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("cp1258.csv", b"msisdn,province\n0905123401,\xd0a N\xe3ng\n", "không phải UTF-8"),
        ("list.ods", b"PK...", "chỉ nhận CSV hoặc XLSX"),
        ("broken.xlsx", b"not a zip", "không đọc được như XLSX"),
        ("empty.csv", b"", "trống"),
    ],
)
def test_unreadable_files_get_a_clear_message(importer, now, tmp_path, name, content, message) -> None:
    """A wrong encoding, format or an empty file is refused with what and where."""
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UsageError, match=message):
        importer.import_file(path, now)


def test_generated_population_is_realistic_and_repeatable(regions) -> None:
    """Valid numbers in market carrier shares, all in the province's communes, same seed same people."""
    rows = list(population.generate(regions, 48, 20_000, seed=3))
    assert rows == list(population.generate(regions, 48, 20_000, seed=3))
    parser = RowParser(regions, {name: i for i, name in enumerate(population.HEADER)})
    parsed = [parser.parse(i, row) for i, row in enumerate(rows)]
    assert len({p[1] for p in parsed}) == 20_000
    shares = Counter(p[2] for p in parsed)
    assert 0.50 < shares["viettel"] / 20_000 < 0.58
    assert 0.16 < shares["vinaphone"] / 20_000 < 0.24
    assert {p[4] for p in parsed} == {48}
    communes = {c.code for c in regions.communes_by_province[48]}
    assert {p[5] for p in parsed} <= communes
    assert len({p[5] for p in parsed}) > 80


def test_generate_twice_with_one_seed_updates_instead_of_adding(cli) -> None:
    """`subscribers generate` is idempotent for a seed: the second run adds nobody."""
    code, first = cli.json("subscribers", "generate", "--province", "Đà Nẵng", "--count", "2000", "--seed", "5")
    assert (code, first["added"]) == (0, 2000)
    code, second = cli.json("subscribers", "generate", "--province", "48", "--count", "2000", "--seed", "5")
    assert (second["added"], second["updated"] + second["unchanged"]) == (0, 2000)


def test_cli_import_reports_json_and_exits_1_when_rows_were_rejected(cli) -> None:
    """`subscribers import --json` prints the summary document; rejected rows make the status 1."""
    code, document = cli.json("subscribers", "import", str(DATA / "thue-bao-da-nang.csv"))
    assert code == 1
    assert {"added", "updated", "rejected", "rejects_file"} <= document.keys()
    assert Path(document["rejects_file"]).exists()


def test_cli_opt_out_masks_the_number(cli) -> None:
    """The console shows the number masked, and an unknown number exits 1."""
    cli("subscribers", "import", str(DATA / "thue-bao-da-nang.csv"))
    code, out, _ = cli("subscribers", "opt-out", "0905 123 401")
    assert code == 0
    assert "+8490****401" in out and "123401" not in out.replace("****", "")
    code, _, err = cli("subscribers", "opt-out", "0905 999 999")
    assert code == 1 and "+8490****999" in err


# -- region cells ---------------------------------------------------------------------------


def _region_rows(importer, now, tmp_path: Path, rows: list[list[str]]):
    header = ["msisdn", "province", "commune", "legacy_district"]
    summary = importer.import_file(_write_csv(tmp_path / "regions.csv", rows, header=header), now)
    reasons = {int(row): reason for row, _value, reason in _rejects(summary)} if summary.rejects_file else {}
    return summary, _rows(importer.engine), reasons


def test_a_numbered_ward_is_a_name_not_a_commune_code(importer, now, tmp_path) -> None:
    """'Hà Nội, Phường 1' is refused (Hà Nội has no Phường 1) instead of being stored in commune 1 or 97."""
    summary, stored, reasons = _region_rows(importer, now, tmp_path, [["0905123401", "Hà Nội", "Phường 1", ""]])
    assert (summary.added, summary.rejected) == (0, 1)
    assert stored == {}
    assert "không tìm thấy xã/phường 'Phường 1' trong Thành phố Hà Nội" in reasons[2]


def test_a_numbered_ward_resolves_with_its_old_district(importer, now, tmp_path) -> None:
    """'Phường 1' of Hồ Chí Minh City with the old district 'Quận 3' (or written 'Q.3, P.1') lands in Phường Bàn Cờ."""
    rows = [["0905123401", "TP.HCM", "Phường 1", "Quận 3"], ["0905123402", "Hồ Chí Minh", "Q.3, P.1", ""]]
    summary, stored, _reasons = _region_rows(importer, now, tmp_path, rows)
    assert summary.added == 2
    assert (stored["+84905123401"]["commune_code"], stored["+84905123401"]["legacy_district_code"]) == (27154, 770)
    assert stored["+84905123402"]["commune_code"] == 27154


def test_an_ambiguous_cell_says_what_to_write_and_that_text_imports(importer, now, tmp_path) -> None:
    """Tây Ninh had two 'Huyện Châu Thành' before 2025: the row error quotes the text for each, which then imports."""
    _summary, _stored, reasons = _region_rows(
        importer, now, tmp_path, [["0905123401", "Tây Ninh", "", "Huyện Châu Thành"]]
    )
    assert "quận/huyện (cũ) 'Huyện Châu Thành' không rõ ràng (2 nơi)" in reasons[2]
    assert "'Long An (cũ), Huyện Châu Thành [mã huyện cũ 808]'" in reasons[2]
    rows = [["0905123401", "Tây Ninh", "", "Long An (cũ), Huyện Châu Thành [mã huyện cũ 808]"]]
    rows.append(["0905123402", "Tây Ninh", "", "Long An (cũ), Huyện Châu Thành"])
    summary, stored, _reasons = _region_rows(importer, now, tmp_path, rows)
    assert summary.added == 2
    assert {stored[n]["legacy_district_code"] for n in ("+84905123401", "+84905123402")} == {808}
