"""Regions: today's provinces and communes (scheme 2025), and the legacy units they replaced.

Everything is keyed on NSO codes from the `vietnam-provinces` package; a code always travels
with its scheme because commune codes were reused in 2025. Names resolve accent- and
case-insensitively, with or without their "Tỉnh/Thành phố/Xã/Phường/Huyện…" prefix (or the
clerk's "P.", "Q.", "TX."…), and may name their place around them ("Phường 1, Quận 3, TP.HCM").
A number inside a name is part of it ("Quận 1"); a code is digits alone (today's scheme) or
carries the marker every message shows ("mã xã cũ 20410"). A legacy name resolves to the
communes of today that cover it, each flagged `partial` when it was formed only partly from
that legacy unit.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache

from dispatcher.domain import fold
from dispatcher.errors import NotFound, UsageError
from dispatcher.formats import number

SCHEME_2025 = "2025"
SCHEME_LEGACY = "legacy"


class Level(StrEnum):
    """Administrative levels a name can denote."""

    PROVINCE = "province"
    """Tỉnh / thành phố trực thuộc trung ương."""
    DISTRICT = "district"
    """Huyện / quận / thị xã / thành phố thuộc tỉnh: abolished on 1 July 2025."""
    COMMUNE = "commune"
    """Xã / phường / đặc khu (thị trấn before 2025)."""


@dataclass(frozen=True)
class Unit:
    """One administrative unit of one scheme."""

    code: int
    name: str
    level: Level
    scheme: str
    province_code: int
    district_code: int | None = None
    kind: str = ""
    """The folded division type: 'tinh', 'thanh pho', 'huyen', 'xa', 'phuong', 'thi tran'…"""

    @property
    def label(self) -> str:
        """The name, marked when it is a unit that no longer exists."""
        return f"{self.name} (cũ)" if self.scheme == SCHEME_LEGACY else self.name


@dataclass(frozen=True)
class CommuneCover:
    """A commune of today covering (part of) what a query named."""

    unit: Unit
    partial: bool


@dataclass(frozen=True)
class Resolution:
    """What a region name denotes today."""

    query: str
    matched: Unit
    provinces: tuple[Unit, ...]
    communes: tuple[CommuneCover, ...]
    whole_province: bool

    @property
    def today(self) -> tuple[Unit, ...]:
        """The provinces of today it lies in (`provinces` also names a legacy unit's old province)."""
        return tuple(p for p in self.provinces if p.scheme == SCHEME_2025)

    def to_json(self) -> dict[str, object]:
        """The document `canhbao regions show NAME --json` prints."""
        return {
            "query": self.query,
            "matched": {"code": self.matched.code, "name": self.matched.name,
                        "level": str(self.matched.level), "scheme": self.matched.scheme},
            "whole_province": self.whole_province,
            "provinces": [{"code": p.code, "name": p.name, "scheme": p.scheme} for p in self.provinces],
            "communes": [
                {"code": c.unit.code, "name": c.unit.name, "province_code": c.unit.province_code,
                 "partial": c.partial}
                for c in self.communes
            ],
        }  # fmt: skip


class UnknownRegion(NotFound):
    """No unit has that name or code."""

    hint = ""
    """What comes close ('; gần giống: …', or the old unit a bare code belonged to)."""


class AmbiguousRegion(UsageError):
    """Several units have that name; the message asks which, one candidate per line.

    Each line is text that selects exactly that candidate (its name inside its province, and
    its code marker): the whole line, the name part or the bracketed code can be fed back.
    """

    SHOWN = 20

    def __init__(self, query: str, candidates: list[Unit], index: RegionIndex) -> None:
        self.candidates = candidates
        self.choices = [index.choice(unit) for unit in candidates[: self.SHOWN]]
        lines = [
            f"Tên địa danh {query!r} không rõ ràng ({number(len(candidates))} nơi): bạn muốn nói nơi nào? "
            "Ghi lại một dòng dưới đây (hoặc chỉ mã trong ngoặc):",
            *(f"  {choice}" for choice in self.choices),
        ]
        if len(candidates) > self.SHOWN:
            rest = number(len(candidates) - self.SHOWN)
            lines.append(f"  … và {rest} nơi khác: ghi thêm tỉnh/thành phố để thu hẹp.")
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class NameKey:
    """A name reduced for comparison, with what its prefix said about the unit."""

    key: str
    levels: frozenset[Level]
    kind: str | None
    aliases: tuple[str, ...] = ()
    """Keys of provinces the name is a common short form of ('sai gon' → 'ho chi minh')."""
    spelling: str = ""
    """The name as written, accents kept (tone marks moved to the end of each word)."""


@dataclass(frozen=True)
class CodeKey:
    """An input that is a code: digits alone, or with a marker such as 'mã xã cũ 20410'."""

    code: int
    levels: frozenset[Level]
    legacy: bool


_ALL_LEVELS = frozenset(Level)
_PROVINCE_OR_DISTRICT = frozenset({Level.PROVINCE, Level.DISTRICT})
_PROVINCE = frozenset({Level.PROVINCE})
_DISTRICT = frozenset({Level.DISTRICT})
_COMMUNE = frozenset({Level.COMMUNE})
# Prefixes, longest first: the levels each allows and the division type it names. The
# abbreviations are what clerks write: "P. Hải Châu", "Q.Hải Châu", "TX. Điện Bàn", "TT. Nam Phước".
_PREFIXES: list[tuple[str, frozenset[Level], str | None]] = [
    ("thanh pho truc thuoc trung uong ", _PROVINCE, None),
    ("thanh pho ", _PROVINCE_OR_DISTRICT, "thanh pho"),
    ("tp. ", _PROVINCE_OR_DISTRICT, "thanh pho"),
    ("tp.", _PROVINCE_OR_DISTRICT, "thanh pho"),
    ("tp ", _PROVINCE_OR_DISTRICT, "thanh pho"),
    ("tinh ", _PROVINCE, "tinh"),
    ("huyen ", _DISTRICT, "huyen"),
    ("quan ", _DISTRICT, "quan"),
    ("thi xa ", _DISTRICT, "thi xa"),
    ("thi tran ", _COMMUNE, "thi tran"),
    ("phuong ", _COMMUNE, "phuong"),
    ("xa ", _COMMUNE, "xa"),
    ("dac khu ", _COMMUNE, "dac khu"),
    ("tx.", _DISTRICT, "thi xa"),
    ("tx ", _DISTRICT, "thi xa"),
    ("tt.", _COMMUNE, "thi tran"),
    ("tt ", _COMMUNE, "thi tran"),
    ("h.", _DISTRICT, "huyen"),
    ("q.", _DISTRICT, "quan"),
    ("p.", _COMMUNE, "phuong"),
    ("x.", _COMMUNE, "xa"),
]
# "Q1", "q 12", "P3": a lone letter then a number. ("H Bông", "P Rao" are real names, so a
# letter and a space before a word is not an abbreviation.)
_NUMBERED = re.compile(r"^(q|p)\s*(\d+)$")
_LEADING_ZEROS = re.compile(r"\b0+(?=\d)")  # "Phường 01" is "Phường 1" (no unit has a leading zero)
_LEGACY_MARK = re.compile(r"\(\s*(cu|truoc 2025|truoc sap nhap)\s*\)")
_CODE = re.compile(
    r"(?:ma\s+(?:so\s+)?(?:(?P<level>tinh|thanh pho|huyen|quan|thi xa|thi tran|xa|phuong|dac khu)\s+)?"
    r"(?P<cu>cu\s+)?)?(?P<code>\d+)"
)
_MARKER = re.compile(r"\[\s*(ma\s[^\[\]]*?)\s*\]$")  # "… [mã xã cũ 20410]" ends a candidate line
_CODE_LEVELS = {
    "tinh": _PROVINCE, "thanh pho": _PROVINCE_OR_DISTRICT, "huyen": _DISTRICT, "quan": _DISTRICT,
    "thi xa": _DISTRICT, "thi tran": _COMMUNE, "xa": _COMMUNE, "phuong": _COMMUNE, "dac khu": _COMMUNE,
}  # fmt: skip
_MARKER_WORD = {Level.PROVINCE: "tỉnh", Level.DISTRICT: "huyện", Level.COMMUNE: "xã"}
# Short and foreign forms of provinces, as typed in files and at the counter.
_ALIASES = {
    "hcm": "ho chi minh", "tphcm": "ho chi minh", "hcmc": "ho chi minh", "sai gon": "ho chi minh",
    "saigon": "ho chi minh", "sg": "ho chi minh", "ho chi minh city": "ho chi minh",
    "hn": "ha noi", "hanoi": "ha noi", "danang": "da nang", "haiphong": "hai phong", "hp": "hai phong",
    "cantho": "can tho", "thua thien hue": "hue", "brvt": "ba ria vung tau", "daklak": "dak lak",
    "dac lac": "dak lak", "daknong": "dak nong", "dac nong": "dak nong",
}  # fmt: skip
_TONES = frozenset("\u0300\u0301\u0303\u0309\u0323")


def name_key(text: str) -> NameKey:
    """The comparable form of a name and what its prefix allows."""
    key = " ".join(fold(text).replace("-", " ").replace("\u2013", " ").split())
    key = _NUMBERED.sub(r"\1. \2", key)
    for prefix, levels, kind in _PREFIXES:
        if key.startswith(prefix) and len(key) > len(prefix):
            return _name_key(key[len(prefix) :], levels, kind, text)
    return _name_key(key, _ALL_LEVELS, None, text)


def _name_key(rest: str, levels: frozenset[Level], kind: str | None, text: str) -> NameKey:
    rest = _LEADING_ZEROS.sub("", rest.strip())
    alias = _ALIASES.get(rest) if Level.PROVINCE in levels else None
    return NameKey(rest, levels, kind, (alias,) if alias else (), spelling(text))


def code_key(text: str) -> CodeKey | None:
    """The code `text` gives ('48', 'mã xã 20410', '[mã huyện cũ 503]', '49 (cũ)'), or None for a name.

    A number inside a name ('Quận 1', 'Phường 12') is never a code; a candidate line that
    ends in its bracketed marker is read by that marker.
    """
    folded, legacy = _unmarked(fold(text))
    marker = _MARKER.search(folded)
    found = _CODE.fullmatch(marker.group(1) if marker else folded.strip("[] "))
    if found is None:
        return None
    levels = _CODE_LEVELS.get(found["level"] or "", _ALL_LEVELS)
    return CodeKey(int(found["code"]), levels, legacy or bool(found["cu"]))


def spelling(text: str) -> str:
    """Lower case with accents, each word's tone mark moved to its end, so 'Hoà' and 'Hòa' agree."""
    words = unicodedata.normalize("NFD", text.lower()).replace("-", " ").replace("\u2013", " ").split()
    return " ".join(_toned(word) for word in words)


def _toned(word: str) -> str:
    tones = "".join(c for c in word if c in _TONES)
    return unicodedata.normalize("NFC", "".join(c for c in word if c not in _TONES) + tones)


def _unmarked(text: str) -> tuple[str, bool]:
    """`text` without a trailing '(cũ)' mark, and whether it had one."""
    head, paren, tail = text.rstrip().rpartition("(")
    if paren and _LEGACY_MARK.fullmatch("(" + fold(tail)):
        return head.rstrip(), True
    return text, False


@dataclass
class RegionIndex:
    """All units of both schemes, indexed by code and by name, with the 2025 conversion."""

    units: dict[tuple[str, Level, int], Unit] = field(default_factory=dict)
    by_name: dict[str, list[Unit]] = field(default_factory=lambda: defaultdict(list))
    communes_by_province: dict[int, list[Unit]] = field(default_factory=lambda: defaultdict(list))
    # new commune code → the legacy communes it was formed from
    sources: dict[int, list[Unit]] = field(default_factory=dict)
    # legacy commune code → the communes of today formed (partly) from it
    formed_into: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))
    data_version: str = ""

    @classmethod
    def load(cls, legacy_units: bool = True) -> RegionIndex:
        """Build the index from the pinned `vietnam-provinces` data (1–2 s: load it once).

        Without `legacy_units` only today's provinces and communes are loaded (about 40 MB
        instead of 200 MB): enough to name a recipient's region, not to resolve old names.
        """
        import vietnam_provinces as vp

        index = cls(data_version=vp.__data_version__)
        for p in vp.Province.iter_all():
            index._add(Unit(p.code.value, p.name, Level.PROVINCE, SCHEME_2025, p.code.value, kind=_kind(p)))
        for w in vp.Ward.iter_all():
            unit = Unit(w.code.value, w.name, Level.COMMUNE, SCHEME_2025, w.province_code.value, kind=_kind(w))
            index._add(unit)
            index.communes_by_province[unit.province_code].append(unit)
        if legacy_units:
            index._add_legacy()
        return index

    def _add_legacy(self) -> None:
        """The units before 1 July 2025 and which of today's communes each became."""
        import vietnam_provinces as vp
        from vietnam_provinces import legacy

        index = self
        for p in legacy.Province.iter_all():
            index._add(Unit(p.code.value, p.name, Level.PROVINCE, SCHEME_LEGACY, p.code.value, kind=_kind(p)))
        for d in legacy.District.iter_all():
            index._add(Unit(d.code.value, d.name, Level.DISTRICT, SCHEME_LEGACY, d.province_code.value, kind=_kind(d)))
        for w in legacy.Ward.iter_all():
            unit = Unit(w.code.value, w.name, Level.COMMUNE, SCHEME_LEGACY, w.province_code.value,
                        w.district_code.value, _kind(w))  # fmt: skip
            index._add(unit)
        for w in vp.Ward.iter_all():
            olds = [index.units[(SCHEME_LEGACY, Level.COMMUNE, o.code.value)] for o in w.get_legacy_sources()]
            index.sources[w.code.value] = olds
            for old in olds:
                index.formed_into[old.code].append(w.code.value)

    def _add(self, unit: Unit) -> None:
        self.units[(unit.scheme, unit.level, unit.code)] = unit
        self.by_name[name_key(unit.name).key].append(unit)

    # -- lookups by code -------------------------------------------------------------------

    def province(self, code: int, scheme: str = SCHEME_2025) -> Unit:
        """The province with `code` in `scheme`, or UnknownRegion."""
        return self._by_code(scheme, Level.PROVINCE, code)

    def commune(self, code: int, scheme: str = SCHEME_2025) -> Unit:
        """The commune with `code` in `scheme`, or UnknownRegion."""
        return self._by_code(scheme, Level.COMMUNE, code)

    def district(self, code: int) -> Unit:
        """The legacy district with `code`, or UnknownRegion."""
        return self._by_code(SCHEME_LEGACY, Level.DISTRICT, code)

    def _by_code(self, scheme: str, level: Level, code: int) -> Unit:
        try:
            return self.units[(scheme, level, code)]
        except KeyError:
            raise UnknownRegion(f"Không có {_LEVEL_VI[level]} mã {code} ({_scheme_vi(scheme)}).") from None

    def describe(self, unit: Unit) -> str:
        """'Xã Tân Phú (Tỉnh Đồng Nai) [mã xã 26116]': enough to tell namesakes apart, and its code."""
        if unit.level is Level.PROVINCE:
            return f"{unit.label} [{self.marker(unit)}]"
        parent = self.units[(unit.scheme, Level.PROVINCE, unit.province_code)]
        inside = parent.name
        if unit.district_code is not None:
            inside = f"{self.units[(SCHEME_LEGACY, Level.DISTRICT, unit.district_code)].name}, {inside}"
        return f"{unit.label} ({inside}) [{self.marker(unit)}]"

    def label(self, resolution: Resolution) -> str:
        """How a segment shows a name it was given: the unit and, for a legacy unit, what it is today."""
        text = self.describe(resolution.matched)
        if resolution.matched.scheme == SCHEME_2025:
            return text
        today = ", ".join(p.name for p in resolution.today)
        return f"{text} → nay {number(len(resolution.communes))} xã/phường của {today}"

    # -- lookups by name -------------------------------------------------------------------

    def find(self, text: str, levels: frozenset[Level] | None = None, within: int | None = None) -> list[Unit]:
        """Units named `text` (or with that code), best scheme first, optionally inside province `within`.

        `within` is a province code of today; it also keeps legacy units now inside it.
        """
        return self._find(text, levels, self.province(within) if within is not None else None)

    def _find(self, text: str, levels: frozenset[Level] | None, scope: Unit | None) -> list[Unit]:
        """The units one part of a query names inside `scope`, the likeliest first."""
        code = code_key(text)
        if code is not None:
            found = self._find_code(code, levels or _ALL_LEVELS)
            return [u for u in found if scope is None or self._inside(u, scope)]
        text, legacy_only = _unmarked(text)
        name = name_key(text)
        allowed = name.levels & (levels or _ALL_LEVELS)
        found = self._named(name.key, allowed, scope)
        found = _narrowed(found, name) + [u for key in name.aliases for u in self._named(key, allowed, scope)]
        if legacy_only:
            found = [u for u in found if u.scheme == SCHEME_LEGACY]
        return _preferred(found, scope)

    def _named(self, key: str, levels: frozenset[Level], scope: Unit | None) -> list[Unit]:
        found = [u for u in self.by_name.get(key, []) if u.level in levels]
        return found if scope is None else [u for u in found if self._inside(u, scope)]

    def _find_code(self, code: CodeKey, levels: frozenset[Level]) -> list[Unit]:
        # A bare number is a province below 100 and a commune above: of today unless marked
        # 'cũ', since codes were reused in 2025. Districts exist only before 2025, and a number
        # is read as one only when marked so or where nothing else is allowed (a district column).
        allowed = code.levels & levels
        for level in (lv for lv in Level if lv in allowed):
            if (level is Level.PROVINCE and code.code >= 100) or (
                level is Level.DISTRICT and not (code.legacy or allowed == _DISTRICT)
            ):
                continue
            for scheme in _code_schemes(code, level):
                if (unit := self.units.get((scheme, level, code.code))) is not None:
                    return [unit]
        return []

    def one(
        self, text: str, levels: frozenset[Level] | None = None, within: int | None = None, inside: Unit | None = None
    ) -> Unit:
        """The single unit `text` names, or UnknownRegion / AmbiguousRegion listing candidates.

        `text` may name its place too, either way round: 'Phường 1, Quận 3, TP.HCM' or
        'Tiền Giang (cũ), Huyện Châu Thành'. `within` (a province of today) or `inside` (any
        unit) is where the whole text is looked up.
        """
        scope = self.province(within) if within is not None else inside
        return self._single(self._walk(text, levels, scope))

    def _walk(self, text: str, levels: frozenset[Level] | None, scope: Unit | None) -> _Walk:
        """Look up each comma-separated part inside the one before, the largest first."""
        parts = self._parts(text)
        outer = scope
        for part in parts[:-1]:
            found = self._find(part, _PROVINCE_OR_DISTRICT, scope)
            if len(found) != 1:
                return _Walk(part, found, scope, outer, final=False)
            scope = found[0]
            outer = outer or scope
        return _Walk(parts[-1], self._find(parts[-1], levels, scope), scope, outer, final=True)

    def _parts(self, text: str) -> list[str]:
        """The parts of a query, the largest place first ('Phường 1, Quận 3, TP.HCM' is reversed)."""
        if code_key(text) is not None:
            return [text]
        parts = [part.strip() for part in text.split(",") if part.strip()] or [text]
        if len(parts) > 1 and self._find(parts[-1], _PROVINCE, None):
            parts.reverse()
        return parts

    def _single(self, walk: _Walk) -> Unit:
        part = walk.part.strip()
        if len(walk.found) > 1:
            raise AmbiguousRegion(part, walk.found, self)
        if walk.found:
            return walk.found[0]
        if walk.scope is not None:
            raise UnknownRegion(f"Không tìm thấy {part!r} trong {walk.scope.label}.")
        hint = self._hint(part)
        error = UnknownRegion(f"Không tìm thấy địa danh {part!r}{hint}.")
        error.hint = hint
        raise error

    def _hint(self, text: str) -> str:
        code = code_key(text)
        if code is not None:
            legacy = self._find_code(CodeKey(code.code, code.levels, legacy=True), _ALL_LEVELS)
            return "".join(f" từ 1/7/2025; mã cũ {code.code} là {self.describe(u)}" for u in legacy if not code.legacy)
        key = name_key(text).key
        close = [u for name, units in self.by_name.items() if name.startswith(key[:4]) for u in units][:5]
        return "; gần giống: " + ", ".join(self.describe(u) for u in close) if close and key else ""

    def contains(self, scope: Unit, unit: Unit) -> bool:
        """Whether `unit` lies (partly) inside `scope`, across schemes."""
        return self._inside(unit, scope)

    def _inside(self, unit: Unit, scope: Unit) -> bool:
        if scope.scheme == SCHEME_2025:
            return scope.level is Level.PROVINCE and scope.code in self.current_provinces(unit)
        if unit.scheme == SCHEME_LEGACY:
            return _membership(scope)(unit)
        # A commune of today lies in a legacy unit when it was formed (partly) from it.
        return unit.level is Level.COMMUNE and any(map(_membership(scope), self.sources.get(unit.code, [])))

    # -- text that selects a unit --------------------------------------------------------

    def marker(self, unit: Unit) -> str:
        """The code with its level and scheme, as shown and accepted back: 'mã xã cũ 20410'."""
        old = " cũ" if unit.scheme == SCHEME_LEGACY else ""
        return f"mã {_MARKER_WORD[unit.level]}{old} {unit.code}"

    def choice(self, unit: Unit) -> str:
        """One candidate line: text naming exactly `unit`, then its code marker."""
        text = self.selector(unit)
        return f"{text} [{self.marker(unit)}]" if text != self.marker(unit) else self.describe(unit)

    def selector(self, unit: Unit) -> str:
        """The name to write for exactly `unit` ('Tiền Giang (cũ), Huyện Châu Thành'), else its code marker."""
        for text in self._selector_forms(unit):
            walk = self._walk(text, None, None)
            if walk.final and walk.found == [unit]:
                return text
        return self.marker(unit)

    def _selector_forms(self, unit: Unit) -> Iterator[str]:
        """Ways to write `unit`, shortest first: its province then itself, then with its old district."""
        province = self.place_name(self.units[(unit.scheme, Level.PROVINCE, unit.province_code)])
        if unit.level is Level.PROVINCE:
            yield province
            return
        yield f"{province}, {unit.name}"
        yield f"{unit.name}, {province}"
        if unit.district_code is not None:
            district = self.units[(SCHEME_LEGACY, Level.DISTRICT, unit.district_code)].name
            yield f"{province}, {district}, {unit.name}"
            yield f"{unit.name}, {district}, {province}"

    @staticmethod
    def place_name(province: Unit) -> str:
        """A province as a place in an address: 'Đà Nẵng', 'Quảng Nam (cũ)'."""
        name = province.name.removeprefix("Thành phố ").removeprefix("Tỉnh ")
        return f"{name} (cũ)" if province.scheme == SCHEME_LEGACY else name

    # -- what a unit covers today ---------------------------------------------------------

    def current_provinces(self, unit: Unit) -> list[int]:
        """Codes of today's provinces that (partly) cover `unit`."""
        if unit.scheme == SCHEME_2025:
            return [unit.province_code]
        return sorted({c.unit.province_code for c in self.covering_communes(unit)})

    def covering_communes(self, unit: Unit) -> list[CommuneCover]:
        """Today's communes covering a legacy unit, flagged when only partly formed from it."""
        if unit.scheme == SCHEME_2025:
            if unit.level is Level.COMMUNE:
                return [CommuneCover(unit, partial=False)]
            return [CommuneCover(c, partial=False) for c in self.communes_by_province[unit.code]]
        inside = _membership(unit)
        # A legacy commune knows what it became; a larger unit is found among all sources.
        codes = self.formed_into.get(unit.code, []) if unit.level is Level.COMMUNE else self.sources
        covers = []
        for code in dict.fromkeys(codes):
            hits = [inside(old) for old in self.sources[code]]
            if any(hits):
                covers.append(CommuneCover(self.units[(SCHEME_2025, Level.COMMUNE, code)], not all(hits)))
        return sorted(covers, key=lambda c: c.unit.code)

    def resolve(self, query: str, levels: frozenset[Level] | None = None) -> Resolution:
        """What a query is today: 'Quảng Nam', '48', 'Huyện Duy Xuyên, Quảng Nam' or 'Quảng Nam (cũ), huyện Duy Xuyên'.

        Comma-separated parts narrow each other, the largest place first or last ('Phường 1,
        Quận 3, TP.HCM'); `levels` keeps only units of those levels for the unit itself (a
        --commune option names a commune). A province of today named around it also limits
        the communes to that province.
        """
        walk = self._walk(query, levels, None)
        unit, outer = self._single(walk), walk.outer
        today = outer is not None and outer.scheme == SCHEME_2025 and outer.level is Level.PROVINCE
        return self._resolution(query, unit, outer.code if today else None)

    def _resolution(self, query: str, unit: Unit, within: int | None) -> Resolution:
        whole = unit.scheme == SCHEME_2025 and unit.level is Level.PROVINCE
        communes = [] if whole else self.covering_communes(unit)
        if within is not None:
            communes = [c for c in communes if c.unit.province_code == within]
        chain = [self.units[(unit.scheme, Level.PROVINCE, unit.province_code)]]
        if unit.scheme == SCHEME_LEGACY:
            chain += [self.province(code) for code in sorted({c.unit.province_code for c in communes})]
        provinces = tuple(dict.fromkeys(chain))
        return Resolution(query.strip(), unit, provinces, tuple(communes), whole)


