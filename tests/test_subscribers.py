"""Subscriber import: every row added, updated or rejected with its reason, in one transaction."""

from __future__ import annotations

import codecs
import contextlib
import csv
import os
import signal
import sqlite3
import subprocess
import sys
import time
import unicodedata
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from dispatcher import population
from dispatcher.domain import Audience, Channel
from dispatcher.errors import InputRejected, UsageError
from dispatcher.models import audit_log, subscribers
from dispatcher.phones import PhoneBook
from dispatcher.subscribers import (
    ImportInterrupted,
    OptOut,
    RejectsFile,
    RowParser,
    SubscriberImporter,
    held_refusals,
    set_opt_out,
)

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
    assert (summary.rows, summary.added, summary.updated, summary.rejected, summary.duplicates) == (19, 7, 0, 11, 1)
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
    """opt-out records the first refusal; opt-in clears it."""
    importer.import_file(_write_csv(tmp_path / "a.csv", [["0905123401", "48", "", "", "", "", ""]]), now)
    with importer.engine.begin() as conn:
        assert set_opt_out(conn, "+84905123401", True, now) is OptOut.SUBSCRIBER
        assert set_opt_out(conn, "+84905123401", True, now + timedelta(days=1)) is OptOut.SUBSCRIBER
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
    with pytest.raises(ImportInterrupted, match="không có gì thay đổi"):
        importer.load(rows(), RowParser(regions, positions), now, "test", rejects)
    assert _rows(importer.engine) == before
    assert not rejects.path.exists()


def test_a_file_without_a_number_column_is_refused_whole(importer, now, tmp_path) -> None:
    """No msisdn column: nothing is imported and the message lists the columns found."""
    path = _write_csv(tmp_path / "x.csv", [["a", "b"]], header=["tên", "tỉnh"])
    with pytest.raises(InputRejected, match="thiếu cột số điện thoại.*'tên'"):
        importer.import_file(path, now)
    assert _rows(importer.engine) == {}


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("cp1252.csv", b"msisdn,province\n0905123401,Fran\xe7ois\n", 'dòng 2 .*"CSV UTF-8 \\(Comma delimited\\)'),
        ("mixed.csv", "msisdn,province\n0905123401,Đà Nẵng\n".encode() + b"0905123402,\xd0a\n", "dòng 3"),
        ("utf16-no-bom.csv", "msisdn,province\n".encode("utf-16-le"), "byte 0 mà không có dấu BOM"),
        ("broken.xlsx", b"not a zip", "không phải tệp Excel .xlsx hợp lệ"),
        ("empty.csv", b"", "trống"),
    ],
)
def test_unreadable_files_get_a_clear_message(importer, now, tmp_path, name, content, message) -> None:
    """An encoding we cannot read, a broken workbook or an empty file is data refused, saying what and where."""
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputRejected, match=message):
        importer.import_file(path, now)


def test_a_file_of_another_kind_is_a_usage_error(importer, now, tmp_path) -> None:
    """A file that is neither CSV nor XLSX is the wrong thing to give the command: exit 2, not data refused."""
    path = tmp_path / "list.ods"
    path.write_bytes(b"PK...")
    with pytest.raises(UsageError, match="chỉ nhận CSV hoặc XLSX") as refused:
        importer.import_file(path, now)
    assert not isinstance(refused.value, InputRejected)


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
    """The console shows the number masked."""
    cli("subscribers", "import", str(DATA / "thue-bao-da-nang.csv"))
    code, out, _ = cli("subscribers", "opt-out", "0905 123 401")
    assert code == 0
    assert "+8490****401" in out and "123401" not in out.replace("****", "")


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


# -- refusals of numbers we do not hold yet -----------------------------------------------------------


def _audit(engine: Engine) -> list[tuple[str, str, dict]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(audit_log.c.action, audit_log.c.subject, audit_log.c.detail))]


def test_an_opt_out_of_an_unknown_number_is_held_and_a_later_import_honours_it(importer, now, tmp_path) -> None:
    """A refusal of a number not yet imported is kept, audited, and the import brings the person in opted out."""
    with importer.engine.begin() as conn:
        assert set_opt_out(conn, "+84905123401", True, now, "tong-dai") is OptOut.HELD
        assert held_refusals(conn) == 1
    assert _audit(importer.engine) == [("subscriber.opt_out", "+8490****401", {"outcome": "held"})]
    later = now + timedelta(days=30)
    summary = importer.import_file(_write_csv(tmp_path / "a.csv", [["0905123401", "48", "", "", "", "", ""]]), later)
    assert (summary.added, summary.refusals_applied) == (1, 1)
    assert _rows(importer.engine)["+84905123401"]["opted_out_at"] == now  # the time of the refusal, not the import
    with importer.engine.connect() as conn:
        assert held_refusals(conn) == 0


