"""Subscriber import: CSV/XLSX rows → validated records → one transaction of set-based SQL.

Rows stream through in batches (memory stays flat for a million rows) into a temporary staging
table; duplicates inside the file, updates and additions are then each one SQL statement. The
whole import commits at the end or not at all: a crash or Ctrl-C leaves the database as it was.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import unicodedata
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import Connection, Engine, delete, func, insert, select, update

from dispatcher import queue
from dispatcher.audit import audit
from dispatcher.config import SubscriberSettings
from dispatcher.db import driver_time
from dispatcher.domain import Audience, Channel, audience_mask, fold
from dispatcher.errors import CanhBaoError, ConfigError, InputRejected, NotFound, UsageError
from dispatcher.formats import number
from dispatcher.models import subscribers, suppressions
from dispatcher.phones import Carrier, InvalidNumber, PhoneBook, mask, parse_carrier
from dispatcher.regions import SCHEME_2025, AmbiguousRegion, Level, RegionIndex, Unit, UnknownRegion

# Header spellings people use, folded and stripped of everything but letters and digits.
COLUMNS = {
    "msisdn": ["msisdn", "phone", "phonenumber", "mobile", "sodienthoai", "sdt", "dienthoai", "sothuebao"],
    "province": ["province", "provincecode", "tinh", "tinhthanhpho", "tinhthanh", "matinh", "thanhpho"],
    "commune": ["commune", "communecode", "ward", "xa", "xaphuong", "phuongxa", "phuong", "maxa"],
    "legacy_district": ["legacydistrict", "district", "huyen", "quanhuyen", "huyencu", "quanhuyencu"],
    "audiences": ["audiences", "audience", "doituong", "nhomdoituong", "nhom"],
    "channels": ["channels", "channel", "kenh", "kenhnhan"],
    "carrier": ["carrier", "nhamang", "mang"],
    "opt_out": ["optout", "optedout", "tuchoi", "tuchoinhan", "huydangky"],
}
FIELDS = ("msisdn", "province", "commune", "legacy_district", "audiences", "channels", "carrier", "opt_out")
_HEADER_ALIASES = {alias: name for name, aliases in COLUMNS.items() for alias in aliases}
_TRUE = {"1", "x", "yes", "y", "true", "co", "da tu choi", "tu choi", "opt out", "optout"}
_FALSE = {"", "0", "no", "n", "false", "khong"}
_LIST_SPLIT = re.compile(r"[,;|/]")

STAGING_COLUMNS = (
    "rowno", "msisdn", "carrier", "carrier_declared", "province_code", "commune_code",
    "legacy_district_code", "audience_mask", "channel_mask", "opt_out",
)  # fmt: skip


SQLITE_IMPORT_CACHE_KIB = 128 * 1024
log = structlog.get_logger(__name__)


class RowRejected(ValueError):
    """One row cannot be imported; the message says why, in Vietnamese."""


class ImportInterrupted(CanhBaoError):
    """Ctrl-C stopped an import before it committed: the database is as it was."""

    exit_code = 130  # as a shell reports a process ended by SIGINT

    def __init__(self) -> None:
        super().__init__(
            "Đã dừng theo yêu cầu (Ctrl-C): không có gì thay đổi — mỗi lần nhập là một giao dịch, "
            "cơ sở dữ liệu giữ nguyên như trước khi nhập."
        )


class BrokenRow(RowRejected):
    """A row the CSV reader could not split into cells; `text` is the start of it as written."""

    def __init__(self, reason: str, text: str) -> None:
        super().__init__(reason)
        self.text = text


@dataclass(frozen=True)
class ImportSummary:
    """What an import did.

    `duplicates` are earlier rows of a number the file repeats (the last row is the one used);
    they are listed in the rejects file but are not `rejected`. `refusals_applied` counts new
    subscribers who arrive opted out because they had refused before we held their number.
    """

    rows: int
    added: int
    updated: int
    unchanged: int
    rejected: int
    rejects_file: Path | None
    ignored_columns: tuple[str, ...] = ()
    duplicates: int = 0
    refusals_applied: int = 0
    encoding: str | None = None  # a key of ENCODINGS; None for XLSX or generated rows

    def to_json(self) -> dict[str, object]:
        """The document `canhbao subscribers import --json` prints."""
        return {
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "rejected": self.rejected,
            "duplicates": self.duplicates,
            "refusals_applied": self.refusals_applied,
            "rejects_file": str(self.rejects_file) if self.rejects_file else None,
            "rows": self.rows,
            "encoding": self.encoding,
            "ignored_columns": list(self.ignored_columns),
        }

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> ImportSummary:
        """The summary `to_json` wrote (a web import's, read back by another process)."""
        rejects = document["rejects_file"]
        return cls(document["rows"], document["added"], document["updated"], document["unchanged"],
                   document["rejected"], Path(rejects) if rejects else None, tuple(document["ignored_columns"]),
                   document["duplicates"], document["refusals_applied"], document["encoding"])  # fmt: skip


# -- reading files ------------------------------------------------------------------------

# Encodings a CSV is read in (codec → how a user knows it): what Excel writes when saving as
# "CSV UTF-8", "Unicode Text" and, on a Vietnamese Windows, plain "CSV".
ENCODINGS = {
    "utf-8": "UTF-8",
    "utf-8-sig": "UTF-8 (có BOM)",
    "utf-16": 'UTF-16 (Excel "Unicode Text")',
    "windows-1258": "Windows-1258 (CSV của Excel trên Windows tiếng Việt), đã chuyển sang Unicode dựng sẵn (NFC)",
}
_SAVE_AS = 'Trong Excel, chọn Lưu thành (Save As) → "CSV UTF-8 (Comma delimited) (*.csv)" rồi nhập lại.'
_SCAN_CHUNK = 1 << 20
# Windows-1258 writes most tones as a combining mark after the letter: a file is taken for
# Vietnamese only if it has such marks or letters no Western code page has, and every other
# non-ASCII character is a Vietnamese letter or typographic punctuation.
_TONES = "\u0300\u0301\u0303\u0309\u0323"
_VIETNAMESE = frozenset(
    unicodedata.normalize("NFC", base + tone) for base in "aăâeêioôơuưyAĂÂEÊIOÔƠUƯY" for tone in ["", *_TONES]
) | frozenset("đĐ\u00a0“”‘’–—…•·°«»")
_ONLY_VIETNAMESE = frozenset("ăĂđĐơƠưƯ" + _TONES)


@dataclass(frozen=True)
class SourceFile:
    """A subscriber file opened for reading: its header, its data rows, and the encoding of its text."""

    header: list[str]
    rows: Iterator[list[str] | BrokenRow]  # a BrokenRow stands for a row that could not be split into cells
    encoding: str | None  # a key of ENCODINGS; None for XLSX


def read_rows(path: Path) -> SourceFile:
    """Open a CSV (UTF-8 with or without BOM, UTF-16 with BOM, Windows-1258) or XLSX file."""
    if path.is_dir():
        raise UsageError(f"{path} là một thư mục, không phải tệp: hãy chỉ ra tệp CSV hoặc XLSX.")
    if not path.is_file():
        raise NotFound(f"Không tìm thấy tệp {path}.")
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".txt", ".tsv"):
            return _read_csv(path)
        if suffix in (".xlsx", ".xlsm"):
            return _read_xlsx(path)
    except PermissionError as exc:
        raise UsageError(f"Không có quyền đọc tệp {path}.") from exc
    raise UsageError(f"Tệp {path}: chỉ nhận CSV hoặc XLSX, không nhận '{suffix or 'không đuôi'}'.")