@dataclass(frozen=True)
class _Walk:
    """Where a lookup of comma-separated parts stopped: the part, its matches, where it looked."""

    part: str
    found: list[Unit]
    scope: Unit | None
    outer: Unit | None
    final: bool


def _narrowed(found: list[Unit], name: NameKey) -> list[Unit]:
    """Namesakes told apart by what the text says beyond the folded name."""
    # "Phường Hội An" means the phường, but "Xã Hội An" for a unit now a phường still finds it.
    # A province of today may since have become a city ("Tỉnh Quảng Ninh" is still it).
    upgraded = name.kind == "tinh"
    found = [u for u in found if u.kind == name.kind or (upgraded and u.scheme == SCHEME_2025)] or found
    # Accents, when written, tell namesakes apart: "Xã Văn Lăng" is not "Xã Văn Lang".
    return [u for u in found if name.spelling.endswith(_spelled_name(u.name))] or found


@cache
def _spelled_name(name: str) -> str:
    """The spelling of a unit's name without its division type ('Xã Văn Lăng' → 'văn lăng')."""
    words = spelling(name).split()
    return " ".join(words[len(words) - len(name_key(name).key.split()) :])


def _code_schemes(code: CodeKey, level: Level) -> tuple[str, ...]:
    """The schemes a code is looked up in, in order."""
    if code.legacy or level is Level.DISTRICT:
        return (SCHEME_LEGACY,)
    # Each province of today kept the code of one it absorbed, so an old province code is
    # today's province containing it, or (49 Quảng Nam) a code no province has any more.
    return (SCHEME_2025, SCHEME_LEGACY) if level is Level.PROVINCE else (SCHEME_2025,)


