"""The SMS text engine: NFC, GSM-7 detection, part counting and the không-dấu rendering."""

from __future__ import annotations

import math
import string
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher import smstext
from dispatcher.smstext import Encoding

# The 67 lower-case Vietnamese letters that carry a mark (12 vowels × 5 tones, 6 hatted or
# horned vowels, đ) and their capitals, built from the marks rather than copied from the code.
_VOWELS = "aăâeêioôơuưy"
_TONES = ["", "\u0300", "\u0301", "\u0309", "\u0303", "\u0323"]
_LOWER = [unicodedata.normalize("NFC", v + t) for v in _VOWELS for t in _TONES if not (v + t).isascii()] + ["đ"]
VIETNAMESE_LETTERS = _LOWER + [c.upper() for c in _LOWER]
GSM7_VIETNAMESE = {"à", "è", "é", "ì", "ò", "ù", "É"}
EXTENSION = "[]{}|^~\\€"
EMOJI = "😀🚨📵👮"

# Units in one part, alone and concatenated (GSM 03.38 / 3GPP 23.040), stated here, not read from the code.
SPEC_LIMITS = {Encoding.GSM7: (160, 153), Encoding.UCS2: (70, 67)}

relaxed = settings(deadline=None)

ASCII_WORDS = list(string.ascii_letters + string.digits + " .,:!?")


def text_of(*alphabets: list[str] | str, max_size: int) -> st.SearchStrategy[str]:
    """Texts drawn from the characters of `alphabets`, of any length up to `max_size`.

    The length is drawn first: left alone, hypothesis keeps texts short and never crosses a part boundary.
    """
    chars = st.sampled_from([c for alphabet in alphabets for c in alphabet])
    return st.integers(0, max_size).flatmap(lambda size: st.text(alphabet=chars, min_size=size, max_size=size))


# Text as authors write it: Vietnamese letters, ASCII, extension characters, emoji; all NFC.
sms_text = text_of(VIETNAMESE_LETTERS, ASCII_WORDS, EXTENSION, EMOJI, max_size=400)
# Mostly-GSM text, so that long GSM-7 texts with extension characters are common.
gsm_text = text_of(ASCII_WORDS, EXTENSION, max_size=500)
any_text = st.one_of(sms_text, gsm_text, st.integers(0, 300).flatmap(lambda n: st.text(min_size=n, max_size=n)))
vietnamese_text = text_of(
    VIETNAMESE_LETTERS, string.ascii_letters, string.digits, string.punctuation, " \n", max_size=300
)
# Neither extension nor astral characters: every character costs exactly one unit.
plain_text = text_of(VIETNAMESE_LETTERS, ASCII_WORDS, "'\"()-+=/@#%&*<>;", max_size=500)


def reference_parts(text: str) -> int:
    """Parts by the textbook formula (shared/reference/vietnam-domain.md §4), without boundary care."""
    text = unicodedata.normalize("NFC", text)
    try:
        units, single, concatenated = len(text.encode("gsm03.38")), 160, 153
    except UnicodeEncodeError:
        units, single, concatenated = len(text.encode("utf-16-be")) // 2, 70, 67
    if units == 0:
        return 0
    return 1 if units <= single else math.ceil(units / concatenated)


def units_of(part: str, encoding: Encoding) -> int:
    """Septets or UTF-16 code units `part` takes, counted with the codecs directly."""
    if encoding is Encoding.GSM7:
        return len(part.encode("gsm03.38"))
    return len(part.encode("utf-16-be")) // 2


# -- normalisation ----------------------------------------------------------------------------


def test_nfd_cảnh_báo_is_ten_units_and_nfc_eight() -> None:
    """'Cảnh báo' typed with combining marks is 10 code units; its NFC form is 8."""
    nfd = unicodedata.normalize("NFD", "Cảnh báo")
    assert len(nfd) == 10
    assert smstext.normalize(nfd) == "Cảnh báo"
    assert len(smstext.normalize(nfd)) == 8


def test_measure_counts_the_nfc_form() -> None:
    """measure() bills the NFC form, so combining marks from a keyboard cost nothing extra."""
    info = smstext.measure(unicodedata.normalize("NFD", "Cảnh báo"))
    assert (info.text, info.characters, info.units, info.parts) == ("Cảnh báo", 8, 8, 1)
    assert info.encoding is Encoding.UCS2


@relaxed
@given(sms_text)
def test_nfd_and_nfc_spellings_cost_the_same(text: str) -> None:
    """Any text measures the same whichever way its marks were typed."""
    assert smstext.measure(unicodedata.normalize("NFD", text)) == smstext.measure(text)


# -- GSM-7 detection --------------------------------------------------------------------------


