"""Regions: today's 34 provinces and 3,321 communes, and the legacy names that still lead to them."""

from __future__ import annotations

import json
import unicodedata

import pytest

from dispatcher.errors import UsageError
from dispatcher.regions import (
    SCHEME_2025,
    SCHEME_LEGACY,
    AmbiguousRegion,
    Level,
    RegionIndex,
    Unit,
    UnknownRegion,
)

PROVINCE_NAMES = {48: "Thành phố Đà Nẵng", 79: "Thành phố Hồ Chí Minh", 38: "Tỉnh Thanh Hóa"}
DUY_XUYEN = [(20599, "Xã Nam Phước"), (20611, "Xã Thu Bồn"), (20623, "Xã Duy Xuyên"), (20635, "Xã Duy Nghĩa")]


def _units(regions: RegionIndex, scheme: str, level: Level) -> list[Unit]:
    return [unit for unit in regions.units.values() if unit.scheme == scheme and unit.level is level]


def _key(unit: Unit) -> tuple[str, Level, int]:
    return unit.scheme, unit.level, unit.code


# -- today's scheme -----------------------------------------------------------------------


def test_scheme_2025_has_34_provinces_and_3321_communes(regions: RegionIndex) -> None:
    """Today's scheme counts 34 provinces and 3,321 communes, and every commune lies in one of those provinces."""
    provinces = {unit.code for unit in _units(regions, SCHEME_2025, Level.PROVINCE)}
    communes = _units(regions, SCHEME_2025, Level.COMMUNE)
    assert len(provinces) == 34
    assert len(communes) == 3321
    assert {commune.province_code for commune in communes} == provinces
    assert sum(len(units) for units in regions.communes_by_province.values()) == 3321


@pytest.mark.parametrize(
    "query, code",
    [
        ("48", 48),
        ("da nang", 48),
        ("ĐÀ NẴNG", 48),
        ("Thành phố Đà Nẵng", 48),
        ("TP. Đà Nẵng", 48),
        (unicodedata.normalize("NFD", "Đà Nẵng"), 48),
        ("tp hcm", 79),
        ("hcm", 79),
        ("Hồ Chí Minh", 79),
        ("Thanh Hoá", 38),
        ("Thanh Hóa", 38),
    ],
)
def test_a_province_resolves_by_code_or_by_name_in_any_spelling(regions: RegionIndex, query: str, code: int) -> None:
    """A province of today is found by its NSO code or its name, whatever the accents, case, prefix or short form."""
    resolution = regions.resolve(query)
    assert _key(resolution.matched) == (SCHEME_2025, Level.PROVINCE, code)
    assert resolution.matched.name == PROVINCE_NAMES[code]
    assert resolution.whole_province
    assert [_key(p) for p in resolution.provinces] == [(SCHEME_2025, Level.PROVINCE, code)]


# -- legacy names -------------------------------------------------------------------------


def test_a_legacy_province_resolves_to_todays_communes_formed_from_it(regions: RegionIndex) -> None:
    """'Quảng Nam' is the legacy province 49, now the part of Đà Nẵng (48) formed from it."""
    resolution = regions.resolve("Quảng Nam")
    assert _key(resolution.matched) == (SCHEME_LEGACY, Level.PROVINCE, 49)
    assert [(p.scheme, p.code) for p in resolution.provinces] == [(SCHEME_LEGACY, 49), (SCHEME_2025, 48)]
    assert not resolution.whole_province
    formed_from_49 = {code for code, olds in regions.sources.items() if any(old.province_code == 49 for old in olds)}
    codes = {cover.unit.code for cover in resolution.communes}
    assert codes == formed_from_49
    assert {cover.unit.province_code for cover in resolution.communes} == {48}
    assert 20410 in codes  # Phường Hội An
    assert 20242 not in codes  # Phường Hải Châu, formed from the old city of Đà Nẵng


def test_a_legacy_province_that_kept_its_code_resolves_to_the_province_that_absorbed_it(regions: RegionIndex) -> None:
    """'Kiên Giang' (legacy 91) now lies in An Giang, which took over the code 91."""
    resolution = regions.resolve("Kiên Giang")
    assert _key(resolution.matched) == (SCHEME_LEGACY, Level.PROVINCE, 91)
    assert [(p.scheme, p.code, p.name) for p in resolution.provinces] == [
        (SCHEME_LEGACY, 91, "Tỉnh Kiên Giang"),
        (SCHEME_2025, 91, "Tỉnh An Giang"),
    ]
    assert resolution.communes
    assert {cover.unit.province_code for cover in resolution.communes} == {91}


