"""SMS text engine: normalisation, encoding, part counting and the không-dấu rendering.

Pure functions only. Part counts follow GSM 03.38 / 3GPP 23.040 as carriers and Twilio bill
them: GSM-7 carries 160 septets in one part and 153 per part when concatenated (the UDH takes
the rest), extension characters cost two septets; UCS-2 carries 70 / 67 UTF-16 units, characters
outside the BMP cost two. A part boundary never splits an escape sequence or a surrogate pair.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

import gsm0338  # noqa: F401  (registers the 'gsm03.38' codec)

GSM_CODEC = "gsm03.38"

# Characters a Vietnamese text commonly carries that have a plain GSM-7 equivalent.
_STRAIGHTEN = str.maketrans(
    {
        "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u00ab": '"', "\u00bb": '"',
        "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u2032": "'", "`": "'",
        "\u2013": "-", "\u2014": "-", "\u2212": "-", "\u2010": "-", "\u2011": "-",
        "\u2026": "...", "\u00a0": " ", "\u202f": " ", "\u2009": " ", "\u20ab": "d",
        "\u0111": "d", "\u0110": "D",
    }
)  # fmt: skip


class Encoding(StrEnum):
    """How a text travels over SMS."""

    GSM7 = "GSM-7"
    """The 7-bit default alphabet: 160 characters in one part."""
    UCS2 = "UCS-2"
    """UTF-16: 70 code units in one part; any Vietnamese diacritic forces it."""


@dataclass(frozen=True)
class PartLimits:
    """Capacity of one part in the encoding's unit (septets or UTF-16 code units)."""

    single: int
    concatenated: int


LIMITS = {Encoding.GSM7: PartLimits(160, 153), Encoding.UCS2: PartLimits(70, 67)}


@dataclass(frozen=True)
class TextInfo:
    """What a text costs as an SMS."""

    text: str
    encoding: Encoding
    characters: int
    units: int
    parts: int


def normalize(text: str) -> str:
    """The NFC form: 'Cảnh báo' typed with combining marks becomes 8 code units, not 10."""
    return unicodedata.normalize("NFC", text)


@lru_cache(maxsize=4096)
def _gsm_cost(char: str) -> int | None:
    """Septets `char` takes in GSM-7 (1, or 2 for an extension character); None if absent."""
    try:
        return len(char.encode(GSM_CODEC))
    except UnicodeEncodeError:
        return None


def is_gsm7(text: str) -> bool:
    """True when every character of `text` exists in the GSM-7 alphabet or its extension."""
    return all(_gsm_cost(char) is not None for char in text)


def encoding_of(text: str) -> Encoding:
    """GSM-7 when the whole text fits the alphabet, UCS-2 otherwise."""
    return Encoding.GSM7 if is_gsm7(text) else Encoding.UCS2


def _unit_costs(text: str, encoding: Encoding) -> list[int]:
    if encoding is Encoding.GSM7:
        costs = [_gsm_cost(char) for char in text]
        if None in costs:
            raise ValueError("text is not GSM-7")
        return costs  # type: ignore[return-value]
    return [2 if ord(char) > 0xFFFF else 1 for char in text]


def split_parts(text: str, encoding: Encoding | None = None) -> list[str]:
    """Split the NFC form of `text` into the parts a carrier sends, never inside a character's units."""
    text = normalize(text)
    encoding = encoding or encoding_of(text)
    costs = _unit_costs(text, encoding)
    limits = LIMITS[encoding]
    if sum(costs) <= limits.single:
        return [text] if text else []
    parts, start, used = [], 0, 0
    for index, cost in enumerate(costs):
        if used + cost > limits.concatenated:
            parts.append(text[start:index])
            start, used = index, 0
        used += cost
    parts.append(text[start:])
    return parts


def measure(text: str, encoding: Encoding | None = None) -> TextInfo:
    """Encoding, characters, billed units and parts of the NFC form of `text`."""
    text = normalize(text)
    encoding = encoding or encoding_of(text)
    units = sum(_unit_costs(text, encoding))
    parts = len(split_parts(text, encoding)) if text else 0
    return TextInfo(text=text, encoding=encoding, characters=len(text), units=units, parts=parts)


def count_parts(text: str) -> int:
    """Parts the NFC form of `text` takes in its natural encoding."""
    return measure(text).parts


def to_ascii(text: str) -> str:
    """The không-dấu rendering: tones and marks dropped, đ→d, quotes and dashes straightened.

    The result may still hold characters outside GSM-7 (emoji, other scripts); callers that
    need GSM-7 check it with `is_gsm7`.
    """
    decomposed = unicodedata.normalize("NFD", text)
    stripped = "".join(char for char in decomposed if not unicodedata.combining(char))
    return unicodedata.normalize("NFC", stripped).translate(_STRAIGHTEN)


def non_gsm_characters(text: str) -> list[str]:
    """The distinct characters of `text` that GSM-7 cannot carry, in order of appearance."""
    return list(dict.fromkeys(char for char in text if _gsm_cost(char) is None))


def inspect(text: str) -> dict[str, object]:
    """The author's check of a text, as `canhbao text inspect --json` prints it."""
    info = measure(text)
    ascii_text = to_ascii(info.text)
    ascii_gsm = is_gsm7(ascii_text)
    return {
        "encoding": str(info.encoding),
        "characters": info.characters,
        "units": info.units,
        "parts": info.parts,
        "ascii": ascii_text,
        "ascii_encoding": str(Encoding.GSM7 if ascii_gsm else Encoding.UCS2),
        "ascii_parts": measure(ascii_text).parts,
        "ascii_non_gsm": non_gsm_characters(ascii_text),
    }