def detect_encoding(path: Path) -> str:
    """The encoding a CSV was saved in (a key of ENCODINGS); anything else is refused, naming Excel's choice."""
    with path.open("rb") as fh:
        head = fh.read(64 * 1024)
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"
    elif head.startswith(codecs.BOM_UTF8):
        encoding = "utf-8-sig"
    elif b"\x00" in head:
        raise InputRejected(f"Tệp {path} có byte 0 mà không có dấu BOM: không rõ bảng mã. {_SAVE_AS}")
    else:
        encoding = "utf-8"
    line = _first_bad_line(path, encoding)
    if line is None:
        return encoding
    if encoding == "utf-8" and _looks_vietnamese(path):
        return "windows-1258"
    raise InputRejected(
        f"Tệp {path}: dòng {line} không đọc được bằng {ENCODINGS[encoding]}; chỉ nhận UTF-8, "
        f'UTF-16 (Excel "Unicode Text") và Windows-1258 tiếng Việt. {_SAVE_AS}'
    )


def _first_bad_line(path: Path, encoding: str) -> int | None:
    """The line of the first byte that is not `encoding`, or None when the whole file decodes."""
    decoder = codecs.getincrementaldecoder(encoding)()
    lines = 1
    with path.open("rb") as fh:
        while chunk := fh.read(_SCAN_CHUNK):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                return lines + chunk[: max(exc.start, 0)].count(b"\n")
            lines += chunk.count(b"\n")
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return lines
    return None


def _looks_vietnamese(path: Path) -> bool:
    """Whether the file decodes as Windows-1258 into Vietnamese text (see _VIETNAMESE)."""
    distinct = False
    try:
        with path.open(encoding="windows-1258", newline="") as fh:
            for line in fh:
                if line.isascii():
                    continue
                composed = unicodedata.normalize("NFC", line)
                if not all(ch.isascii() or ch in _VIETNAMESE for ch in composed):
                    return False
                distinct = distinct or not _ONLY_VIETNAMESE.isdisjoint(line)
    except UnicodeDecodeError:
        return False
    return distinct