def test_todays_province_wins_over_its_legacy_namesake(regions: RegionIndex) -> None:
    """'Cao Bằng' is today's whole province 4, not the legacy province of the same name."""
    resolution = regions.resolve("Cao Bằng")
    assert _key(resolution.matched) == (SCHEME_2025, Level.PROVINCE, 4)
    assert resolution.whole_province


def test_a_cu_mark_asks_for_the_legacy_unit(regions: RegionIndex) -> None:
    """'Cao Bằng (cũ)' is the legacy province, covering all of today's Cao Bằng communes."""
    resolution = regions.resolve("Cao Bằng (cũ)")
    assert _key(resolution.matched) == (SCHEME_LEGACY, Level.PROVINCE, 4)
    assert not resolution.whole_province
    assert [c.unit for c in resolution.communes] == sorted(regions.communes_by_province[4], key=lambda u: u.code)


@pytest.mark.parametrize("query", ["Huyện Duy Xuyên", "Huyện Duy Xuyên, Quảng Nam"])
def test_a_legacy_district_resolves_to_the_communes_covering_it(regions: RegionIndex, query: str) -> None:
    """Huyện Duy Xuyên is now exactly four whole communes of Đà Nẵng."""
    resolution = regions.resolve(query)
    assert (resolution.matched.level, resolution.matched.scheme) == (Level.DISTRICT, SCHEME_LEGACY)
    assert [(c.unit.code, c.unit.name, c.partial) for c in resolution.communes] == [
        (code, name, False) for code, name in DUY_XUYEN
    ]
    assert [(p.scheme, p.code) for p in resolution.provinces] == [(SCHEME_LEGACY, 49), (SCHEME_2025, 48)]


def test_partial_marks_a_commune_formed_only_partly_from_the_legacy_district(regions: RegionIndex) -> None:
    """A covering commune is partial exactly when some of its legacy sources lie outside the district."""
    straddling = (olds for _code, olds in sorted(regions.sources.items()) if len({o.district_code for o in olds}) > 1)
    for olds in straddling:
        district = regions.district(olds[0].district_code)
        covers = regions.covering_communes(district)
        if {cover.partial for cover in covers} == {True, False}:
            break
    else:
        pytest.fail("no legacy district is covered by both whole and partial communes")
    for cover in covers:
        outside = [old for old in regions.sources[cover.unit.code] if old.district_code != district.code]
        assert cover.partial == bool(outside), (regions.describe(district), cover)


# -- names that are not one unit ----------------------------------------------------------


@pytest.mark.parametrize(
    "query, listed",
    [
        ("Xã Tân Tiến", ["Thanh Hóa, Xã Tân Tiến [mã xã 16108]", "Đồng Nai, Xã Tân Tiến [mã xã 25318]"]),
        (
            "Huyện Châu Thành",
            ["Tiền Giang (cũ), Huyện Châu Thành [mã huyện cũ 821]", "Bến Tre (cũ), Huyện Châu Thành [mã huyện cũ 831]"],
        ),
    ],
)
def test_a_name_shared_by_several_units_is_ambiguous(regions: RegionIndex, query: str, listed: list[str]) -> None:
    """A name several units share is refused with a question, then one candidate per line with its province."""
    with pytest.raises(AmbiguousRegion) as caught:
        regions.resolve(query)
    assert len(caught.value.candidates) > 2
    question, *lines = str(caught.value).splitlines()
    assert question.startswith(f"Tên địa danh {query!r} không rõ ràng") and question.endswith(":")
    assert lines == [f"  {regions.choice(unit)}" for unit in caught.value.candidates]
    for candidate in listed:
        assert f"  {candidate}" in lines


def test_naming_the_province_picks_one_of_several_namesakes(regions: RegionIndex) -> None:
    """'Xã Tân Tiến, Thanh Hóa' is the one Xã Tân Tiến of Thanh Hóa."""
    resolution = regions.resolve("Xã Tân Tiến, Thanh Hóa")
    assert _key(resolution.matched) == (SCHEME_2025, Level.COMMUNE, 16108)
    assert [(c.unit.code, c.partial) for c in resolution.communes] == [(16108, False)]


@pytest.mark.parametrize("query, error", [("Atlantis", UnknownRegion), ("Xã Tân Tiến", AmbiguousRegion)])
def test_unknown_and_ambiguous_names_are_usage_errors(regions: RegionIndex, query: str, error: type) -> None:
    """An unknown or ambiguous name is a bad value of an option or argument, which exits with status 2."""
    with pytest.raises(error) as caught:
        regions.resolve(query)
    assert isinstance(caught.value, UsageError)
    assert caught.value.exit_code == 2


