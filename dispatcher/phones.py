"""Vietnamese mobile numbers: normalisation to E.164, allocation carrier, masking.

`phonenumbers` parses about 40,000 numbers a second per core, too slow for a million-row
import. In its metadata for Vietnam, validity, number type and allocation carrier depend on
at most the first four national digits (mobile patterns such as `121[0-3]\\d{5}`, carrier
prefixes of at most three digits; tests/test_phones.py checks every prefix), so `PhoneBook`
strips a number to its national digits by hand and asks `phonenumbers` once per
(length, first four digits).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum

import phonenumbers
from phonenumbers import PhoneNumberType

COUNTRY_CODE = "84"


class Carrier(StrEnum):
    """Allocation carriers of Vietnamese mobile numbers (a routing hint: numbers are portable)."""

    VIETTEL = "viettel"
    """Viettel: 032–039, 086, 096–098."""
    VINAPHONE = "vinaphone"
    """VinaPhone (VNPT): 081–085, 088, 091, 094."""
    MOBIFONE = "mobifone"
    """MobiFone: 070, 076–079, 089, 090, 093."""
    VIETNAMOBILE = "vietnamobile"
    """Vietnamobile: 052, 056, 058, 092."""
    GMOBILE = "gmobile"
    """Gmobile (Gtel): 059, 099."""
    ITEL = "itel"
    """Itel (Indochina Telecom, on VinaPhone's network): 087, 0998–0999."""
    REDDI = "reddi"
    """Reddi (Mobicast): 055."""
    UNKNOWN = "unknown"
    """A valid mobile number whose block has no carrier on record."""


_LIBRARY_NAMES = {
    "viettel": Carrier.VIETTEL,
    "vinaphone": Carrier.VINAPHONE,
    "mobifone": Carrier.MOBIFONE,
    "vietnamobile": Carrier.VIETNAMOBILE,
    "g-mobile": Carrier.GMOBILE,
    "indochina telecom": Carrier.ITEL,
    "reddi": Carrier.REDDI,
}

# What people write in a `carrier` column, after lower-casing and dropping spaces and dashes.
CARRIER_ALIASES = {
    **{c.value: c for c in Carrier if c is not Carrier.UNKNOWN},
    "vina": Carrier.VINAPHONE,
    "vnpt": Carrier.VINAPHONE,
    "mobi": Carrier.MOBIFONE,
    "vnmobile": Carrier.VIETNAMOBILE,
    "gtel": Carrier.GMOBILE,
    "indochinatelecom": Carrier.ITEL,
    "mobicast": Carrier.REDDI,
}

# Blocks where the library's allocation name is not the operator users know.
_PREFIX_OVERRIDES = {"87": Carrier.ITEL, "998": Carrier.ITEL, "999": Carrier.ITEL}

# 11-digit mobile prefixes retired in 2018 → today's 10-digit prefix (national digits, no 0).
OLD_PREFIXES = {
    **{f"16{d}": f"3{d}" for d in "23456789"},
    "120": "70", "121": "79", "122": "77", "126": "76", "128": "78",
    "123": "83", "124": "84", "125": "85", "127": "81", "129": "82",
    "186": "56", "188": "58", "199": "59",
}  # fmt: skip

_SEPARATORS = re.compile(r"[\s.\-()/]+")

_TYPE_REASONS = {
    PhoneNumberType.FIXED_LINE: "số máy bàn (cố định), không nhận được SMS",
    PhoneNumberType.TOLL_FREE: "số tổng đài miễn phí, không phải thuê bao di động",
    PhoneNumberType.PREMIUM_RATE: "số dịch vụ giá cao, không phải thuê bao di động",
    PhoneNumberType.SHARED_COST: "số tổng đài, không phải thuê bao di động",
    PhoneNumberType.UAN: "số tổng đài, không phải thuê bao di động",
    PhoneNumberType.VOIP: "số VoIP, không phải thuê bao di động",
}


class InvalidNumber(ValueError):
    """A number that cannot receive our SMS; the message is the reason, in Vietnamese."""


@dataclass(frozen=True)
class Msisdn:
    """A valid Vietnamese mobile number."""

    e164: str
    carrier: Carrier


@dataclass
class PhoneBook:
    """Normalises numbers, remembering what `phonenumbers` said about each prefix."""

    _verdicts: dict[tuple[int, str], Carrier | InvalidNumber] = field(default_factory=dict)

    def normalize(self, raw: str) -> Msisdn:
        """The E.164 form and allocation carrier of `raw`, or InvalidNumber with the reason."""
        national = national_digits(raw)
        key = (len(national), national[:4])
        verdict = self._verdicts.get(key)
        if verdict is None:
            verdict = self._verdicts[key] = _classify(national)
        if isinstance(verdict, InvalidNumber):
            raise InvalidNumber(*verdict.args)
        return Msisdn(e164=f"+{COUNTRY_CODE}{national}", carrier=verdict)


def national_digits(raw: str) -> str:
    """The national significant digits of a Vietnamese number in any common written form."""
    text = _SEPARATORS.sub("", raw.strip())
    if not text:
        raise InvalidNumber("thiếu số điện thoại")
    international = text.startswith(("+", "00"))
    digits = text.lstrip("+")
    if digits.startswith("00"):
        digits = digits[2:]
    if not digits.isdigit() or not digits.isascii():
        raise InvalidNumber(f"không phải số điện thoại: {raw.strip()!r}")
    if international:
        if not digits.startswith(COUNTRY_CODE):
            raise InvalidNumber("số nước ngoài, chỉ nhận số Việt Nam (+84)")
        digits = digits[2:]
    elif digits.startswith(COUNTRY_CODE) and len(digits) in (11, 12):
        digits = digits[2:]
    digits = digits.removeprefix("0")
    if len(digits) == 10 and digits[:3] in OLD_PREFIXES:
        digits = OLD_PREFIXES[digits[:3]] + digits[3:]
    return digits


def _classify(national: str) -> Carrier | InvalidNumber:
    """The carrier of a mobile number, or why it cannot receive SMS."""
    if len(national) < 8:
        return InvalidNumber("số quá ngắn (đầu số ngắn hoặc thiếu chữ số)")
    if len(national) > 10:
        return InvalidNumber("số quá dài")
    number = phonenumbers.parse(f"+{COUNTRY_CODE}{national}")
    if not phonenumbers.is_valid_number(number):
        return InvalidNumber("số không hợp lệ (đầu số chưa được cấp hoặc sai độ dài)")
    kind = phonenumbers.number_type(number)
    if kind != PhoneNumberType.MOBILE:
        return InvalidNumber(_TYPE_REASONS.get(kind, "không phải số di động"))
    from phonenumbers import carrier  # its data takes 0.4 s to import: only when a prefix is new

    override = _PREFIX_OVERRIDES.get(national[:3]) or _PREFIX_OVERRIDES.get(national[:2])
    name = carrier.name_for_number(number, "en").lower()
    if override or name:
        return override or _LIBRARY_NAMES.get(name, Carrier.UNKNOWN)
    return Carrier.GMOBILE if national.startswith("99") else Carrier.UNKNOWN


def parse_carrier(text: str) -> Carrier:
    """A carrier named the way people write it ('Viettel', 'VNPT', 'G-Mobile'…)."""
    key = re.sub(r"[\s\-_]", "", text.strip().lower())
    try:
        return CARRIER_ALIASES[key]
    except KeyError:
        known = ", ".join(c.value for c in Carrier if c is not Carrier.UNKNOWN)
        raise InvalidNumber(f"nhà mạng không rõ {text.strip()!r} (nhận: {known})") from None


def mask(e164: str) -> str:
    """'+84905123456' → '+8490****456': enough to recognise, not enough to call."""
    return mask_digits(e164)


def mask_digits(written: str) -> str:
    """Any value given as a phone number, masked even when it is not a valid one."""
    digits = re.sub(r"\D", "", written)
    if len(digits) < 7:
        return "*" * len(digits)
    return ("+" if written.strip().startswith("+") else "") + digits[:4] + "*" * (len(digits) - 7) + digits[-3:]


# A run of 9–13 digits, possibly with a leading + and single spaces, dots or dashes inside.
_PHONE_LIKE = re.compile(r"(?<![\w+.,])\+?\d(?:[ .\-]?\d){8,12}(?!\w)")
# Digit strings a phone number takes once separators are gone: Vietnamese mobiles (also the
# old 11-digit ones), Vietnamese landlines written with 0 or 84, and any +international number.
_NUMBER_SHAPES = re.compile(
    r"^(?:(?:00|\+)?84|0)?[35789]\d{8}$|^0?1[2689]\d{8}$|^(?:(?:00|\+)?84|0)2\d{9}$|^\+\d{8,15}$"
)


def mask_text(text: str) -> str:
    """`text` with every phone number masked, whatever its written form.

    Dates, times and amounts ('2026-11-23 09:00', '12 000 000 đồng') are left alone: a run is
    masked only when its digits have the shape of a phone number.
    """
    return _PHONE_LIKE.sub(_mask_match, text)


def _mask_match(match: re.Match[str]) -> str:
    written = match.group()
    digits = re.sub(r"\D", "", written)
    if not _NUMBER_SHAPES.match(("+" if written.startswith("+") else "") + digits):
        return written
    return mask_digits(written)
