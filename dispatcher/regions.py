"""Regions: today's provinces and communes (scheme 2025), and the legacy units they replaced.

Everything is keyed on NSO codes from the `vietnam-provinces` package; a code always travels
with its scheme because commune codes were reused in 2025. Names resolve accent- and
case-insensitively, with or without their "Tỉnh/Thành phố/Xã/Phường/Huyện…" prefix. A legacy
name resolves to the communes of today that cover it, each flagged `partial` when it was
formed only partly from that legacy unit.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from enum import StrEnum

from dispatcher.domain import fold
from dispatcher.errors import NotFound, UsageError

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


class AmbiguousRegion(UsageError):
    """Several units have that name; the message lists them."""

    def __init__(self, query: str, candidates: list[Unit], index: RegionIndex) -> None:
        listed = "; ".join(index.describe(unit) for unit in candidates[:12])
        more = f" và {len(candidates) - 12} nơi khác" if len(candidates) > 12 else ""
        super().__init__(f"Tên địa danh {query!r} không rõ ràng, có thể là: {listed}{more}.")
        self.candidates = candidates


@dataclass(frozen=True)
class NameKey:
    """A name reduced for comparison, with what its prefix said about the unit."""

    key: str
    levels: frozenset[Level]
    kind: str | None


_ALL_LEVELS = frozenset(Level)
_PROVINCE_OR_DISTRICT = frozenset({Level.PROVINCE, Level.DISTRICT})
# Prefixes, longest first: the levels each allows and the division type it names.
_PREFIXES: list[tuple[str, frozenset[Level], str | None]] = [
    ("thanh pho truc thuoc trung uong ", frozenset({Level.PROVINCE}), None),
    ("thanh pho ", _PROVINCE_OR_DISTRICT, None),
    ("tp. ", _PROVINCE_OR_DISTRICT, None),
    ("tp.", _PROVINCE_OR_DISTRICT, None),
    ("tp ", _PROVINCE_OR_DISTRICT, None),
    ("tinh ", frozenset({Level.PROVINCE}), None),
    ("huyen ", frozenset({Level.DISTRICT}), "huyen"),
    ("quan ", frozenset({Level.DISTRICT}), "quan"),
    ("thi xa ", frozenset({Level.DISTRICT}), "thi xa"),
    ("thi tran ", frozenset({Level.COMMUNE}), "thi tran"),
    ("phuong ", frozenset({Level.COMMUNE}), "phuong"),
    ("xa ", frozenset({Level.COMMUNE}), "xa"),
    ("dac khu ", frozenset({Level.COMMUNE}), "dac khu"),
]
_LEGACY_MARK = re.compile(r"\s*\((cu|truoc 2025|truoc sap nhap)\)\s*$")
_ALIASES = {
    "hcm": "ho chi minh",
    "tphcm": "ho chi minh",
    "sai gon": "ho chi minh",
    "hn": "ha noi",
    "thua thien hue": "hue",
}


def name_key(text: str) -> NameKey:
    """The comparable form of a name and what its prefix allows."""
    key = " ".join(fold(text).replace("-", " ").replace("\u2013", " ").split())
    for prefix, levels, kind in _PREFIXES:
        if key.startswith(prefix) and len(key) > len(prefix):
            rest = key[len(prefix) :].strip()
            return NameKey(_ALIASES.get(rest, rest), levels, kind)
    return NameKey(_ALIASES.get(key, key), _ALL_LEVELS, None)


@dataclass
class RegionIndex:
    """All units of both schemes, indexed by code and by name, with the 2025 conversion."""

    units: dict[tuple[str, Level, int], Unit] = field(default_factory=dict)
    by_name: dict[str, list[Unit]] = field(default_factory=lambda: defaultdict(list))
    communes_by_province: dict[int, list[Unit]] = field(default_factory=lambda: defaultdict(list))
    # new commune code → the legacy communes it was formed from
    sources: dict[int, list[Unit]] = field(default_factory=dict)
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
        """'Xã Tân Phú (Tỉnh Đồng Nai)': enough to tell namesakes apart."""
        if unit.level is Level.PROVINCE:
            return f"{unit.label} [mã {unit.code}]"
        parent = self.units[(unit.scheme, Level.PROVINCE, unit.province_code)]
        inside = parent.name
        if unit.district_code is not None:
            inside = f"{self.units[(SCHEME_LEGACY, Level.DISTRICT, unit.district_code)].name}, {inside}"
        return f"{unit.label} ({inside}) [mã {unit.code}]"

    # -- lookups by name -------------------------------------------------------------------

    def find(self, text: str, levels: frozenset[Level] | None = None, within: int | None = None) -> list[Unit]:
        """Units named `text` (or with that code), best scheme first, optionally inside province `within`.

        `within` is a province code of today; it also keeps legacy units now inside it.
        """
        legacy_only = bool(_LEGACY_MARK.search(fold(text)))
        name = name_key(_LEGACY_MARK.sub("", fold(text)) if legacy_only else text)
        allowed = name.levels & (levels or _ALL_LEVELS)
        if name.key.isdigit():
            found = self._find_code(int(name.key), allowed)
        else:
            found = [u for u in self.by_name.get(name.key, []) if u.level in allowed]
        # "Phường Hội An" means the phường, but "Xã Hội An" for a unit now a phường still finds it.
        found = [u for u in found if u.kind == name.kind] or found
        if legacy_only:
            found = [u for u in found if u.scheme == SCHEME_LEGACY]
        if within is not None:
            found = [u for u in found if within in self.current_provinces(u)]
        return self._prefer_provinces(found)

    def _find_code(self, code: int, allowed: frozenset[Level]) -> list[Unit]:
        # A bare number is a province below 100 and a commune above; a district code is
        # read as such only where nothing else is allowed (a district column).
        order = [Level.PROVINCE, Level.COMMUNE] if code < 100 else [Level.COMMUNE]
        if allowed == {Level.DISTRICT}:
            order = [Level.DISTRICT]
        for level in (lv for lv in order if lv in allowed):
            for scheme in (SCHEME_2025, SCHEME_LEGACY):
                if (unit := self.units.get((scheme, level, code))) is not None:
                    return [unit]
        return []

    @staticmethod
    def _prefer_provinces(found: list[Unit]) -> list[Unit]:
        # "Cao Bằng" names a province of today, one before 2025 and a former city: a bare
        # name means the province. At any level a unit of today wins over its legacy namesake
        # ("Xã Tân Tiến, Lạng Sơn" is today's commune, not the one it replaced).
        provinces = [u for u in found if u.level is Level.PROVINCE]
        found = provinces or found
        current_levels = {u.level for u in found if u.scheme == SCHEME_2025}
        return [u for u in found if u.scheme == SCHEME_2025 or u.level not in current_levels]

    def one(self, text: str, levels: frozenset[Level] | None = None, within: int | None = None) -> Unit:
        """The single unit named `text`, or UnknownRegion / AmbiguousRegion listing candidates."""
        found = self.find(text, levels, within)
        if not found:
            raise UnknownRegion(f"Không tìm thấy địa danh {text.strip()!r}{self._hint(text, levels)}.")
        if len(found) > 1:
            raise AmbiguousRegion(text.strip(), found, self)
        return found[0]

    def _hint(self, text: str, levels: frozenset[Level] | None) -> str:
        key = name_key(text).key
        close = [u for name, units in self.by_name.items() if name.startswith(key[:4]) for u in units]
        close = [u for u in close if levels is None or u.level in levels][:5]
        return "; gần giống: " + ", ".join(self.describe(u) for u in close) if close and key else ""

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
        covers = []
        for code, olds in self.sources.items():
            hits = [inside(old) for old in olds]
            if any(hits):
                covers.append(CommuneCover(self.units[(SCHEME_2025, Level.COMMUNE, code)], not all(hits)))
        return sorted(covers, key=lambda c: c.unit.code)

    def resolve(self, query: str, levels: frozenset[Level] | None = None) -> Resolution:
        """What a query is today: 'Quảng Nam', '48', 'Huyện Duy Xuyên, Quảng Nam' or 'Quảng Nam (cũ), huyện Duy Xuyên'.

        With two comma-separated parts, the province part (either side) narrows the other;
        `levels` keeps only units of those levels (a --commune option names a commune).
        """
        head, _, context = query.partition(",")
        if not context.strip():
            return self._resolution(query, self.one(head, levels), None)
        try:
            scope = self.one(context, frozenset({Level.PROVINCE}))
        except UnknownRegion:
            head, context = context, head
            scope = self.one(context, frozenset({Level.PROVINCE}))
        within = scope.code if scope.scheme == SCHEME_2025 else None
        return self._resolution(query, self._one_inside(head, scope, levels), within)

    def _one_inside(self, head: str, scope: Unit, levels: frozenset[Level] | None = None) -> Unit:
        found = [u for u in self.find(head, levels) if self._inside(u, scope)]
        candidates = [u for u in found if u.level is not Level.PROVINCE] or found
        if not candidates:
            raise UnknownRegion(f"Không tìm thấy {head.strip()!r} trong {scope.label}.")
        if len(candidates) > 1:
            raise AmbiguousRegion(head.strip(), candidates, self)
        return candidates[0]

    def _inside(self, unit: Unit, scope: Unit) -> bool:
        if unit.scheme == scope.scheme:
            return unit.province_code == scope.code
        if scope.scheme == SCHEME_2025:
            return scope.code in self.current_provinces(unit)
        return False

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
