"""A realistic synthetic population of one province, for demos and benchmarks.

Numbers use real mobile prefixes in roughly the market's carrier shares, spread over the
province's communes with uneven (log-normal) sizes, in the mix of written forms real lists
carry. The same seed always gives the same people, so generating twice updates, not adds.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

from dispatcher.domain import Audience
from dispatcher.phones import Carrier, InvalidNumber, PhoneBook
from dispatcher.regions import SCHEME_2025, RegionIndex

# Approximate subscriber shares and the prefixes (national digits) each carrier sells.
CARRIER_MIX: dict[Carrier, tuple[float, list[str]]] = {
    Carrier.VIETTEL: (0.54, ["32", "33", "34", "35", "36", "37", "38", "39", "86", "96", "97", "98"]),
    Carrier.VINAPHONE: (0.20, ["81", "82", "83", "84", "85", "88", "91", "94"]),
    Carrier.MOBIFONE: (0.18, ["70", "76", "77", "78", "79", "896", "897", "898", "899", "90", "93"]),
    Carrier.VIETNAMOBILE: (0.04, ["56", "58"]),
    Carrier.ITEL: (0.02, ["87"]),
    Carrier.GMOBILE: (0.015, ["59", "993", "994", "995", "996", "997"]),
    Carrier.REDDI: (0.005, ["559"]),
}
AUDIENCE_SHARES = {
    Audience.STUDENT: 0.18,
    Audience.ELDERLY: 0.14,
    Audience.WORKER: 0.12,
    Audience.BUSINESS: 0.06,
    Audience.OFFICIAL: 0.05,
    Audience.LEADER: 0.005,
    Audience.TELECOM_STAFF: 0.003,
    Audience.JOURNALIST: 0.002,
}
ZALO_SHARE = 0.65
OPT_OUT_SHARE = 0.004
LEGACY_DISTRICT_SHARE = 0.6
HEADER = ["msisdn", "province", "commune", "legacy_district", "audiences", "channels", "opt_out"]


@dataclass(frozen=True)
class _Block:
    """One prefix and the permutation that walks its numbers without repeats."""

    prefix: str
    space: int
    step: int
    offset: int

    def number(self, index: int) -> str:
        suffix = (self.step * index + self.offset) % self.space
        return self.prefix + str(suffix).zfill(9 - len(self.prefix))


def _blocks(rng: random.Random) -> tuple[list[_Block], list[float]]:
    phones = PhoneBook()
    blocks, weights = [], []
    for share, prefixes in CARRIER_MIX.values():
        for prefix in prefixes:
            space = 10 ** (9 - len(prefix))
            step = rng.randrange(1, space) | 1
            while step % 5 == 0:  # coprime with 10^n, so index → suffix is a permutation
                step = rng.randrange(1, space) | 1
            block = _Block(prefix, space, step, rng.randrange(space))
            try:
                phones.normalize("0" + block.number(0))
            except InvalidNumber:
                continue
            blocks.append(block)
            weights.append(share / len(prefixes))
    return blocks, weights


def _written(national: str, rng: random.Random) -> str:
    """One of the ways numbers appear in real lists."""
    form = rng.random()
    if form < 0.6:
        return "0" + national
    if form < 0.75:
        return "84" + national
    if form < 0.9:
        return f"+84 {national[:2]} {national[2:5]} {national[5:]}"
    return f"0{national[:3]} {national[3:6]} {national[6:]}"


def generate(regions: RegionIndex, province_code: int, count: int, seed: int) -> Iterator[list[str]]:
    """`count` subscriber rows (in HEADER's columns) living in province `province_code`."""
    rng = random.Random(seed)
    province = regions.province(province_code, SCHEME_2025)
    communes = regions.communes_by_province[province.code]
    commune_weights = list(itertools.accumulate(math.exp(rng.gauss(0, 0.8)) for _ in communes))
    districts = {c.code: _single_district(regions, c.code) for c in communes}
    blocks, block_weights = _blocks(rng)
    block_indexes = range(len(blocks))
    block_weights = list(itertools.accumulate(block_weights))
    used = [0] * len(blocks)
    for _ in range(count):
        b = rng.choices(block_indexes, cum_weights=block_weights)[0]
        national = blocks[b].number(used[b])
        used[b] += 1
        commune = rng.choices(communes, cum_weights=commune_weights)[0]
        district = districts[commune.code] if rng.random() < LEGACY_DISTRICT_SHARE else None
        audiences = ["public"] + [a.slug for a, share in AUDIENCE_SHARES.items() if rng.random() < share]
        channels = "sms,zalo" if rng.random() < ZALO_SHARE else "sms"
        yield [
            _written(national, rng), str(province.code), str(commune.code), str(district or ""),
            ",".join(audiences), channels, "1" if rng.random() < OPT_OUT_SHARE else "",
        ]  # fmt: skip


def _single_district(regions: RegionIndex, commune_code: int) -> int | None:
    """The legacy district a commune was formed from, when it came from exactly one."""
    districts = {old.district_code for old in regions.sources.get(commune_code, [])}
    return districts.pop() if len(districts) == 1 else None
