"""Vietnamese mobile numbers: E.164 normalisation, rejections, allocation carriers and masking."""

from __future__ import annotations

import random

import phonenumbers
import phonenumbers.carrier
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from phonenumbers import PhoneNumber, PhoneNumberType

from dispatcher.phones import OLD_PREFIXES, Carrier, InvalidNumber, PhoneBook, mask, mask_text, parse_carrier


def is_valid_mobile(national: str) -> bool:
    """phonenumbers' own verdict on +84 `national`: valid and of type MOBILE."""
    number = PhoneNumber(country_code=84, national_number=int(national))
    return phonenumbers.is_valid_number(number) and phonenumbers.number_type(number) == PhoneNumberType.MOBILE


# -- written forms ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    ["0905 123 456", "84905123456", "+84 905-123-456", "0084905123456", "905123456", "(090) 512.3456", " 0905123456 "],
)
def test_every_common_written_form_normalises_to_e164(raw: str) -> None:
    """Spaces, dashes, dots, brackets, 0, 84, +84 and 0084 all give the same E.164 number."""
    assert PhoneBook().normalize(raw).e164 == "+84905123456"


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("0168 123 4567", "+84381234567"),
        ("01201234567", "+84701234567"),
        ("0123 123 4567", "+84831234567"),
        ("+84 186 123 4567", "+84561234567"),
        ("8419 9123 4567", "+84591234567"),
    ],
)
def test_an_old_eleven_digit_number_gets_its_ten_digit_form(raw: str, e164: str) -> None:
    """Numbers written before the 2018 change (0168…, 0120…, 0123…, 0186…, 0199…) still reach the person."""
    assert PhoneBook().normalize(raw).e164 == e164


@pytest.mark.parametrize(("old", "new"), sorted(OLD_PREFIXES.items()))
def test_every_old_prefix_maps_to_a_valid_mobile_block(old: str, new: str) -> None:
    """Each retired 11-digit prefix maps to a block phonenumbers accepts as mobile."""
    assert PhoneBook().normalize(f"0{old}1234567").e164 == f"+84{new}1234567"
    assert is_valid_mobile(f"{new}1234567")


# -- rejections -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("02438123456", "máy bàn"),
        ("028 3823 4567", "máy bàn"),
        ("1900123456", "giá cao"),
        ("18001234", "miễn phí"),
        ("113", "quá ngắn"),
        ("+1 415 555 0100", "nước ngoài"),
        ("0044 20 7946 0958", "nước ngoài"),
        ("09O5 123 456", "không phải số điện thoại"),
        ("", "thiếu"),
        ("   ", "thiếu"),
        ("09051234567890", "quá dài"),
        ("0551234567", "không hợp lệ"),
    ],
    ids=[
        "hanoi-landline",
        "hcmc-landline",
        "premium-1900",
        "toll-free-1800",
        "short-code",
        "us-number",
        "uk-number",
        "letter-o",
        "empty",
        "blank",
        "too-long",
        "unassigned-block",
    ],
)
def test_a_number_that_cannot_receive_sms_is_refused_with_a_vietnamese_reason(raw: str, reason: str) -> None:
    """Landlines, service numbers, short codes, foreign numbers and garbage raise InvalidNumber saying why."""
    with pytest.raises(InvalidNumber, match=reason):
        PhoneBook().normalize(raw)


def test_a_cached_rejection_is_raised_again_for_the_next_number() -> None:
    """The second number of a refused block is refused with the same reason."""
    book = PhoneBook()
    for raw in ("02438123456", "02438654321"):
        with pytest.raises(InvalidNumber, match="máy bàn"):
            book.normalize(raw)


# -- carriers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "carrier"),
    [
        ("0981234567", Carrier.VIETTEL),
        ("0321234567", Carrier.VIETTEL),
        ("0912345678", Carrier.VINAPHONE),
        ("0831234567", Carrier.VINAPHONE),
        ("0905123456", Carrier.MOBIFONE),
        ("0701234567", Carrier.MOBIFONE),
        ("0561234567", Carrier.VIETNAMOBILE),
        ("0921234567", Carrier.VIETNAMOBILE),
        ("0871234567", Carrier.ITEL),
        ("0998123456", Carrier.ITEL),
        ("0591234567", Carrier.GMOBILE),
        ("0995123456", Carrier.GMOBILE),
        ("0559123456", Carrier.REDDI),
    ],
)
def test_the_allocation_carrier_follows_the_block(raw: str, carrier: Carrier) -> None:
    """Each block reports the carrier it was allocated to, Itel and Gmobile included."""
    assert PhoneBook().normalize(raw).carrier is carrier


@pytest.mark.parametrize(
    ("text", "carrier"),
    [
        ("Viettel", Carrier.VIETTEL),
        ("VNPT", Carrier.VINAPHONE),
        ("Vina Phone", Carrier.VINAPHONE),
        ("G-Mobile", Carrier.GMOBILE),
        ("mobi", Carrier.MOBIFONE),
        (" MobiFone ", Carrier.MOBIFONE),
        ("Vietnamobile", Carrier.VIETNAMOBILE),
        ("Indochina Telecom", Carrier.ITEL),
        ("reddi", Carrier.REDDI),
    ],
)
def test_parse_carrier_accepts_the_names_people_write(text: str, carrier: Carrier) -> None:
    """A carrier column may say 'Viettel', 'VNPT', 'G-Mobile' or 'mobi'."""
    assert parse_carrier(text) is carrier