def test_a_prefix_chooses_the_kind_of_unit(regions: RegionIndex) -> None:
    """'Phường Hội An' is the ward 20410 of Đà Nẵng, not Xã Hội An of An Giang."""
    resolution = regions.resolve("Phường Hội An")
    assert _key(resolution.matched) == (SCHEME_2025, Level.COMMUNE, 20410)
    assert resolution.matched.province_code == 48


def test_a_legacy_kind_prefix_finds_the_legacy_commune(regions: RegionIndex) -> None:
    """'Thị trấn Nam Phước' is the legacy town, now part of Xã Nam Phước."""
    resolution = regions.resolve("Thị trấn Nam Phước")
    assert _key(resolution.matched) == (SCHEME_LEGACY, Level.COMMUNE, 20599)
    assert resolution.matched.name == "Thị trấn Nam Phước"
    assert [(c.unit.code, c.unit.name, c.partial) for c in resolution.communes] == [(20599, "Xã Nam Phước", True)]


def test_resolution_json_has_the_documented_shape(regions: RegionIndex) -> None:
    """to_json() gives the query, the match, the provinces and the covering communes, ready for json.dumps."""
    document = regions.resolve(" Huyện Duy Xuyên ").to_json()
    assert set(document) == {"query", "matched", "whole_province", "provinces", "communes"}
    assert document["query"] == "Huyện Duy Xuyên"
    assert document["matched"] == {"code": 508, "name": "Huyện Duy Xuyên", "level": "district", "scheme": "legacy"}
    assert document["whole_province"] is False
    assert document["provinces"] == [
        {"code": 49, "name": "Tỉnh Quảng Nam", "scheme": "legacy"},
        {"code": 48, "name": "Thành phố Đà Nẵng", "scheme": "2025"},
    ]
    assert document["communes"][0] == {"code": 20599, "name": "Xã Nam Phước", "province_code": 48, "partial": False}
    assert json.loads(json.dumps(document)) == document


# -- the command line ---------------------------------------------------------------------


def test_cli_regions_show_prints_the_resolution_as_json(cli) -> None:
    """`canhbao regions show 'Quảng Nam' --json` prints the resolution document and exits 0."""
    code, document = cli.json("regions", "show", "Quảng Nam")
    assert code == 0
    assert set(document) == {"query", "matched", "whole_province", "provinces", "communes"}
    assert document["matched"]["code"] == 49
    assert [p["code"] for p in document["provinces"]] == [49, 48]
    assert len(document["communes"]) > 50


def test_cli_regions_show_rejects_an_unknown_name_in_vietnamese(cli) -> None:
    """An unknown name exits 2 with a Vietnamese message on stderr."""
    code, out, err = cli("regions", "show", "Atlantis")
    assert code == 2
    assert out == ""
    assert "Không tìm thấy địa danh 'Atlantis'" in err


def test_cli_regions_show_lists_the_candidates_of_an_ambiguous_name(cli) -> None:
    """An ambiguous name exits 2 and lists each candidate on its own line, inside its province."""
    code, _out, err = cli("regions", "show", "Hội An")
    assert code == 2
    assert "không rõ ràng" in err
    lines = [line.strip() for line in err.splitlines()]
    assert "Đà Nẵng, Phường Hội An [mã xã 20410]" in lines
    assert "An Giang, Xã Hội An [mã xã 30673]" in lines
    assert "Quảng Nam (cũ), Thành phố Hội An [mã huyện cũ 503]" in lines


def test_cli_ambiguous_name_shows_the_candidates_codes(cli) -> None:
    """The candidates of an ambiguous name keep their codes, so the user can pick one by code."""
    _code, _out, err = cli("regions", "show", "Hội An")
    assert "[mã xã 20410]" in err
    assert "[mã xã 30673]" in err


def test_todays_commune_wins_over_its_legacy_namesake(regions) -> None:
    """'Xã Tân Tiến, Lạng Sơn' is today's commune 6019, not the legacy commune it replaced."""
    resolution = regions.resolve("Xã Tân Tiến, Lạng Sơn")
    assert resolution.matched.scheme == "2025"
    assert resolution.matched.code == 6019


def test_the_province_may_come_first(regions) -> None:
    """'Quảng Nam (cũ), huyện Duy Xuyên' reads the same as 'Huyện Duy Xuyên, Quảng Nam'."""
    first = regions.resolve("Quảng Nam (cũ), huyện Duy Xuyên")
    assert first.matched.code == 508
    assert [c.unit.code for c in first.communes] == [c.unit.code for c in regions.resolve("Huyện Duy Xuyên").communes]


# -- numbered units are names -------------------------------------------------------------