def test_opt_in_lifts_a_held_refusal(importer, now, tmp_path) -> None:
    """opt-in of a number only refused so far withdraws the refusal; a second opt-in has nothing to lift."""
    with importer.engine.begin() as conn:
        set_opt_out(conn, "+84905123401", True, now)
        assert set_opt_out(conn, "+84905123401", False, now, "tong-dai") is OptOut.LIFTED
        assert set_opt_out(conn, "+84905123401", False, now) is OptOut.UNKNOWN
    importer.import_file(_write_csv(tmp_path / "a.csv", [["0905123401", "48", "", "", "", "", ""]]), now)
    assert _rows(importer.engine)["+84905123401"]["opted_out_at"] is None
    assert _audit(importer.engine)[-1] == ("subscriber.opt_in", "+8490****401", {"outcome": "lifted"})


def test_a_generated_population_honours_a_held_refusal(importer, regions, now, tmp_path) -> None:
    """`subscribers generate` goes through the same import: a number refused beforehand arrives opted out."""
    first = population.generate(regions, 48, 1, seed=9)
    refused = PhoneBook().normalize(next(first)[0]).e164
    with importer.engine.begin() as conn:
        set_opt_out(conn, refused, True, now)
    positions = {name: i for i, name in enumerate(population.HEADER)}
    rows = population.generate(regions, 48, 50, seed=9)
    summary = importer.load(rows, RowParser(regions, positions), now, "generate", RejectsFile(tmp_path / "r.csv"))
    assert summary.refusals_applied == 1
    assert _rows(importer.engine)[refused]["opted_out_at"] == now


def test_cli_opt_out_of_an_unknown_number_is_held_and_counted_in_stats(cli) -> None:
    """The CLI says the refusal was put on the list; stats count it until the number is imported."""
    code, out, _ = cli("subscribers", "opt-out", "0905 999 999")
    assert code == 0
    assert "chưa có thuê bao +8490****999: đã ghi vào danh sách từ chối, mọi lần nhập sau sẽ tôn trọng" in out.lower()
    code, document = cli.json("subscribers", "stats")
    assert (code, document["total"], document["held_refusals"]) == (0, 0, 1)
    _, out, _ = cli("subscribers", "stats")
    assert "Lời từ chối của số chưa nhập (áp dụng khi nhập): 1." in out


def test_cli_opt_in_of_a_number_never_seen_exits_1(cli) -> None:
    """Withdrawing a refusal nobody made is refused input, with the number masked."""
    code, _, err = cli("subscribers", "opt-in", "0905 999 999")
    assert code == 1
    assert "+8490****999" in err and "999999" not in err


# -- files as people save them ------------------------------------------------------------------------


def _rejected(summary) -> dict[int, tuple[str, str]]:
    return {int(row): (value, reason) for row, value, reason in _rejects(summary)}


def test_a_cell_over_128_kb_is_a_row_error_and_the_import_goes_on(importer, now, tmp_path) -> None:
    """A huge cell rejects its row in Vietnamese; the rows after it are imported."""
    path = tmp_path / "long.csv"
    path.write_text(
        "msisdn,province,note\n0905123401,48,ok\n0905123402,48," + "x" * 200_000 + "\n0905123403,48,ok\n",
        encoding="utf-8",
    )
    summary = importer.import_file(path, now)
    assert (summary.added, summary.rejected) == (2, 1)
    assert "ô dài hơn 128 KB" in _rejected(summary)[3][1]


@pytest.mark.parametrize(
    "lines",
    [
        pytest.param(['0905123402,"Đà Nẵng,x', "0905123403,48,x", "0905123404,48,x"], id="never-closed"),
        pytest.param(['0905123402,"Đà Nẵng,x', "0905123403,48,x", '0905123404,48,x"'], id="closed-rows-later"),
    ],
)
def test_an_unclosed_quote_is_reported_at_its_row_and_the_rows_after_it_are_read(
    importer, now, tmp_path, lines
) -> None:
    """A quote left open names the row it opened on, and does not swallow the rows after it."""
    path = tmp_path / "quote.csv"
    path.write_text("\n".join(["msisdn,province,note", "0905123401,48,x", *lines]) + "\n", encoding="utf-8")
    summary = importer.import_file(path, now)
    value, reason = _rejected(summary)[3]
    assert 'dấu ngoặc kép (") mở ở dòng này không được đóng' in reason
    assert value.startswith("0905123402")
    assert {"+84905123401", "+84905123403", "+84905123404"} <= _rows(importer.engine).keys()


def test_a_line_break_inside_a_closed_quote_stays_in_its_cell(importer, now, tmp_path) -> None:
    """A note typed with Alt+Enter in Excel is one cell, not a broken row."""
    path = tmp_path / "note.csv"
    path.write_text('msisdn,province,note\n0905123401,48,"dòng một\ndòng hai"\n0905123402,48,x\n', encoding="utf-8")
    summary = importer.import_file(path, now)
    assert (summary.rows, summary.added, summary.rejected) == (2, 2, 0)