def test_the_alphabet_has_134_vietnamese_letters_with_marks() -> None:
    """The test's own alphabet is complete: 67 lower-case and 67 capital letters, all distinct."""
    assert len(set(VIETNAMESE_LETTERS)) == 134


def test_only_seven_vietnamese_letters_are_gsm7() -> None:
    """Of the Vietnamese letters with marks only à è é ì ò ù É exist in GSM-7."""
    assert {c for c in VIETNAMESE_LETTERS if smstext.is_gsm7(c)} == GSM7_VIETNAMESE


@pytest.mark.parametrize("letter", list("đĐăâêôơưạảấầẩẫậếờựỹÀÁÂÃÊÍÓÔÕÚÝ"))
def test_vietnamese_letters_force_ucs2(letter: str) -> None:
    """đ, the hatted and horned vowels and toned letters send a text as UCS-2."""
    assert not smstext.is_gsm7(f"Xin chao {letter}")
    assert smstext.encoding_of(f"Xin chao {letter}") is Encoding.UCS2


def test_plain_ascii_and_the_seven_letters_stay_gsm7() -> None:
    """A text of ASCII and à è é ì ò ù É travels as GSM-7."""
    assert smstext.encoding_of("Canh bao: goi 113 ngay! àèéìòùÉ") is Encoding.GSM7


# -- part counting ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("", 0),
        ("a", 1),
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("ạ" * 70, 1),
        ("ạ" * 71, 2),
        ("ạ" * 134, 2),
        ("ạ" * 135, 3),
    ],
    ids=["empty", "gsm-1", "gsm-160", "gsm-161", "gsm-306", "gsm-307", "ucs-70", "ucs-71", "ucs-134", "ucs-135"],
)
def test_parts_follow_the_single_and_concatenated_limits(text: str, parts: int) -> None:
    """GSM-7 holds 160 septets in one part and 153 per part after; UCS-2 holds 70 and 67."""
    assert smstext.measure(text).parts == parts
    assert smstext.count_parts(text) == parts


@pytest.mark.parametrize("char", list(EXTENSION))
def test_extension_characters_cost_two_septets(char: str) -> None:
    """[ ] { } | ^ ~ \\ € each take an escape septet and their own."""
    info = smstext.measure(f"a{char}")
    assert info.encoding is Encoding.GSM7
    assert (info.characters, info.units) == (2, 3)


def test_eighty_euro_signs_fill_one_part_exactly() -> None:
    """80 '€' are 160 septets, one part; one more character makes two."""
    assert smstext.measure("€" * 80).parts == 1
    assert smstext.measure("€" * 80 + "a").parts == 2


def test_a_part_boundary_never_splits_an_escape_pair() -> None:
    """With 152 septets used, a '€' does not fit in the part's last septet and moves on whole."""
    parts = smstext.split_parts("a" * 152 + "€" + "b" * 10)
    assert parts == ["a" * 152, "€" + "b" * 10]


def test_an_emoji_costs_two_ucs2_units() -> None:
    """A character outside the BMP is a surrogate pair: 35 emoji fill one part, 36 need two."""
    assert smstext.measure("😀").units == 2
    assert smstext.measure("😀" * 35).parts == 1
    assert smstext.measure("😀" * 36).parts == 2


def test_a_part_boundary_never_splits_a_surrogate_pair() -> None:
    """With 66 units used, an emoji does not fit in the part's last unit and moves on whole."""
    parts = smstext.split_parts("ạ" * 66 + "😀" + "ạ" * 10)
    assert parts == ["ạ" * 66, "😀" + "ạ" * 10]


def test_a_typical_warning_takes_three_parts_with_marks_and_one_without() -> None:
    """A 140-odd character warning is 3 UCS-2 parts with diacritics and 1 GSM-7 part without."""
    text = (
        "Cảnh báo: công an không gọi điện yêu cầu chuyển tiền hay cài ứng dụng. "
        "Thấy nghi ngờ, hãy cúp máy và gọi 113 hoặc đến trụ sở công an gần nhất."
    )
    assert 135 <= len(text) <= 160
    report = smstext.inspect(text)
    assert (report["encoding"], report["parts"]) == ("UCS-2", 3)
    assert (report["ascii_encoding"], report["ascii_parts"]) == ("GSM-7", 1)


# -- properties of the split ------------------------------------------------------------------


@relaxed
@given(any_text)
def test_joining_the_parts_gives_the_text_back(text: str) -> None:
    """split_parts loses and reorders nothing of the NFC text."""
    assert "".join(smstext.split_parts(text)) == smstext.normalize(text)


