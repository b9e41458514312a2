"""Amounts in Chinese financial capitals (人民币大写), as written on payment forms and vouchers.

The convention followed is the one in the PBoC's rules for filling in bills and settlement
vouchers (《正确填写票据和结算凭证的基本规定》):

* digits 零壹贰叁肆伍陆柒捌玖, units 拾佰仟 inside a group of four, groups 万 / 亿 / 万亿;
* a leading 1 of 拾 is written 壹拾 (¥15.80 → 壹拾伍元捌角);
* one 零 for any run of zeros between non-zero digits, also across a group boundary
  (¥1409.50 → 壹仟肆佰零玖元伍角; ¥6007.14 → 陆仟零柒元壹角肆分; 100000001 → 壹亿零壹元整);
  zeros at the end of a group are not read (¥107000 → 壹拾万柒仟元整);
* 元 followed by 零 when the 元 digit is 0 and 角 is not (¥1680.32 → 壹仟陆佰捌拾元零叁角贰分), and when
  角 is 0 and 分 is not (¥16409.02 → 壹万陆仟肆佰零玖元零贰分);
* 整 after 元 only; nothing after 角 or 分 (¥10000000.10 → 壹仟万元零壹角);
* below one yuan there is no 元 (¥0.05 → 伍分); zero is 零元整.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

DIGITS = "零壹贰叁肆伍陆柒捌玖"
PLACES = ("", "拾", "佰", "仟")
GROUPS = ("", "万", "亿", "万亿")  # 万亿 is written 万…亿 when the 亿 group is not zero
LIMIT = Decimal(10) ** (4 * len(GROUPS))  # 10^16: up to 9999万亿…


def _group(value: int) -> str:
    """0 < value < 10000, without leading zeros; one 零 between non-zero digits, none at the end."""
    out, pending_zero = [], False
    for place in range(3, -1, -1):
        digit = value // 10**place % 10
        if digit == 0:
            pending_zero = bool(out)
            continue
        if pending_zero:
            out.append("零")
            pending_zero = False
        out.append(DIGITS[digit] + PLACES[place])
    return "".join(out)


def _integer(value: int) -> str:
    groups = []
    while value:
        value, rest = divmod(value, 10000)
        groups.append(rest)
    out: list[str] = []
    gap = False  # a whole group of zeros since the last non-zero group
    for index in range(len(groups) - 1, -1, -1):
        group = groups[index]
        if group == 0:
            gap = bool(out)
            continue
        if out and (gap or group < 1000):
            out.append("零")
        unit = GROUPS[index]
        if index == 3 and groups[2]:
            unit = "万"  # 1,2345,0000,0000 is 壹万贰仟叁佰肆拾伍亿: the 亿 follows the next group
        out.append(_group(group) + unit)
        gap = False
    return "".join(out)


def cny_capital(amount) -> str:
    """`Decimal("12345.67")` → "壹万贰仟叁佰肆拾伍元陆角柒分".

    Accepts a Decimal or an int (never a float: amounts are exact). Raises ValueError for a
    negative amount, an amount with more than two decimals (fen), and amounts of 10^16 or more.
    """
    if isinstance(amount, bool) or not isinstance(amount, (Decimal, int)):
        raise TypeError(f"cny_capital() takes a Decimal or an int, not {type(amount).__name__}")
    try:
        amount = Decimal(amount)
        if not amount.is_finite():
            raise ValueError(f"Not a finite amount: {amount}")
        fen_total = amount * 100
        if fen_total != fen_total.to_integral_value():
            raise ValueError(f"More than two decimals (fen) in {amount}")
    except InvalidOperation as exc:  # pragma: no cover - Decimal(int) never fails
        raise ValueError(f"Not an amount: {amount!r}") from exc
    if amount < 0:
        raise ValueError(f"Negative amount: {amount}")
    if amount >= LIMIT:
        raise ValueError(f"Amount too large for 大写: {amount}")
    fen_total = int(fen_total)
    yuan, cents = divmod(fen_total, 100)
    jiao, fen = divmod(cents, 10)
    if yuan == 0 and cents == 0:
        return "零元整"
    out = _integer(yuan) + "元" if yuan else ""
    if cents == 0:
        return out + "整"
    if jiao:
        if yuan and yuan % 10 == 0:
            out += "零"
        out += DIGITS[jiao] + "角"
    elif yuan:
        out += "零"
    if fen:
        out += DIGITS[fen] + "分"
    return out
