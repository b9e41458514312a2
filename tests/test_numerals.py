"""人民币大写: the amount in capitals printed on payment forms, credit notices and reports.

The table follows the PBoC's rules for filling in bills and settlement vouchers
(《正确填写票据和结算凭证的基本规定》), with the examples given there; where the rules allow two
forms (a 零 after 元 when the 元 digit is 0), the form with 零 is used throughout. A round-trip
property test reads every capital back into figures with an independent parser.
"""

import re
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from documents.numerals import cny_capital

CASES = [
    # the examples of the brief
    ("12345.67", "壹万贰仟叁佰肆拾伍元陆角柒分"),
    ("100", "壹佰元整"),
    ("0.05", "伍分"),
    ("10000000.10", "壹仟万元零壹角"),
    ("100000001", "壹亿零壹元整"),
    # the PBoC rules' own examples
    ("1409.50", "壹仟肆佰零玖元伍角"),          # a 0 in the middle: 零
    ("6007.14", "陆仟零柒元壹角肆分"),          # several 0s in a row: one 零
    ("1680.32", "壹仟陆佰捌拾元零叁角贰分"),    # 元 digit 0, 角 not: 元零…角
    ("107000.53", "壹拾万柒仟元零伍角叁分"),    # zeros closing a group are not read
    ("16409.02", "壹万陆仟肆佰零玖元零贰分"),   # 角 0, 分 not: 元零…分
    ("325.04", "叁佰贰拾伍元零肆分"),
    ("15.80", "壹拾伍元捌角"),                  # a leading 1 of 拾 is written 壹拾; nothing after 角
    # zero and small amounts
    ("0", "零元整"),
    ("0.00", "零元整"),
    ("0.01", "壹分"),
    ("0.10", "壹角"),
    ("0.5", "伍角"),
    ("0.15", "壹角伍分"),
    ("0.99", "玖角玖分"),
    ("1", "壹元整"),
    ("1.00", "壹元整"),
    ("1.01", "壹元零壹分"),
    ("1.10", "壹元壹角"),
    ("1.23", "壹元贰角叁分"),
    # tens and the 壹拾 rule
    ("10", "壹拾元整"),
    ("11", "壹拾壹元整"),
    ("19.99", "壹拾玖元玖角玖分"),
    ("20", "贰拾元整"),
    ("10.05", "壹拾元零伍分"),
    ("10.50", "壹拾元零伍角"),
    ("110", "壹佰壹拾元整"),
    ("100000", "壹拾万元整"),
    ("110000", "壹拾壹万元整"),
    # zeros inside a group
    ("101", "壹佰零壹元整"),
    ("1001", "壹仟零壹元整"),
    ("1010", "壹仟零壹拾元整"),
    ("1100", "壹仟壹佰元整"),
    ("1000", "壹仟元整"),
    # zeros across the 万 and 亿 groups
    ("10000", "壹万元整"),
    ("10001", "壹万零壹元整"),
    ("10010", "壹万零壹拾元整"),
    ("10100", "壹万零壹佰元整"),
    ("11000", "壹万壹仟元整"),
    ("100100", "壹拾万零壹佰元整"),
    ("1001000", "壹佰万壹仟元整"),
    ("1000100", "壹佰万零壹佰元整"),
    ("10000000", "壹仟万元整"),
    ("10101010.10", "壹仟零壹拾万壹仟零壹拾元零壹角"),
    ("100000000", "壹亿元整"),
    ("100001000", "壹亿零壹仟元整"),
    ("100010000", "壹亿零壹万元整"),
    ("101000000", "壹亿零壹佰万元整"),
    ("110000000", "壹亿壹仟万元整"),
    ("1000100000", "壹拾亿零壹拾万元整"),
    ("1010000000", "壹拾亿壹仟万元整"),
    ("2000000000.02", "贰拾亿元零贰分"),
    # 万亿
    ("1000000000000", "壹万亿元整"),
    ("1000010000000", "壹万亿零壹仟万元整"),
    ("1000100000000", "壹万零壹亿元整"),
    ("1234567890123.45", "壹万贰仟叁佰肆拾伍亿陆仟柒佰捌拾玖万零壹佰贰拾叁元肆角伍分"),
    ("9999999999999999.99", "玖仟玖佰玖拾玖万玖仟玖佰玖拾玖亿玖仟玖佰玖拾玖万玖仟玖佰玖拾玖元玖角玖分"),
    # amounts of this domain
    ("11000000.00", "壹仟壹佰万元整"),                       # a bond of 110 % of CNY 10 m
    ("1339629.24", "壹佰叁拾叁万玖仟陆佰贰拾玖元贰角肆分"),
    ("1338629.24", "壹佰叁拾叁万捌仟陆佰贰拾玖元贰角肆分"),
    ("3000000000.00", "叁拾亿元整"),                         # the CNY 3 bn of one offshore firm
]