@relaxed
@given(any_text)
def test_every_part_fits_its_limit(text: str) -> None:
    """A lone part fits the single limit; concatenated parts each fit 153 septets or 67 units."""
    encoding = smstext.encoding_of(text)
    parts = smstext.split_parts(text)
    single, concatenated = SPEC_LIMITS[encoding]
    limit = single if len(parts) == 1 else concatenated
    assert all(units_of(part, encoding) <= limit for part in parts)


@relaxed
@given(any_text)
def test_split_parts_agrees_with_measure(text: str) -> None:
    """The parts split_parts makes of the NFC form are as many as measure() bills."""
    assert len(smstext.split_parts(smstext.normalize(text))) == smstext.measure(text).parts


@relaxed
@given(sms_text)
def test_split_parts_of_author_text_agrees_with_measure(text: str) -> None:
    """For NFC text as authors write it, split_parts and measure() count the same parts."""
    assert len(smstext.split_parts(text)) == smstext.measure(text).parts


@relaxed
@given(sms_text, st.sampled_from(VIETNAMESE_LETTERS + list("a €[😀")))
def test_adding_a_character_never_reduces_the_parts(text: str, char: str) -> None:
    """Parts are monotonic: a longer text never costs less, even when it switches to UCS-2."""
    assert smstext.measure(text + char).parts >= smstext.measure(text).parts


@relaxed
@given(plain_text)
def test_parts_match_the_textbook_formula_without_escapes_or_emoji(text: str) -> None:
    """Where every character costs one unit, parts are 1 up to the single limit, else ceil(n / 153 or 67)."""
    assert smstext.measure(text).parts == reference_parts(text)


# -- the không-dấu rendering ------------------------------------------------------------------


def test_to_ascii_drops_tones_marks_and_the_stroke_of_đ() -> None:
    """'Đường Trường Sơn' becomes 'Duong Truong Son'."""
    assert smstext.to_ascii("Đường Trường Sơn") == "Duong Truong Son"


@pytest.mark.parametrize(
    ("text", "ascii_text"),
    [
        ("\u201cOTP\u201d", '"OTP"'),
        ("\u2018OTP\u2019", "'OTP'"),
        ("\u00abOTP\u00bb", '"OTP"'),
        ("9h\u201310h", "9h-10h"),
        ("A\u2014B", "A-B"),
        ("Cho\u2026", "Cho..."),
        ("50.000\u20ab", "50.000d"),
        ("113\u00a0ngay", "113 ngay"),
        ("`x`", "'x'"),
    ],
    ids=["double-quotes", "single-quotes", "guillemets", "en-dash", "em-dash", "ellipsis", "dong", "nbsp", "backtick"],
)
def test_to_ascii_straightens_typography(text: str, ascii_text: str) -> None:
    """Curly quotes, dashes, the ellipsis and other typography get their plain GSM-7 form."""
    assert smstext.to_ascii(text) == ascii_text
    assert smstext.is_gsm7(smstext.to_ascii(text))


@relaxed
@given(st.one_of(vietnamese_text, st.text()))
def test_to_ascii_leaves_no_combining_mark_and_no_đ(text: str) -> None:
    """Whatever goes in, no combining mark and no đ or Đ comes out."""
    result = smstext.to_ascii(text)
    assert not any(unicodedata.combining(char) for char in result)
    assert "đ" not in result
    assert "Đ" not in result


@relaxed
@given(vietnamese_text)
def test_to_ascii_of_vietnamese_is_gsm7(text: str) -> None:
    """Vietnamese letters, digits and ASCII punctuation always become pure GSM-7."""
    assert smstext.is_gsm7(smstext.to_ascii(text))


@relaxed
@given(st.one_of(vietnamese_text, st.text()))
def test_to_ascii_is_idempotent(text: str) -> None:
    """Rendering không dấu twice changes nothing the first pass did not."""
    once = smstext.to_ascii(text)
    assert smstext.to_ascii(once) == once


def test_to_ascii_keeps_emoji_for_the_caller_to_check() -> None:
    """Emoji survive to_ascii and are reported as the characters GSM-7 cannot carry."""
    assert smstext.to_ascii("Cảnh báo 🚨") == "Canh bao 🚨"
    assert smstext.non_gsm_characters("Canh bao 🚨🚨") == ["🚨"]


# -- inspect ----------------------------------------------------------------------------------


def test_inspect_reports_both_renderings() -> None:
    """inspect() gives the encoding, length and parts of the text and of its không-dấu form."""
    report = smstext.inspect("Cảnh báo lừa đảo")
    assert {"encoding", "characters", "parts", "ascii", "ascii_parts"} <= report.keys()
    assert report["encoding"] == "UCS-2"
    assert report["characters"] == 16
    assert report["parts"] == 1
    assert report["ascii"] == "Canh bao lua dao"
    assert report["ascii_parts"] == 1