def test_excel_unicode_text_is_read_as_utf16(importer, now, tmp_path) -> None:
    """Excel's "Unicode Text" (UTF-16 with BOM, tab-separated) imports, and the summary says how it was read."""
    text = "Số điện thoại\tTỉnh/Thành phố\tXã/Phường\r\n0905123401\tĐà Nẵng\tPhường Hải Châu\r\n"
    path = tmp_path / "unicode.txt"
    path.write_bytes(codecs.BOM_UTF16_LE + text.encode("utf-16-le"))
    summary = importer.import_file(path, now)
    assert (summary.added, summary.rejected, summary.encoding) == (1, 0, "utf-16")
    assert summary.to_json()["encoding"] == "utf-16"


_TONES = {"\u0300", "\u0301", "\u0303", "\u0309", "\u0323"}


def _windows_1258(text: str) -> bytes:
    """`text` as a Vietnamese Windows saves it: a letter Windows-1258 lacks becomes letter + combining tone."""
    out = b""
    for ch in text:
        try:
            out += ch.encode("cp1258")
        except UnicodeEncodeError:
            base, *marks = unicodedata.normalize("NFD", ch)
            letter = unicodedata.normalize("NFC", base + "".join(m for m in marks if m not in _TONES))
            out += (letter + "".join(m for m in marks if m in _TONES)).encode("cp1258")
    return out


def test_a_vietnamese_windows_csv_is_read_as_windows_1258_in_nfc(importer, now, tmp_path) -> None:
    """Plain CSV from Excel on a Vietnamese Windows imports, its combining tone marks composed (NFC)."""
    text = "Số điện thoại,Tỉnh/Thành phố,Xã/Phường,Đối tượng\r\n0905123401,Đà Nẵng,Phường Hải Châu,người cao tuổi\r\n"
    text += "0905123402,Đà Nẵng,Phường Ngũ Hành Sơn Cũ,\r\n"
    path = tmp_path / "windows.csv"
    path.write_bytes(_windows_1258(text))
    assert b"\xde" in path.read_bytes()  # 'ẵ' was written as 'ă' + a combining tilde
    summary = importer.import_file(path, now)
    assert (summary.added, summary.encoding) == (1, "windows-1258")
    assert _rows(importer.engine)["+84905123401"]["audience_mask"] == Audience.ELDERLY.mask
    assert "'Phường Ngũ Hành Sơn Cũ'" in _rejected(summary)[3][1]  # as typed, composed


def test_a_directory_given_as_the_file_says_it_is_a_directory(importer, now, tmp_path) -> None:
    """A folder named like a list is refused as a folder, not as a missing file."""
    (tmp_path / "danh-sach.csv").mkdir()
    with pytest.raises(UsageError, match="danh-sach.csv là một thư mục"):
        importer.import_file(tmp_path / "danh-sach.csv", now)


def test_cli_a_repeated_number_is_a_duplicate_not_a_rejection(cli, tmp_path) -> None:
    """The same number twice is counted as a duplicate and listed, and alone does not make the status 1."""
    path = _write_csv(tmp_path / "twice.csv", [["0905123401", "48", "", "", "", "", ""]] * 2)
    code, document = cli.json("subscribers", "import", str(path))
    assert (code, document["added"], document["duplicates"], document["rejected"]) == (0, 1, 1, 0)
    with Path(document["rejects_file"]).open(encoding="utf-8-sig") as fh:
        assert list(csv.reader(fh))[1] == ["2", "+84905123401", "trùng số với dòng 3 (dùng dòng 3)"]


def test_cli_ctrl_c_during_an_import_says_nothing_changed(tmp_path) -> None:
    """SIGINT mid-import: a Vietnamese message, exit 130, no traceback, no subscriber stored, no rejects file."""
    rejects = tmp_path / "rejects"
    rows = [["02363812345", "48", "", "", "", "", ""]]  # refused first, so the rejects file marks the import under way
    rows += [[f"09051{i:05d}", "48", "", "", "", "", ""] for i in range(100_000)]
    path = _write_csv(tmp_path / "big.csv", rows)
    database = tmp_path / "canhbao.db"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CANHBAO_")}
    environ |= {"CANHBAO_DATABASE__URL": f"sqlite:///{database}", "CANHBAO_SUBSCRIBERS__REJECTS_DIR": str(rejects)}
    child = subprocess.Popen(
        [sys.executable, "-m", "dispatcher", "subscribers", "import", str(path)],
        env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
    )  # fmt: skip
    while not (rejects.exists() and any(rejects.iterdir())) and child.poll() is None:
        time.sleep(0.01)
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130, err
    assert "Ctrl-C): không có gì thay đổi" in err and "Traceback" not in err
    with contextlib.closing(sqlite3.connect(database)) as conn:
        assert conn.execute("SELECT count(*) FROM subscribers").fetchone() == (0,)
    assert not list(rejects.iterdir()), (list(rejects.iterdir()), err)