def test_parse_carrier_refuses_an_unknown_carrier() -> None:
    """An unknown carrier raises InvalidNumber naming it and listing the known ones."""
    with pytest.raises(InvalidNumber, match=r"nhà mạng không rõ 'Beeline'.*viettel"):
        parse_carrier("Beeline")


# -- the per-prefix cache ---------------------------------------------------------------------


def test_only_nine_digit_national_numbers_can_be_mobiles() -> None:
    """phonenumbers knows no Vietnamese mobile of another length, so the cache matters at length 9."""
    metadata = phonenumbers.PhoneMetadata.metadata_for_region("VN")
    assert tuple(metadata.mobile.possible_length) == (9,)


def accepts(book: PhoneBook, national: str) -> bool:
    """Whether `book` normalises +84 `national` instead of refusing it."""
    try:
        book.normalize(f"+84{national}")
    except InvalidNumber:
        return False
    return True


def numbers_in_block(rng: random.Random, block: int) -> list[str]:
    """Three random nine-digit national numbers under each of the ten 5-digit prefixes of a 4-digit block."""
    return [f"{block}{digit}{suffix:04d}" for digit in range(10) for suffix in rng.sample(range(10_000), 3)]


def test_the_per_prefix_cache_agrees_with_phonenumbers() -> None:
    """One PhoneBook accepts exactly the numbers phonenumbers calls valid mobiles, under every 5-digit prefix."""
    rng = random.Random(20261123)
    book = PhoneBook()
    disagreements, blocks_with_two_carriers = [], []
    for block in range(1_000, 10_000):
        carrier_names = set()
        for national in numbers_in_block(rng, block):
            accepted = accepts(book, national)
            if accepted != is_valid_mobile(national):
                disagreements.append(national)
            elif accepted:
                number = PhoneNumber(country_code=84, national_number=int(national))
                carrier_names.add(phonenumbers.carrier.name_for_number(number, "en"))
        # The cached carrier is sound only if phonenumbers names one carrier for a whole block.
        if len(carrier_names) > 1:
            blocks_with_two_carriers.append(block)
    assert disagreements == []
    assert blocks_with_two_carriers == []


# -- every form of a valid number -------------------------------------------------------------

MOBILE_BLOCKS = ["32", "38", "86", "96", "98", "81", "85", "88", "91", "94", "70", "77", "89", "90", "93"]
MOBILE_BLOCKS += ["92", "56", "58", "522", "5599", "87", "99", "59"]


def national_in(block: str, rest: str) -> str:
    """The nine national digits `block` + the first digits of `rest`."""
    return (block + rest)[:9]


# Nine national digits that phonenumbers accepts as a Vietnamese mobile (099x and 055x are only
# partly allocated, hence the filter).
valid_national = st.builds(
    national_in, st.sampled_from(MOBILE_BLOCKS), st.text(alphabet="0123456789", min_size=8, max_size=8)
).filter(is_valid_mobile)


def written_forms(national: str) -> list[str]:
    """The ways people write +84 `national`."""
    spaced = f"{national[:2]} {national[2:5]} {national[5:]}"
    return [
        f"0{national}",
        f"84{national}",
        f"+84{national}",
        f"+84 {spaced}",
        f"0084{national}",
        f"0{national[:2]}-{national[2:5]}-{national[5:]}",
        f"0{national[:3]}.{national[3:6]}.{national[6:]}",
        national,
    ]


@settings(deadline=None)
@given(valid_national)
def test_every_written_form_of_a_valid_mobile_gives_one_e164(national: str) -> None:
    """0…, 84…, +84 with spaces, 0084… and the bare nine digits are the same subscriber."""
    book = PhoneBook()
    assert {book.normalize(raw).e164 for raw in written_forms(national)} == {f"+84{national}"}


# -- masking ----------------------------------------------------------------------------------


def test_mask_keeps_enough_to_recognise_and_not_enough_to_call() -> None:
    """'+84905123456' is shown as '+8490****456'."""
    assert mask("+84905123456") == "+8490****456"


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("Gọi 0905 123 456 ngay", "Gọi 0905***456 ngay"),
        ("số +84905123456.", "số +8490****456."),
        ("(84-905-123-456)", "(8490****456)"),
        ("0084905123456", "0084******456"),
        ("tel:0905.123.456", "tel:0905***456"),
    ],
)
def test_mask_text_masks_a_number_in_any_written_form(text: str, masked: str) -> None:
    """Spaced, dotted, dashed and international numbers inside free text are all masked."""
    assert mask_text(text) == masked


@pytest.mark.parametrize(
    "text",
    [
        "ngày 2026-11-23",
        "23/11/2026",
        "2026-11-23T09:00:00",
        "mã OTP 123456",
        "gọi 113",
        "id 12345678",
        "0905123456abc",
    ],
)
def test_mask_text_leaves_dates_and_short_numbers_alone(text: str) -> None:
    """Dates, codes and numbers shorter than a phone number are not touched."""
    assert mask_text(text) == text


def test_mask_text_leaves_a_date_and_time_alone() -> None:
    """A timestamp written with a space between date and time is not a phone number."""
    assert mask_text("gửi lúc 2026-11-23 09:00") == "gửi lúc 2026-11-23 09:00"