@pytest.mark.parametrize("figures, capitals", CASES)
def test_table(figures, capitals):
    assert cny_capital(Decimal(figures)) == capitals


def test_integers_are_accepted():
    assert cny_capital(100) == "壹佰元整"
    assert cny_capital(0) == "零元整"
    assert cny_capital(100_000_001) == "壹亿零壹元整"


def test_trailing_zeros_beyond_fen_are_not_extra_decimals():
    assert cny_capital(Decimal("1.230")) == cny_capital(Decimal("1.23"))
    assert cny_capital(Decimal("1E+2")) == "壹佰元整"
    assert cny_capital(Decimal("-0")) == "零元整"


@pytest.mark.parametrize("bad", [Decimal("-0.01"), Decimal("-100"), -1])
def test_negative_amounts_are_refused(bad):
    with pytest.raises(ValueError, match="Negative"):
        cny_capital(bad)


@pytest.mark.parametrize("bad", [Decimal("0.001"), Decimal("1.005"), Decimal("12345.678"), Decimal("1E-3")])
def test_more_than_two_decimals_are_refused(bad):
    with pytest.raises(ValueError, match="two decimals"):
        cny_capital(bad)


@pytest.mark.parametrize("bad", [Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity")])
def test_non_finite_amounts_are_refused(bad):
    with pytest.raises(ValueError):
        cny_capital(bad)


def test_amounts_beyond_the_convention_are_refused():
    with pytest.raises(ValueError, match="too large"):
        cny_capital(Decimal("10000000000000000"))


@pytest.mark.parametrize("bad", [1.5, "12.00", None, True])
def test_only_exact_amounts_are_accepted(bad):
    with pytest.raises(TypeError):
        cny_capital(bad)


# --------------------------------------------------------------------------- round trip

DIGIT = {c: i for i, c in enumerate("零壹贰叁肆伍陆柒捌玖")}
PLACE = {"拾": 10, "佰": 100, "仟": 1000}


def _section(text: str) -> int:
    """'壹仟零壹拾' → 1010 (within one group of four digits)."""
    total, digit = 0, 0
    for ch in text:
        if ch in DIGIT:
            digit = DIGIT[ch]
        elif ch in PLACE:
            total += digit * PLACE[ch]
            digit = 0
        else:
            raise AssertionError(f"unexpected {ch!r} in {text!r}")
    return total + digit


def _integer(text: str) -> int:
    if "亿" in text:
        high, low = text.split("亿", 1)
        return _integer(high) * 10**8 + _integer(low)
    if "万" in text:
        high, low = text.split("万", 1)
        return _section(high) * 10**4 + _section(low)
    return _section(text)


def parse_capitals(text: str) -> Decimal:
    """An independent reader of 大写 amounts, strict about the form of the fractional part."""
    match = re.fullmatch(r"(?:(.+?)元)?(?:零?(.)角)?(?:零?(.)分)?(整)?", text)
    assert match, text
    integer, jiao, fen, whole = match.groups()
    assert whole is None or (jiao is None and fen is None), f"整 after 角/分: {text}"
    assert whole is not None or jiao is not None or fen is not None, f"nothing after 元: {text}"
    yuan = 0 if integer in (None, "零") else _integer(integer)
    return Decimal(yuan) + Decimal(DIGIT[jiao] if jiao else 0) / 10 + Decimal(DIGIT[fen] if fen else 0) / 100


# Zeros are where the rules bite: draw digits with plenty of them, as well as plain integers.
SPARSE_FEN = st.lists(st.sampled_from("000000123456789"), min_size=1, max_size=18).map(lambda ds: int("".join(ds)))


@given(st.one_of(st.integers(min_value=0, max_value=10**18 - 1), SPARSE_FEN))
def test_every_amount_reads_back_to_itself(fen):
    amount = Decimal(fen).scaleb(-2)
    text = cny_capital(amount)
    assert parse_capitals(text) == amount
    if fen == 0:
        assert text == "零元整"
        return
    assert "零零" not in text
    assert not text.startswith("零")
    assert not re.search(r"零[元万亿]", text), text  # zeros closing a group are never read
    assert ("整" in text) == (fen % 100 == 0)
    assert ("元" in text) == (fen >= 100)


@given(st.integers(min_value=1, max_value=10**16 - 1))
def test_whole_yuan_end_with_zheng(yuan):
    assert cny_capital(Decimal(yuan)).endswith("元整")
    assert cny_capital(Decimal(yuan)) == cny_capital(yuan)