def _preferred(found: list[Unit], scope: Unit | None) -> list[Unit]:
    """The likeliest of the units a name matched."""
    # "Cao Bằng" names a province of today, one before 2025 and a former city: a bare name
    # means the province, a name inside a province means something in it. At any level a unit
    # of the scope's scheme (today's by default) wins over its namesake of the other scheme
    # ("Xã Tân Tiến, Lạng Sơn" is today's commune, not the one it replaced).
    if scope is None:
        found = [u for u in found if u.level is Level.PROVINCE] or found
    else:
        found = [u for u in found if u.level is not Level.PROVINCE] or found
    first = scope.scheme if scope is not None else SCHEME_2025
    levels = {u.level for u in found if u.scheme == first}
    return [u for u in found if u.scheme == first or u.level not in levels]


def _kind(division: object) -> str:
    """The folded division type of a package object ('thanh pho trung uong' → 'thanh pho')."""
    return fold(str(division.division_type)).removesuffix(" trung uong")  # type: ignore[attr-defined]


def _membership(unit: Unit):  # type: ignore[no-untyped-def]
    """A test telling whether a legacy commune lies inside the legacy `unit`."""
    if unit.level is Level.PROVINCE:
        return lambda old: old.province_code == unit.code
    if unit.level is Level.DISTRICT:
        return lambda old: old.district_code == unit.code
    return lambda old: old.code == unit.code


_LEVEL_VI = {Level.PROVINCE: "tỉnh/thành phố", Level.DISTRICT: "quận/huyện", Level.COMMUNE: "xã/phường"}


def _scheme_vi(scheme: str) -> str:
    return "trước 1/7/2025" if scheme == SCHEME_LEGACY else "từ 1/7/2025"