@pytest.mark.parametrize(
    "query, district",
    [
        ("Quận 1", 760),
        ("Quận 3", 770),
        ("Quận 01", 760),
        ("Q.1", 760),
        ("Q1", 760),
        ("q 12", 761),
        ("Thành phố Hồ Chí Minh, Quận 1", 760),
        ("Thành phố Hồ Chí Minh, Quận 12", 761),
    ],
)
def test_a_numbered_district_is_a_name_not_a_code(regions: RegionIndex, query: str, district: int) -> None:
    """'Quận 1' (however written) is Hồ Chí Minh City's old district, not the unit whose code is 1."""
    resolution = regions.resolve(query)
    assert _key(resolution.matched) == (SCHEME_LEGACY, Level.DISTRICT, district)
    assert [p.code for p in resolution.today] == [79]
    assert resolution.communes
    assert {cover.unit.province_code for cover in resolution.communes} == {79}


def test_a_numbered_ward_alone_is_ambiguous(regions: RegionIndex) -> None:
    """'Phường 1' exists in many old districts: it lists them all, and none is the unit coded 1 (Phúc Xá)."""
    with pytest.raises(AmbiguousRegion) as caught:
        regions.resolve("Phường 1")
    candidates = caught.value.candidates
    assert len(candidates) > 20
    assert {(u.name, u.level, u.scheme) for u in candidates} == {("Phường 1", Level.COMMUNE, SCHEME_LEGACY)}
    assert "… và" in str(caught.value)


@pytest.mark.parametrize(
    "query",
    [
        "Phường 1, Quận 3, TP.HCM",
        "Hồ Chí Minh (cũ), Quận 3, Phường 1",
        "P.1, Q.3, Thành phố Hồ Chí Minh",
        "Phường 01, Q3, HCM",
    ],
)
def test_a_numbered_ward_resolves_with_its_district_and_province(regions: RegionIndex, query: str) -> None:
    """With its old district and city, 'Phường 1' is the one ward of Quận 3, now part of Phường Bàn Cờ."""
    resolution = regions.resolve(query)
    assert _key(resolution.matched) == (SCHEME_LEGACY, Level.COMMUNE, 27160)
    assert [(c.unit.code, c.unit.name) for c in resolution.communes] == [(27154, "Phường Bàn Cờ")]


def test_a_numbered_ward_outside_its_province_is_unknown(regions: RegionIndex) -> None:
    """Hà Nội has no 'Phường 1': the name is refused, not read as commune code 1."""
    with pytest.raises(UnknownRegion, match="Không tìm thấy 'Phường 1' trong Thành phố Hà Nội"):
        regions.resolve("Hà Nội, Phường 1")


@pytest.mark.parametrize(
    "query, key",
    [
        ("48", (SCHEME_2025, Level.PROVINCE, 48)),
        ("4", (SCHEME_2025, Level.PROVINCE, 4)),
        ("mã xã 4", (SCHEME_2025, Level.COMMUNE, 4)),
        ("20410", (SCHEME_2025, Level.COMMUNE, 20410)),
        ("[mã xã 20410]", (SCHEME_2025, Level.COMMUNE, 20410)),
        ("mã xã cũ 20410", (SCHEME_LEGACY, Level.COMMUNE, 20410)),
        ("[mã huyện cũ 821]", (SCHEME_LEGACY, Level.DISTRICT, 821)),
        ("mã cũ 49", (SCHEME_LEGACY, Level.PROVINCE, 49)),
        ("49 (cũ)", (SCHEME_LEGACY, Level.PROVINCE, 49)),
    ],
)
def test_digits_alone_or_with_a_marker_are_a_code(regions: RegionIndex, query: str, key: tuple) -> None:
    """A code is digits alone (today's scheme) or carries its marker: level and 'cũ' pick among reused codes."""
    assert _key(regions.one(query)) == key


def test_a_bare_legacy_commune_code_is_refused_with_the_marker_that_selects_it(regions: RegionIndex) -> None:
    """'27160' is no commune today; the refusal names the old Phường 1 of Quận 3 and the marker to write for it."""
    with pytest.raises(UnknownRegion) as caught:
        regions.resolve("27160")
    assert "Phường 1 (cũ) (Quận 3, Thành phố Hồ Chí Minh) [mã xã cũ 27160]" in str(caught.value)
    assert _key(regions.one("mã xã cũ 27160")) == (SCHEME_LEGACY, Level.COMMUNE, 27160)


