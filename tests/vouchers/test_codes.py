"""Voucher codes: 80 random bits in Crockford base32, and the forgiving-but-strict reading of typed input."""

import re
import types

import pytest

from vouchers import codes
from vouchers.codes import ALPHABET, generate_code, normalize_code

CANONICAL = re.compile(r"^[0-9A-HJKMNP-TV-Z]{4}(-[0-9A-HJKMNP-TV-Z]{4}){3}$")


def test_alphabet_is_crockford_base32_without_i_l_o_u() -> None:
    assert len(ALPHABET) == 32 == len(set(ALPHABET))
    assert not set("ILOU") & set(ALPHABET)


def test_generated_code_is_four_dashed_groups_of_four_crockford_characters() -> None:
    for _ in range(200):
        code = generate_code()
        assert CANONICAL.match(code), code
        assert len(code) == codes.FORMATTED_LENGTH == 19


def test_generated_code_carries_80_bits_in_16_characters() -> None:
    assert codes.CODE_BITS == 80
    assert codes.CODE_CHARS == 16
    assert len(generate_code().replace("-", "")) == 16


def test_every_character_position_uses_all_32_symbols() -> None:
    # A generator that used fewer bits (say 64) would leave the leading positions stuck at a few symbols.
    samples = [generate_code().replace("-", "") for _ in range(3000)]
    for position in range(16):
        seen = {sample[position] for sample in samples}
        assert seen == set(ALPHABET), f"position {position} only produced {sorted(seen)}"


def test_codes_are_drawn_from_the_secrets_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codes, "secrets", types.SimpleNamespace(randbits=lambda bits: 0))
    assert generate_code() == "0000-0000-0000-0000"
    monkeypatch.setattr(codes, "secrets", types.SimpleNamespace(randbits=lambda bits: 2**bits - 1))
    assert generate_code() == "ZZZZ-ZZZZ-ZZZZ-ZZZZ"


def test_twenty_thousand_generated_codes_are_all_distinct() -> None:
    generated = [generate_code() for _ in range(20_000)]
    assert len(set(generated)) == len(generated)


def test_a_generated_code_normalizes_to_itself() -> None:
    for _ in range(100):
        code = generate_code()
        assert normalize_code(code) == code


@pytest.mark.parametrize(
    "typed",
    [
        "k7qh-2m9d-xr4t-8bwe",  # lower-case
        "K7QH2M9DXR4T8BWE",  # no dashes
        "K7QH 2M9D XR4T 8BWE",  # spaces instead of dashes
        "  K7QH-2M9D-XR4T-8BWE  ",  # padded
        "\tK7QH-2M9D-XR4T-8BWE\n",  # pasted with a tab and a newline
        "K7-QH-2M-9D-XR-4T-8B-WE",  # dashes in odd places
        "K7QH--2M9D---XR4T-8BWE",  # repeated dashes
        "-K7QH-2M9D-XR4T-8BWE-",  # leading and trailing dashes
        "k7Qh 2M9d-xR4t 8bWe",  # a mixture of all of it
        "K7QH\u00a02M9D\u00a0XR4T\u00a08BWE",  # non-breaking spaces from a copy-paste
    ],
)
def test_sloppy_typing_of_a_valid_code_is_accepted(typed: str) -> None:
    assert normalize_code(typed) == "K7QH-2M9D-XR4T-8BWE"


@pytest.mark.parametrize(
    ("typed", "canonical"),
    [
        ("ABO0-ABI1-ABL1-0000", "AB00-AB11-AB11-0000"),
        ("abo0-abi1-abl1-oooo", "AB00-AB11-AB11-0000"),
        ("OOOO-IIII-LLLL-oilx", "0000-1111-1111-011X"),
    ],
)
def test_look_alike_letters_o_i_l_read_as_zero_and_one(typed: str, canonical: str) -> None:
    assert normalize_code(typed) == canonical


@pytest.mark.parametrize(
    "typed",
    [
        "",
        " ",
        "----",
        "- - - -",
        "K7QH-2M9D-XR4T-8BW",  # 15 characters
        "K7QH-2M9D-XR4T-8BWEX",  # 17 characters
        "K7QH-2M9D-XR4T-8BWE-K7QH",  # two codes run together
        "K7QH-2M9D-XR4T-8BWU",  # U is not in Crockford's alphabet
        "K7QH-2M9D-XR4T-8BW!",
        "K7QH_2M9D_XR4T_8BWE",  # underscores are not separators
        "K7QH.2M9D.XR4T.8BWE",
        "K7QH-2M9D-XR4T-8BW%",  # a LIKE wildcard
        "____-____-____-____",
        "%",
        "' OR 1=1 --",
        "' OR '1'='1",
        "K7QH'; DROP TABLE vouchers_voucher; --",
        "1; DELETE FROM vouchers_creditaccount",
        "K7QH-2M9D-XR4T-8BWE' OR 1=1 --",
        "K7QH-2M9D-XR4T-8BWE\x00",  # a NUL byte
        "K7QH-2M9D-XR4T-8BW\u0415",  # Cyrillic capital IE, looks like E
        "K7QH-2M9D-XR4T-8BW\uff25",  # full-width E
        "\uff2b\uff17\uff31\uff28\uff12\uff2d\uff19\uff24\uff38\uff32\uff14\uff34\uff18\uff22\uff37\uff25",
        "\u0661\u0662\u0663\u0664-\u0661\u0662\u0663\u0664-\u0661\u0662\u0663\u0664-\u0661\u0662\u0663\u0664",
        "K7QH-2M9D-XR4T-8BW\u200b",  # a zero-width space is not whitespace
        "K7QH-2M9D-XR4T-8B\U0001f600",
    ],
)
def test_anything_that_is_not_sixteen_code_characters_is_refused(typed: str) -> None:
    assert normalize_code(typed) is None


def test_input_longer_than_the_limit_is_refused_even_if_it_compacts_to_a_code() -> None:
    padded = "K7QH-2M9D-XR4T-8BWE".center(codes.MAX_INPUT_LENGTH + 1)
    assert normalize_code(padded) is None
    assert normalize_code("K7QH-2M9D-XR4T-8BWE".center(codes.MAX_INPUT_LENGTH)) == "K7QH-2M9D-XR4T-8BWE"


def test_a_huge_input_is_refused() -> None:
    assert normalize_code("A" * 1_000_000) is None


@pytest.mark.parametrize("value", [None, 12345, b"K7QH-2M9D-XR4T-8BWE", ["K7QH-2M9D-XR4T-8BWE"]])
def test_a_value_that_is_not_text_is_refused(value: object) -> None:
    assert normalize_code(value) is None  # type: ignore[arg-type]