def _read_csv(path: Path) -> SourceFile:
    encoding = detect_encoding(path)
    handle = path.open("r", encoding=encoding, newline="")
    sample = handle.read(64 * 1024)
    handle.seek(0)
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(sample.split("\n", 1)[0], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel  # one column only: no delimiter to find
    compose = encoding == "windows-1258"  # base letter + combining tone → the precomposed letter
    lines = _Lines((unicodedata.normalize("NFC", line) for line in handle) if compose else handle)
    reader = csv.reader(lines, dialect)
    header = next(reader, None)
    if header is None:
        handle.close()
        raise InputRejected(f"Tệp {path} trống.")
    records = _records(reader, lines, len(header), dialect.delimiter, dialect.quotechar or '"')
    return SourceFile(header, _closing(records, handle), encoding)


class _Lines:
    """A file's lines as the csv reader takes them, keeping the current row's lines to read them again."""

    def __init__(self, source: Iterable[str]) -> None:
        self._source = iter(source)
        self._again: deque[str] = deque()
        self.taken: list[str] = []

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        line = self._again.popleft() if self._again else next(self._source)
        self.taken.append(line)
        return line

    def reread_after_first(self) -> None:
        """The current row was broken: its lines after the first are read again, as rows of their own."""
        self._again.extendleft(reversed(self.taken[1:]))
        self.taken.clear()


def _records(
    reader: Iterator[list[str]], lines: _Lines, width: int, delimiter: str, quote: str
) -> Iterator[list[str] | BrokenRow]:
    """The data rows; a row the reader cannot split comes as a BrokenRow, and reading goes on after it."""
    while True:
        lines.taken.clear()
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # mostly a cell over csv.field_size_limit (128 KB)
            too_long = "field larger" in str(exc)
            yield _broken(lines, "có ô dài hơn 128 KB: không đọc dòng này" if too_long else "không đọc được như CSV")
            continue
        if len(lines.taken) > 1 and _swallowed(lines.taken, width, delimiter, quote):
            yield _broken(lines, "")
            continue
        yield row


def _swallowed(taken: list[str], width: int, delimiter: str, quote: str) -> bool:
    """Whether a row read over several lines is an unclosed quote that took in the rows after it.

    A cell may hold a line break (Alt+Enter in Excel); a quote never closed (an odd count), or a
    following line with a whole row's separators, is not that.
    """
    if "".join(taken).count(quote) % 2:
        return True
    return any(line.count(delimiter) >= width - 1 for line in taken[1:])


def _broken(lines: _Lines, reason: str) -> BrokenRow:
    text = lines.taken[0].rstrip("\r\n") if lines.taken else ""
    if len(lines.taken) > 1:
        reason = 'dấu ngoặc kép (") mở ở dòng này không được đóng; các dòng sau được đọc lại riêng'
    lines.reread_after_first()
    return BrokenRow(reason, text[:60])


def _closing[T](rows: Iterator[T], handle: io.IOBase) -> Iterator[T]:
    with handle:
        yield from rows


def _read_xlsx(path: Path) -> SourceFile:
    import zipfile

    from openpyxl import load_workbook

    try:
        book = load_workbook(path, read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise InputRejected(
            f"Tệp {path} không phải tệp Excel .xlsx hợp lệ (hỏng, hoặc là định dạng khác mang đuôi .xlsx): "
            "hãy mở bằng Excel và lưu lại dạng .xlsx hoặc CSV UTF-8."
        ) from exc
    rows = (list(map(_cell_text, row)) for row in book.worksheets[0].iter_rows(values_only=True))
    header = next(rows, None)
    if header is None:
        book.close()
        raise InputRejected(f"Tệp {path} trống.")
    return SourceFile(header, _closing_book(rows, book), None)


def _closing_book(rows: Iterator[list[str]], book: object) -> Iterator[list[str]]:
    try:
        yield from rows
    finally:
        book.close()  # type: ignore[attr-defined]


def _cell_text(value: object) -> str:
    """A cell as text; numbers typed into Excel lose their leading 0, which normalisation restores."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def map_header(header: list[str], source: str) -> tuple[dict[str, int], tuple[str, ...]]:
    """Column positions by field name, and the columns nobody asked for."""
    positions: dict[str, int] = {}
    ignored = []
    for index, title in enumerate(header):
        key = re.sub(r"[^a-z0-9]", "", fold(title or ""))
        name = _HEADER_ALIASES.get(key)
        if name is None or name in positions:
            ignored.append(title)
        else:
            positions[name] = index
    if "msisdn" not in positions:
        found = ", ".join(repr(t) for t in header) or "không có"
        raise InputRejected(f"Tệp {source}: thiếu cột số điện thoại (msisdn / số điện thoại); các cột có: {found}.")
    if not {"province", "commune", "legacy_district"} & positions.keys():
        raise InputRejected(f"Tệp {source}: cần ít nhất một cột tỉnh/thành phố, xã/phường hoặc quận/huyện (cũ).")
    return positions, tuple(t for t in ignored if t)


# -- validating rows ----------------------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    """Where a subscriber lives, in codes of scheme 2025 (plus the legacy district if known)."""

    province_code: int
    commune_code: int | None
    legacy_district_code: int | None


@dataclass
class RowParser:
    """Turns one file row into a staging tuple, caching every per-value decision."""

    regions: RegionIndex
    positions: dict[str, int]
    phones: PhoneBook = field(default_factory=PhoneBook)
    _places: dict[tuple[str, str, str], Placement | RowRejected] = field(default_factory=dict)
    _audiences: dict[str, int | RowRejected] = field(default_factory=dict)
    _channels: dict[str, int | RowRejected] = field(default_factory=dict)
    _carriers: dict[str, Carrier | RowRejected] = field(default_factory=dict)
    _flags: dict[str, bool | RowRejected] = field(default_factory=dict)

    def parse(self, rowno: int, row: list[str]) -> tuple[object, ...]:
        """The staging tuple for `row`, or RowRejected with the reason."""
        msisdn, province, commune, district, audiences, channels, carrier, opt_out = self._cells(row)
        try:
            number = self.phones.normalize(msisdn)
        except InvalidNumber as exc:
            raise RowRejected(str(exc)) from None
        place = _cached(self._places, (province, commune, district), self._place)
        return (
            rowno, number.e164,
            str(_cached(self._carriers, carrier, _carrier)) if carrier else str(number.carrier), bool(carrier),
            place.province_code, place.commune_code, place.legacy_district_code,
            _cached(self._audiences, audiences, _audiences) if audiences else None,
            _cached(self._channels, channels, _channels) if channels else None,
            _cached(self._flags, opt_out, _flag) if opt_out else False,
        )  # fmt: skip

    def _cells(self, row: list[str]) -> list[str]:
        """The stripped cells of FIELDS, '' where the column is absent or the row short."""
        width = len(row)
        return [row[i].strip() if 0 <= i < width else "" for i in self._indexes]

    def __post_init__(self) -> None:
        self._indexes = [self.positions.get(name, -1) for name in FIELDS]

    def _place(self, key: tuple[str, str, str]) -> Placement:
        province_text, commune_text, district_text = key
        province = self._province(province_text) if province_text else None
        district = self._district(district_text, province) if district_text else None
        if commune_text:
            commune = self._commune(commune_text, province, district)
            return Placement(commune.province_code, commune.code, district.code if district else None)
        if district is not None:
            return Placement(self._province_of_district(district, province), None, district.code)
        if province is not None:
            return Placement(province.code, None, None)
        raise RowRejected("thiếu tỉnh/thành phố, xã/phường hoặc quận/huyện (cũ)")

    def _province(self, text: str) -> Unit:
        unit = _one(self.regions, text, Level.PROVINCE, "tỉnh/thành phố")
        if unit.scheme == SCHEME_2025:
            return unit
        provinces = self.regions.current_provinces(unit)
        return self.regions.province(provinces[0]) if len(provinces) == 1 else unit

    def _district(self, text: str, province: Unit | None) -> Unit:
        return _one(self.regions, text, Level.DISTRICT, "quận/huyện (cũ)", province)

    def _commune(self, text: str, province: Unit | None, district: Unit | None) -> Unit:
        unit = _one(self.regions, text, Level.COMMUNE, "xã/phường", province, district)
        if unit.scheme == SCHEME_2025:
            return unit
        covers = self.regions.covering_communes(unit)
        if len(covers) != 1:
            names = ", ".join(c.unit.name for c in covers)
            raise RowRejected(f"xã/phường cũ '{unit.name}' nay thuộc nhiều xã/phường ({names}): hãy ghi tên mới")
        return covers[0].unit

    def _province_of_district(self, district: Unit, province: Unit | None) -> int:
        provinces = self.regions.current_provinces(district)
        if province is not None and province.scheme == SCHEME_2025:
            if province.code not in provinces:
                raise RowRejected(f"quận/huyện (cũ) '{district.name}' không thuộc {province.name}")
            return province.code
        return provinces[0]


def _one(
    regions: RegionIndex, text: str, level: Level, what: str, scope: Unit | None = None, tiebreak: Unit | None = None
) -> Unit:
    """The unit a cell names inside the row's `scope`; `tiebreak` (its old district) settles namesakes.

    The old district only narrows: a person who moved keeps it while living elsewhere now.
    """
    try:
        return regions.one(text, frozenset({level}), inside=scope)
    except AmbiguousRegion as exc:
        inside = [u for u in exc.candidates if tiebreak is not None and regions.contains(tiebreak, u)]
        if len(inside) == 1:
            return inside[0]
        raise RowRejected(_ambiguous(what, text, exc)) from None
    except UnknownRegion as exc:
        where = f" trong {scope.label}" if scope is not None else ""
        raise RowRejected(f"không tìm thấy {what} '{text}'{where}{exc.hint}") from None


def _ambiguous(what: str, text: str, exc: AmbiguousRegion) -> str:
    """The row error for a name several units share: what to write instead."""
    shown = "; ".join(f"'{choice}'" for choice in exc.choices[:3])
    more = f" (và {number(len(exc.candidates) - 3)} nơi khác)" if len(exc.candidates) > 3 else ""
    return (
        f"{what} '{text}' không rõ ràng ({number(len(exc.candidates))} nơi): điền thêm cột tỉnh/thành phố "
        f"hoặc quận/huyện (cũ), hoặc ghi một trong: {shown}{more}"
    )


def _cached[K, V](cache: dict[K, V | RowRejected], key: K, compute: Callable[[K], V]) -> V:
    """compute(key) once per distinct key; a rejection is remembered and raised again."""
    try:
        value = cache[key]
    except KeyError:
        try:
            value = cache[key] = compute(key)
        except RowRejected as exc:
            value = cache[key] = exc
    if isinstance(value, RowRejected):
        raise RowRejected(*value.args)
    return value


def _carrier(text: str) -> Carrier:
    try:
        return parse_carrier(text)
    except InvalidNumber as exc:
        raise RowRejected(str(exc)) from None


def _audiences(text: str) -> int:
    """The audience mask of a cell like 'học sinh, sinh viên; người cao tuổi'."""
    chosen = set()
    for part in filter(None, (p.strip() for p in _LIST_SPLIT.split(text))):
        try:
            chosen.add(Audience.parse(part))
        except ValueError:
            known = ", ".join(a.slug for a in Audience)
            raise RowRejected(f"nhóm đối tượng không rõ '{part}' (nhận: {known} hoặc tên tiếng Việt)") from None
    return audience_mask(chosen)


def _channels(text: str) -> int:
    mask = 0
    for part in filter(None, (fold(p) for p in _LIST_SPLIT.split(text))):
        match = {"sms": Channel.SMS, "tin nhan": Channel.SMS, "zalo": Channel.ZALO}.get(part)
        if match is None:
            raise RowRejected(f"kênh không rõ '{part}' (nhận: sms, zalo)")
        mask |= match.mask
    return mask


def _flag(text: str) -> bool:
    key = fold(text)
    if key in _TRUE:
        return True
    if key in _FALSE:
        return False
    raise RowRejected(f"cột từ chối nhận tin có giá trị không rõ '{text}' (dùng 1/0, có/không)")


# -- storing ------------------------------------------------------------------------------


@dataclass
class Staging:
    """The temporary table one import fills, on the import's own connection."""

    conn: Connection
    name: str = "import_rows"

    def create(self) -> None:
        """An empty staging table, private to this connection."""
        if self.conn.dialect.name == "sqlite":
            # A million random-order index inserts thrash SQLite's default 2 MB page cache.
            self.conn.exec_driver_sql(f"PRAGMA cache_size = -{SQLITE_IMPORT_CACHE_KIB}")
        self.conn.exec_driver_sql(f"DROP TABLE IF EXISTS {self.name}")
        self.conn.exec_driver_sql(
            f"CREATE TEMPORARY TABLE {self.name} (rowno INTEGER NOT NULL, msisdn VARCHAR(16) NOT NULL, "
            "carrier VARCHAR(16) NOT NULL, carrier_declared BOOLEAN NOT NULL, province_code INTEGER NOT NULL, "
            "commune_code INTEGER, legacy_district_code INTEGER, audience_mask INTEGER, channel_mask INTEGER, "
            "opt_out BOOLEAN NOT NULL)"
        )

    def add(self, rows: list[tuple[object, ...]]) -> None:
        """Append a batch of staging tuples."""
        if not rows:
            return
        marks = ", ".join([self._mark()] * len(STAGING_COLUMNS))
        sql = f"INSERT INTO {self.name} ({', '.join(STAGING_COLUMNS)}) VALUES ({marks})"
        self.conn.exec_driver_sql(sql, rows)

    def drop_duplicates(self) -> list[tuple[int, str, int]]:
        """Remove earlier rows of a number the file repeats; returns (row, msisdn, kept row)."""
        self.conn.exec_driver_sql(f"CREATE INDEX ix_{self.name}_msisdn ON {self.name} (msisdn, rowno)")
        dupes = self.conn.exec_driver_sql(
            f"SELECT r.rowno, r.msisdn, last.keep FROM {self.name} r JOIN "
            f"(SELECT msisdn, max(rowno) AS keep FROM {self.name} GROUP BY msisdn HAVING count(*) > 1) last "
            "ON last.msisdn = r.msisdn WHERE r.rowno <> last.keep ORDER BY r.rowno"
        ).all()
        if dupes:
            self.conn.exec_driver_sql(
                f"DELETE FROM {self.name} WHERE rowno NOT IN (SELECT max(rowno) FROM {self.name} GROUP BY msisdn)"
            )
        return [tuple(d) for d in dupes]  # type: ignore[misc]

    def merge(self, now: datetime, source: str, defaults: tuple[int, int]) -> tuple[int, int, int]:
        """Update known numbers, insert new ones; returns (added, updated, unchanged).

        An empty cell leaves the stored value as it was (or takes the default for a new
        subscriber); an opt-out is never cleared by an import.
        """
        s, t, p = "subscribers", self.name, self._mark()
        now = driver_time(self.conn.dialect.name, now)
        known = self.conn.exec_driver_sql(f"SELECT count(*) FROM {t} JOIN {s} ON {s}.msisdn = {t}.msisdn").scalar()
        carrier = f"CASE WHEN {t}.carrier_declared OR NOT {s}.carrier_declared THEN {t}.carrier ELSE {s}.carrier END"
        assignments = {
            "carrier": carrier,
            "carrier_declared": f"({t}.carrier_declared OR {s}.carrier_declared)",
            "province_code": f"{t}.province_code",
            "commune_code": f"{t}.commune_code",
            "legacy_district_code": f"{t}.legacy_district_code",
            "audience_mask": f"COALESCE({t}.audience_mask, {s}.audience_mask)",
            "channel_mask": f"COALESCE({t}.channel_mask, {s}.channel_mask)",
            "opted_out_at": f"CASE WHEN {t}.opt_out THEN COALESCE({s}.opted_out_at, {p}) ELSE {s}.opted_out_at END",
        }
        # Only rows that change are written: re-importing the same list touches nothing.
        changed = " OR ".join(f"({s}.{column} IS DISTINCT FROM {value})" for column, value in assignments.items())
        updated = self.conn.exec_driver_sql(
            f"UPDATE {s} SET {', '.join(f'{c} = {v}' for c, v in assignments.items())}, updated_at = {p} "
            f"FROM {t} WHERE {t}.msisdn = {s}.msisdn AND ({changed})",
            (now, now, now),
        ).rowcount
        added = self.conn.exec_driver_sql(
            f"INSERT INTO {s} (msisdn, carrier, carrier_declared, province_code, commune_code, region_scheme, "
            "legacy_district_code, audience_mask, channel_mask, opted_out_at, source, purpose, created_at, "
            "updated_at) "
            f"SELECT msisdn, carrier, carrier_declared, province_code, commune_code, '{SCHEME_2025}', "
            f"legacy_district_code, COALESCE(audience_mask, {int(defaults[0])}), "
            f"COALESCE(channel_mask, {int(defaults[1])}), CASE WHEN opt_out THEN {p} END, "
            f"{p}, 'scam_awareness', {p}, {p} FROM {t} r "
            f"WHERE NOT EXISTS (SELECT 1 FROM {s} WHERE {s}.msisdn = r.msisdn)",
            (now, source[:200], now, now),
        ).rowcount
        return added, updated, (known or 0) - updated

    def apply_refusals(self, now: datetime) -> int:
        """Move held refusals (suppressions) onto the subscribers now holding their numbers; returns how many.

        A subscriber keeps the earliest refusal. Set-based and proportional to the suppression
        list, not to the import: both statements walk `suppressions` and look numbers up by index.
        """
        s, o, p = "subscribers", "suppressions", self._mark()
        refusal = f"(SELECT {o}.opted_out_at FROM {o} WHERE {o}.msisdn = {s}.msisdn)"
        self.conn.exec_driver_sql(
            f"UPDATE {s} SET opted_out_at = {refusal}, updated_at = {p} WHERE msisdn IN (SELECT msisdn FROM {o}) "
            f"AND (opted_out_at IS NULL OR opted_out_at > {refusal})",
            (driver_time(self.conn.dialect.name, now),),
        )
        return self.conn.exec_driver_sql(
            f"DELETE FROM {o} WHERE EXISTS (SELECT 1 FROM {s} WHERE {s}.msisdn = {o}.msisdn)"
        ).rowcount

    def _mark(self) -> str:
        """The driver's placeholder: sqlite3 takes '?', psycopg '%s'."""
        return "?" if self.conn.dialect.paramstyle == "qmark" else "%s"


@dataclass
class RejectsFile:
    """The report of refused rows: row number, the value as written, the reason in Vietnamese."""

    path: Path
    count: int = 0
    duplicates: int = 0
    _started: bool = False
    _handle: io.TextIOWrapper | None = None

    def add(self, rowno: int, value: str, reason: str) -> None:
        """Record one refused row."""
        self._write(rowno, value, reason)
        self.count += 1

    def add_duplicate(self, rowno: int, value: str, kept: int) -> None:
        """Record an earlier row of a number the file repeats: listed, but not a refusal."""
        self._write(rowno, value, f"trùng số với dòng {kept} (dùng dòng {kept})")
        self.duplicates += 1

    def _write(self, rowno: int, value: str, reason: str) -> None:
        if self._handle is None:
            self._started = True  # before the file exists: Ctrl-C may come while it is being opened
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = self.path.open("w", encoding="utf-8-sig", newline="")
            self._writer = csv.writer(self._handle)
            self._writer.writerow(["dòng", "số điện thoại", "lý do"])
        self._writer.writerow([rowno, value, reason])

    def close(self, keep: bool) -> Path | None:
        """Finish the report; without `keep` (the import failed) it is removed."""
        if not self._started:
            return None
        if self._handle is not None:
            self._handle.close()
        if not keep:
            self.path.unlink(missing_ok=True)
            return None
        return self.path


@dataclass
class SubscriberImporter:
    """Imports subscriber files into the database, one transaction per file."""

    engine: Engine
    regions: RegionIndex
    rejects_dir: Path
    batch_size: int = 20_000
    default_audiences: int = Audience.PUBLIC.mask
    default_channels: int = Channel.SMS.mask

    def import_file(
        self, path: Path, now: datetime, on_progress: Callable[[int], None] | None = None, *, actor: str | None = None
    ) -> ImportSummary:
        """Validate every row of `path`, then add or update subscribers; see the module doc.

        With `actor` the import is audited in its own transaction (the faces pass the person; tests may not).
        """
        try:
            source = read_rows(path)
        except KeyboardInterrupt:
            raise ImportInterrupted() from None
        positions, ignored = map_header(source.header, str(path))
        rejects = RejectsFile(self.rejects_dir / f"{path.stem}-{now:%Y%m%d-%H%M%S}.rejects.csv")
        summary = self.load(
            source.rows, RowParser(self.regions, positions), now, f"file:{path.name}",
            rejects, ignored, on_progress, msisdn_column=positions["msisdn"], actor=actor,
        )  # fmt: skip
        return replace(summary, encoding=source.encoding)

    def load(
        self,
        rows: Iterable[list[str] | BrokenRow],
        parser: RowParser,
        now: datetime,
        source: str,
        rejects: RejectsFile,
        ignored: tuple[str, ...] = (),
        on_progress: Callable[[int], None] | None = None,
        msisdn_column: int = 0,
        actor: str | None = None,
    ) -> ImportSummary:
        """Stage, de-duplicate and merge `rows` (data rows numbered from 2, as a spreadsheet shows).

        Ctrl-C before the commit raises ImportInterrupted: the transaction is rolled back.
        """
        ok = False
        log.info("subscribers.import.started", source=source)
        try:
            with self.engine.begin() as conn:
                staging = Staging(conn)
                staging.create()
                total = self._stage(rows, parser, staging, rejects, on_progress, msisdn_column)
                for rowno, msisdn, kept in staging.drop_duplicates():
                    rejects.add_duplicate(rowno, msisdn, kept)
                added, updated, unchanged = staging.merge(now, source, (self.default_audiences, self.default_channels))
                applied = staging.apply_refusals(now)
                conn.exec_driver_sql(f"DROP TABLE {staging.name}")
                if actor is not None:
                    counts = {
                        "rows": total,
                        "added": added,
                        "updated": updated,
                        "unchanged": unchanged,
                        "rejected": rejects.count,
                        "duplicates": rejects.duplicates,
                        "refusals_applied": applied,
                    }
                    audit(conn, now, actor, "subscribers.import", source, counts)  # fmt: skip
            ok = True
        except KeyboardInterrupt:
            raise ImportInterrupted() from None
        finally:
            rejects_path = rejects.close(keep=ok)
            if not ok:
                log.warning("subscribers.import.rolled_back", source=source)
        summary = ImportSummary(
            total, added, updated, unchanged, rejects.count, rejects_path, ignored, rejects.duplicates, applied
        )
        log.info("subscribers.import.finished", source=source, **summary.to_json())
        return summary

    def _stage(
        self,
        rows: Iterable[list[str] | BrokenRow],
        parser: RowParser,
        staging: Staging,
        rejects: RejectsFile,
        on_progress: Callable[[int], None] | None,
        msisdn_column: int,
    ) -> int:
        batch: list[tuple[object, ...]] = []
        total = 0
        for total, row in enumerate(rows, start=1):
            if isinstance(row, BrokenRow):
                rejects.add(total + 1, row.text, str(row))
                continue
            if not any(cell.strip() for cell in row if cell):
                continue  # blank lines at the end of spreadsheets are not errors
            try:
                batch.append(parser.parse(total + 1, row))
            except RowRejected as exc:
                value = row[msisdn_column] if msisdn_column < len(row) else ""
                rejects.add(total + 1, value, str(exc))
                log.debug("subscribers.import.row_rejected", row=total + 1, msisdn=value, reason=str(exc))
            if len(batch) >= self.batch_size:
                staging.add(batch)
                batch.clear()
                if on_progress:
                    on_progress(total)
        staging.add(batch)
        if on_progress:
            on_progress(total)
        return total


def importer_for(engine: Engine, regions: RegionIndex, settings: SubscriberSettings) -> SubscriberImporter:
    """The importer the deployment's `[subscribers]` settings describe (rejects folder, batch, defaults)."""
    try:
        audience_bits = audience_mask({Audience.parse(a) for a in settings.default_audiences})
    except ValueError as exc:
        raise ConfigError(f"Cấu hình subscribers.default_audiences: nhóm không rõ {exc}.") from exc
    channel_bits = sum(ch.mask for ch in Channel if ch.slug in settings.default_channels)
    return SubscriberImporter(engine, regions, settings.rejects_dir, settings.batch_size, audience_bits, channel_bits)


class OptOut(Enum):
    """What `set_opt_out` did."""

    SUBSCRIBER = "subscriber"  # the subscriber's own record says so now (or already did)
    HELD = "held"  # not a subscriber yet: the refusal is kept on the suppression list for later imports
    LIFTED = "lifted"  # not a subscriber: a held refusal was withdrawn
    UNKNOWN = "unknown"  # opt-in of a number neither held nor refused: nothing was done


def set_opt_out(
    conn: Connection, msisdn: str, opted_out: bool, now: datetime, actor: str = "system", via: dict | None = None
) -> OptOut:
    """Record that a person refuses (or, again, accepts) our messages, and audit it (`via`: where it came from).

    A subscriber's refusal cancels, in the caller's transaction, their messages of live blasts
    that no worker has claimed yet (state `cancelled`, error code OPTED-OUT, the reason in `error`).

    A refusal of a number we do not hold is kept (Decree 91/2020: a refusal is honoured), and
    the import that brings the number in applies it. The first refusal's time is the one kept.
    """
    detail = dict(via or {})
    change: dict[str, Any] = {}
    subscriber = find_subscriber(conn, msisdn)
    if subscriber is not None:
        _set_subscriber_opt_out(conn, msisdn, opted_out, now)
        if opted_out:
            reason = _opt_out_reason(actor, detail)
            detail["cancelled_messages"] = queue.cancel_for_subscriber(conn, subscriber["id"], now, reason)
        outcome = OptOut.SUBSCRIBER
        change = {"before": {"opted_out": subscriber["opted_out_at"] is not None}, "after": {"opted_out": opted_out}}
    elif opted_out:
        _hold_refusal(conn, msisdn, now, actor)
        outcome = OptOut.HELD
    else:
        lifted = conn.execute(delete(suppressions).where(suppressions.c.msisdn == msisdn)).rowcount
        outcome = OptOut.LIFTED if lifted else OptOut.UNKNOWN
    if outcome is not OptOut.UNKNOWN:
        action = "subscriber.opt_out" if opted_out else "subscriber.opt_in"
        audit(conn, now, actor, action, mask(msisdn), {"outcome": outcome.value, **detail}, **change)
    return outcome


def _opt_out_reason(actor: str, via: dict) -> str:
    """What a cancelled message's log says: who recorded the refusal, and through which gateway."""
    gateway = via.get("gateway")
    return f"person opted out: {actor}" + (f" via {gateway}" if gateway else "")


def _set_subscriber_opt_out(conn: Connection, msisdn: str, opted_out: bool, now: datetime) -> None:
    statement = update(subscribers).where(subscribers.c.msisdn == msisdn)
    if opted_out:
        statement = statement.where(subscribers.c.opted_out_at.is_(None))
    conn.execute(statement.values(opted_out_at=now if opted_out else None, updated_at=now))
    if not opted_out:  # a refusal held before the number was imported must not come back either
        conn.execute(delete(suppressions).where(suppressions.c.msisdn == msisdn))


def _hold_refusal(conn: Connection, msisdn: str, now: datetime, actor: str) -> None:
    if held_refusal(conn, msisdn) is None:
        conn.execute(insert(suppressions).values(msisdn=msisdn, opted_out_at=now, recorded_by=actor))


def held_refusal(conn: Connection, msisdn: str) -> datetime | None:
    """When the person behind a number we do not hold refused our messages, or None."""
    return conn.execute(select(suppressions.c.opted_out_at).where(suppressions.c.msisdn == msisdn)).scalar()


def held_refusals(conn: Connection) -> int:
    """How many refusals are held for numbers not (yet) among the subscribers."""
    return conn.execute(select(func.count()).select_from(suppressions)).scalar() or 0


def find_subscriber(conn: Connection, msisdn: str) -> dict[str, object] | None:
    """One subscriber's stored row, or None."""
    row = conn.execute(select(subscribers).where(subscribers.c.msisdn == msisdn)).mappings().first()
    return dict(row) if row else None


def stats(conn: Connection) -> dict[str, object]:
    """Subscribers and opt-outs by province and carrier, their total, and the refusals held for numbers not imported."""
    s = subscribers.c
    counted = select(s.province_code, s.carrier, func.count(), func.count(s.opted_out_at))
    rows = conn.execute(counted.group_by(s.province_code, s.carrier)).all()
    groups = [{"province_code": p, "carrier": c, "subscribers": n, "opted_out": o} for p, c, n, o in rows]
    return {"groups": groups, "total": sum(g["subscribers"] for g in groups), "held_refusals": held_refusals(conn)}