def test_an_old_province_code_is_still_its_province(regions: RegionIndex) -> None:
    """'49' (no province has it today) is old Quảng Nam; '91' is today's An Giang, which absorbed old 91."""
    assert _key(regions.one("49")) == (SCHEME_LEGACY, Level.PROVINCE, 49)
    assert _key(regions.one("91")) == (SCHEME_2025, Level.PROVINCE, 91)


# -- what to write instead of an ambiguous name -------------------------------------------


@pytest.mark.parametrize(
    "query", ["Hội An", "Châu Thành", "Phường 1", "Tân Phú", "Xã Tân Tiến", "Phường 3", "Văn Lang"]
)
def test_every_candidate_line_selects_exactly_its_unit(regions: RegionIndex, query: str) -> None:
    """For each candidate of an ambiguous name, its line, its name part and its code marker all give back that unit."""
    with pytest.raises(AmbiguousRegion) as caught:
        regions.resolve(query)
    for unit in caught.value.candidates:
        texts = {regions.choice(unit), regions.selector(unit), regions.marker(unit), f"[{regions.marker(unit)}]"}
        assert {_key(regions.one(text)) for text in texts} == {_key(unit)}, texts


def test_every_code_a_message_shows_selects_its_unit(regions: RegionIndex) -> None:
    """The '[mã …]' shown for a unit of either scheme, at any level, selects that unit, even where codes are reused."""
    for unit in regions.units.values():
        assert regions.one(regions.describe(unit)) == unit, regions.describe(unit)


@pytest.mark.parametrize(
    "query, key",
    [
        ("P. Hải Châu", (SCHEME_2025, Level.COMMUNE, 20242)),
        ("Q.Hải Châu", (SCHEME_LEGACY, Level.DISTRICT, 492)),
        ("TX. Điện Bàn", (SCHEME_LEGACY, Level.DISTRICT, 507)),
        ("H. Duy Xuyên", (SCHEME_LEGACY, Level.DISTRICT, 508)),
        ("X. Duy Nghĩa", (SCHEME_2025, Level.COMMUNE, 20635)),
        ("TT. Nam Phước", (SCHEME_LEGACY, Level.COMMUNE, 20599)),
        ("Tp. Hội An", (SCHEME_LEGACY, Level.DISTRICT, 503)),
        ("Hanoi", (SCHEME_2025, Level.PROVINCE, 1)),
        ("Danang", (SCHEME_2025, Level.PROVINCE, 48)),
        ("Saigon", (SCHEME_2025, Level.PROVINCE, 79)),
        ("Sài Gòn", (SCHEME_2025, Level.PROVINCE, 79)),
        ("TP.HCM", (SCHEME_2025, Level.PROVINCE, 79)),
        ("HCMC", (SCHEME_2025, Level.PROVINCE, 79)),
        ("Phường Sài Gòn", (SCHEME_2025, Level.COMMUNE, 26740)),
        ("Tỉnh Quảng Ninh", (SCHEME_2025, Level.PROVINCE, 22)),
        ("Thành phố Cao Bằng", (SCHEME_LEGACY, Level.DISTRICT, 40)),
    ],
)
def test_common_written_forms_resolve(regions: RegionIndex, query: str, key: tuple) -> None:
    """Abbreviated prefixes (P., Q., TX., H., X., TT., Tp.) and everyday city names resolve to the unit meant."""
    assert _key(regions.one(query)) == key


def test_accents_tell_namesakes_apart(regions: RegionIndex) -> None:
    """'Xã Văn Lăng' and 'Xã Văn Lang' of Thái Nguyên are two communes; without accents the name is ambiguous."""
    assert regions.one("Xã Văn Lăng").code == 5665
    assert regions.one("Thái Nguyên, Xã Văn Lang").code == 2143
    with pytest.raises(AmbiguousRegion):
        regions.one("Xa Van Lang, Thai Nguyen")


def test_a_legacy_province_and_a_ward_of_today_resolve_together(regions: RegionIndex) -> None:
    """'Quảng Nam, Phường Hội An' names today's ward formed from old Quảng Nam."""
    assert _key(regions.one("Quảng Nam, Phường Hội An")) == (SCHEME_2025, Level.COMMUNE, 20410)


def test_cli_regions_show_names_only_todays_provinces_as_where_it_is_now(cli) -> None:
    """'Quảng Nam' is shown as the old province, and 'Nay thuộc' names only Đà Nẵng."""
    code, out, _err = cli("regions", "show", "Quảng Nam")
    assert code == 0
    assert "Quảng Nam → Tỉnh Quảng Nam (cũ) [mã tỉnh cũ 49]" in out
    now_line = next(line for line in out.splitlines() if line.startswith("Nay thuộc:"))
    assert now_line == "Nay thuộc: Thành phố Đà Nẵng [mã tỉnh 48]"
