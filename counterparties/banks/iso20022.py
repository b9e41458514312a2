"""ISO 20022 bank messages at the portal's edge: read camt.053/camt.054, write (and check) pain.001.

Only the elements the portal records are read: the account, each entry's amount, direction, dates, the
bank's reference (AcctSvcrRef), the end-to-end id (the portal's own transfer reference coming back),
remittance text and, for FX (结汇), the exchange details. Everything else is ignored, but what is read
is checked strictly: money is Decimal parsed from the text, never a float, and a malformed document is
refused as a whole with a PermanentError naming the element (retrying cannot fix a bad file).

Parsing uses the standard library. Bank files come from outside, so any DTD or entity declaration is
refused before the parser sees the document (no entity expansion, no external fetches).
"""

from __future__ import annotations

import hashlib
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from xml.parsers import expat

from counterparties.errors import ErrorCode, PermanentError

PARTY = "bank"

NS_CAMT053 = "urn:iso:std:iso:20022:tech:xsd:camt.053.001.08"
NS_CAMT054 = "urn:iso:std:iso:20022:tech:xsd:camt.054.001.08"
NS_PAIN001 = "urn:iso:std:iso:20022:tech:xsd:pain.001.001.09"

# Other versions of the same messages keep the elements read here at the same paths (only Ntry/Sts
# changed shape in .08, and both shapes are read), so any 001.NN version is accepted.
_CAMT_NS = re.compile(r"^urn:iso:std:iso:20022:tech:xsd:camt\.(053|054)\.001\.\d{2}$")
_CAMT_ROOT = {"053": ("BkToCstmrStmt", "Stmt", "camt.053"), "054": ("BkToCstmrDbtCdtNtfctn", "Ntfctn", "camt.054")}

# ISO 4217 minor units. Unknown codes get 2, the most common; the three the portal lives on are here.
MINOR_UNITS = {
    "CNY": 2, "USD": 2, "HKD": 2, "EUR": 2, "GBP": 2, "CHF": 2, "SGD": 2, "AUD": 2, "CAD": 2,
    "MOP": 2, "TWD": 2, "JPY": 0, "KRW": 0, "VND": 0, "BHD": 3, "KWD": 3, "OMR": 3, "JOD": 3,
}
# ActiveOrHistoricCurrencyAndAmount allows 18 digits in all; BaseOneRate 11 in all, at most 10 decimals.
_MAX_AMOUNT_DIGITS = 18
_RATE = re.compile(r"^[0-9]{1,11}(\.[0-9]{1,10})?$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# Max35Text ids the portal itself issues: kept to characters safe in file names and URLs.
_PORTAL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,34}$")
MAX_DOCUMENT_BYTES = 20 * 1024 * 1024
_NOT_PROVIDED = "NOTPROVIDED"  # ISO's placeholder for "the sender gave no end-to-end id"


def minor_units(currency: str) -> int:
    return MINOR_UNITS.get(currency, 2)


def _invalid(message: str, code: ErrorCode = ErrorCode.BAD_RESPONSE) -> PermanentError:
    """A document the bank sent that cannot be trusted is BAD_RESPONSE; an order of ours that a bank
    would refuse is VALIDATION. Either way a retry of the same bytes cannot help."""
    return PermanentError(message, code=code, party=PARTY)


# ---------------------------------------------------------------------------------------------------
# What the portal gets out of a statement or notification


@dataclass(frozen=True)
class FxDetail:
    """A currency exchange as the bank reported it (CcyXchg), with the amounts on both sides.

    The rate is kept exactly as given; ``unit_currency`` says which currency one unit of the rate is
    (ISO: 1 unit_currency = rate of the other). It is never inverted here, because 1/rate is not exact.
    """

    source_currency: str
    target_currency: str
    rate: Decimal
    source_amount: Decimal | None
    target_amount: Decimal | None
    unit_currency: str | None = None
    contract_id: str | None = None

    def implied_target_amount(self) -> Decimal | None:
        """source_amount × rate rounded half-up to the target's minor units, when the rate is per source
        unit; for checking the slip against the rate (the bank's own rounding or fees may differ)."""
        if self.source_amount is None or self.unit_currency not in (None, self.source_currency):
            return None
        step = Decimal(1).scaleb(-minor_units(self.target_currency))
        return (self.source_amount * self.rate).quantize(step, rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class TransactionDetail:
    end_to_end_id: str | None
    amount: Decimal | None
    currency: str | None
    remittance: str | None
    bank_ref: str | None
    fx: FxDetail | None


@dataclass(frozen=True)
class Entry:
    amount: Decimal
    currency: str
    credit: bool
    booking_date: date | None
    value_date: date | None
    bank_ref: str | None  # Ntry/AcctSvcrRef: the bank's own unique reference, the portal's dedup key
    end_to_end_id: str | None
    remittance: str | None
    additional_info: str | None
    fx: FxDetail | None
    status: str = "BOOK"  # BOOK, PDNG or INFO: only BOOK is money on the account
    reversal: bool = False
    entry_ref: str | None = None
    # All TxDtls. A batch entry has several; then end_to_end_id and remittance above are None (fx comes
    # only from the entry's own AmtDtls) and the caller reads them here: picking one transaction's id
    # for the whole entry would be wrong.
    details: tuple[TransactionDetail, ...] = ()

    @property
    def signed_amount(self) -> Decimal:
        return self.amount if self.credit else -self.amount

    @property
    def booked(self) -> bool:
        return self.status == "BOOK"


@dataclass(frozen=True)
class Statement:
    kind: str  # "camt.053" (statement) or "camt.054" (debit/credit notification)
    message_id: str
    statement_id: str
    account: str  # Acct/Id/IBAN or Acct/Id/Othr/Id
    currency: str | None  # Acct/Ccy, or the entries' currency when they all share one
    created: datetime
    entries: tuple[Entry, ...]
    owner_name: str | None = None
    # Signed balances by type code (OPBD, PRCD, CLBD, ...), when the bank sends them (camt.053).
    balances: dict[str, Decimal] = field(default_factory=dict)
    digest: str = ""  # SHA-256 of the document as received: evidence for the full-process record
    source: str | None = None  # set by the adapter: file name or remote id


# ---------------------------------------------------------------------------------------------------
# Safe parsing


def _refuse_dtd(doctype_name, *args):
    raise _invalid(f"document declares a DTD (<!DOCTYPE {doctype_name}>); refused")


def _refuse_entity(entity_name, *args):
    raise _invalid(f"document declares an entity (<!ENTITY {entity_name}>); refused")


def parse_xml(xml_bytes: bytes, what: str = "document") -> ET.Element:
    """Parse untrusted XML: UTF-8 only (ISO 20022 requires it), no DTD, no entities, size-capped."""
    if not isinstance(xml_bytes, (bytes, bytearray)):
        raise TypeError("parse_xml takes bytes as received, not text")
    if len(xml_bytes) > MAX_DOCUMENT_BYTES:
        raise _invalid(f"{what} is larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        text = bytes(xml_bytes).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _invalid(f"{what} is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    # Refused by a plain text search first (no parser involved), and again by the expat handlers below
    # in case a declaration ever slips past the search.
    upper = text.upper()
    if "<!DOCTYPE" in upper:
        raise _invalid(f"{what} contains a DTD (<!DOCTYPE); refused")
    if "<!ENTITY" in upper:
        raise _invalid(f"{what} contains an entity declaration (<!ENTITY); refused")
    decl = re.match(r"\s*<\?xml[^>]*encoding\s*=\s*[\"']([^\"']+)[\"']", text)
    if decl and decl.group(1).strip().lower() not in ("utf-8", "utf8"):
        raise _invalid(f"{what} declares encoding {decl.group(1)!r}; only UTF-8 is accepted")

    guard = expat.ParserCreate()
    guard.StartDoctypeDeclHandler = _refuse_dtd
    guard.EntityDeclHandler = _refuse_entity
    guard.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    try:
        guard.Parse(text.encode("utf-8"), True)
    except expat.ExpatError as exc:
        raise _invalid(f"{what} is not well-formed XML: {expat.ErrorString(exc.code)} at line {exc.lineno}, "
                       f"column {exc.offset}") from None
    return ET.fromstring(text.encode("utf-8"))


class _Reader:
    """Namespace-aware lookups whose errors name the element by its path in the document."""

    def __init__(self, ns: str):
        self.ns = ns

    def q(self, path: str) -> str:
        return "/".join(f"{{{self.ns}}}{part}" for part in path.split("/"))

    def find(self, el: ET.Element, path: str) -> ET.Element | None:
        return el.find(self.q(path))

    def findall(self, el: ET.Element, path: str) -> list[ET.Element]:
        return el.findall(self.q(path))

    def text(self, el: ET.Element, path: str, where: str, *, required: bool = False) -> str | None:
        found = self.find(el, path)
        value = (found.text or "").strip() if found is not None else ""
        if not value:
            if required:
                state = "missing" if found is None else "empty"
                raise _invalid(f"{where}/{path} is {state}")
            return None
        return value


def parse_amount(text: str | None, currency: str, where: str) -> Decimal:
    """A non-negative amount with at most the currency's minor units, from its text; never via float."""
    if text is None or not text.strip():
        raise _invalid(f"{where} has no amount")
    text = text.strip()
    units = minor_units(currency)
    pattern = r"[0-9]+" if units == 0 else rf"[0-9]+(\.[0-9]{{1,{units}}})?"
    if not re.fullmatch(pattern, text):
        raise _invalid(f"{where} amount {text!r} is not a plain decimal with at most {units} decimal "
                       f"place(s) for {currency}")
    if len(text.replace(".", "").lstrip("0")) > _MAX_AMOUNT_DIGITS:
        raise _invalid(f"{where} amount {text!r} has more than {_MAX_AMOUNT_DIGITS} digits")
    return Decimal(text)


def _currency(value: str | None, where: str) -> str:
    if value is None or not _CURRENCY.fullmatch(value.strip()):
        raise _invalid(f"{where} has currency {value!r}; expected a 3-letter ISO 4217 code")
    return value.strip()


def _amount_element(r: _Reader, el: ET.Element | None, where: str) -> tuple[Decimal, str]:
    if el is None:
        raise _invalid(f"{where} is missing")
    ccy = _currency(el.get("Ccy"), where)
    return parse_amount(el.text, ccy, where), ccy


def _date(r: _Reader, parent: ET.Element, path: str, where: str) -> date | None:
    """DateAndDateTime2Choice: <Dt> or <DtTm>."""
    holder = r.find(parent, path)
    if holder is None:
        return None
    try:
        if (d := r.text(holder, "Dt", f"{where}/{path}")) is not None:
            if not _ISO_DATE.fullmatch(d):
                raise ValueError(d)
            return date.fromisoformat(d)
        if (dt := r.text(holder, "DtTm", f"{where}/{path}")) is not None:
            return _datetime(dt, f"{where}/{path}/DtTm").date()
    except ValueError:
        raise _invalid(f"{where}/{path} is not an ISO date (YYYY-MM-DD)") from None
    raise _invalid(f"{where}/{path} has neither Dt nor DtTm")


def _datetime(value: str, where: str) -> datetime:
    try:
        if not _ISO_DATE.match(value) or value[10:11] != "T":
            raise ValueError(value)
        return datetime.fromisoformat(value)
    except ValueError:
        raise _invalid(f"{where} {value!r} is not an ISO date-time") from None


def _credit(r: _Reader, el: ET.Element, where: str) -> bool:
    ind = r.text(el, "CdtDbtInd", where, required=True)
    if ind not in ("CRDT", "DBIT"):
        raise _invalid(f"{where}/CdtDbtInd is {ind!r}; expected CRDT or DBIT")
    return ind == "CRDT"


def _account_id(r: _Reader, acct: ET.Element, where: str) -> str:
    account = r.text(acct, "Id/IBAN", where) or r.text(acct, "Id/Othr/Id", where)
    if not account:
        raise _invalid(f"{where}/Id has neither IBAN nor Othr/Id")
    return account


def _remittance(r: _Reader, tx: ET.Element) -> str | None:
    # Banks split long text over several Ustrd (Max140Text each); a space keeps words apart.
    parts = [(u.text or "").strip() for u in r.findall(tx, "RmtInf/Ustrd")]
    return " ".join(p for p in parts if p) or None


_AMOUNT_KINDS = ("InstdAmt", "TxAmt", "CntrValAmt", "AnncdPstngAmt")


def _fx(r: _Reader, amt_dtls: ET.Element | None, where: str, entry_amount: tuple[Decimal, str]) -> FxDetail | None:
    """The exchange details in AmtDtls (AmountAndCurrencyExchange3), with the amounts on both sides."""
    if amt_dtls is None:
        return None
    amounts: dict[str, Decimal] = {}
    xchg = xchg_where = None
    for kind in _AMOUNT_KINDS:
        block = r.find(amt_dtls, kind)
        if block is None:
            continue
        amount, ccy = _amount_element(r, r.find(block, "Amt"), f"{where}/AmtDtls/{kind}/Amt")
        amounts.setdefault(ccy, amount)
        if xchg is None and (found := r.find(block, "CcyXchg")) is not None:
            xchg, xchg_where = found, f"{where}/AmtDtls/{kind}/CcyXchg"
    if xchg is None:
        return None
    source = _currency(r.text(xchg, "SrcCcy", xchg_where, required=True), f"{xchg_where}/SrcCcy")
    target_text = r.text(xchg, "TrgtCcy", xchg_where)
    target = _currency(target_text, f"{xchg_where}/TrgtCcy") if target_text else None
    if target is None:
        # TrgtCcy is optional in ISO; the other currency present is then the target.
        others = [c for c in (*amounts, entry_amount[1]) if c != source]
        if not others:
            raise _invalid(f"{xchg_where} has no TrgtCcy and no amount in another currency")
        target = others[0]
    unit_text = r.text(xchg, "UnitCcy", xchg_where)
    unit = _currency(unit_text, f"{xchg_where}/UnitCcy") if unit_text else None
    if unit not in (None, source, target):
        raise _invalid(f"{xchg_where}/UnitCcy {unit} is neither the source nor the target currency")
    rate_text = r.text(xchg, "XchgRate", xchg_where, required=True)
    if not _RATE.fullmatch(rate_text) or Decimal(rate_text) == 0 or _total_digits(Decimal(rate_text)) > 11:
        raise _invalid(f"{xchg_where}/XchgRate {rate_text!r} is not a positive decimal rate")
    amounts.setdefault(entry_amount[1], entry_amount[0])
    return FxDetail(
        source_currency=source,
        target_currency=target,
        rate=Decimal(rate_text),
        source_amount=amounts.get(source),
        target_amount=amounts.get(target),
        unit_currency=unit,
        contract_id=r.text(xchg, "CtrctId", xchg_where),
    )


def _total_digits(value: Decimal) -> int:
    """XML Schema's totalDigits: the digits of the integer i in value = i × 10^-n."""
    sign, digits, exponent = value.normalize().as_tuple()
    return len(digits) + max(exponent, 0)


def _end_to_end(r: _Reader, tx: ET.Element, where: str) -> str | None:
    value = r.text(tx, "Refs/EndToEndId", where)
    return None if value == _NOT_PROVIDED else value


def _status(r: _Reader, ntry: ET.Element, where: str) -> str:
    sts = r.find(ntry, "Sts")
    if sts is None:
        raise _invalid(f"{where}/Sts is missing")
    # .08 and later: <Sts><Cd>BOOK</Cd></Sts>; before: <Sts>BOOK</Sts>.
    code = r.text(sts, "Cd", where) or r.text(sts, "Prtry", where) or (sts.text or "").strip()
    if not code:
        raise _invalid(f"{where}/Sts is empty")
    return code


def _entry(r: _Reader, ntry: ET.Element, where: str) -> Entry:
    amount, currency = _amount_element(r, r.find(ntry, "Amt"), f"{where}/Amt")
    credit = _credit(r, ntry, where)
    reversal_text = r.text(ntry, "RvslInd", where)
    if reversal_text not in (None, "true", "false", "1", "0"):
        raise _invalid(f"{where}/RvslInd is {reversal_text!r}; expected true or false")
    details = []
    for i, tx in enumerate(r.findall(ntry, "NtryDtls/TxDtls"), 1):
        tx_where = f"{where}/NtryDtls/TxDtls[{i}]"
        tx_amount = tx_ccy = None
        if r.find(tx, "Amt") is not None:
            tx_amount, tx_ccy = _amount_element(r, r.find(tx, "Amt"), f"{tx_where}/Amt")
        details.append(TransactionDetail(
            end_to_end_id=_end_to_end(r, tx, tx_where),
            amount=tx_amount,
            currency=tx_ccy,
            remittance=_remittance(r, tx),
            bank_ref=r.text(tx, "Refs/AcctSvcrRef", tx_where),
            fx=_fx(r, r.find(tx, "AmtDtls"), tx_where, (amount, currency)),
        ))
    only = details[0] if len(details) == 1 else None
    entry_fx = _fx(r, r.find(ntry, "AmtDtls"), where, (amount, currency))
    return Entry(
        amount=amount,
        currency=currency,
        credit=credit,
        booking_date=_date(r, ntry, "BookgDt", where),
        value_date=_date(r, ntry, "ValDt", where),
        bank_ref=r.text(ntry, "AcctSvcrRef", where) or (only.bank_ref if only else None),
        end_to_end_id=only.end_to_end_id if only else None,
        remittance=only.remittance if only else None,
        additional_info=r.text(ntry, "AddtlNtryInf", where),
        fx=(only.fx if only and only.fx else entry_fx),
        status=_status(r, ntry, where),
        reversal=reversal_text in ("true", "1"),
        entry_ref=r.text(ntry, "NtryRef", where),
        details=tuple(details),
    )


def _balances(r: _Reader, stmt: ET.Element, where: str) -> dict[str, Decimal]:
    balances = {}
    for i, bal in enumerate(r.findall(stmt, "Bal"), 1):
        bal_where = f"{where}/Bal[{i}]"
        code = r.text(bal, "Tp/CdOrPrtry/Cd", bal_where) or r.text(bal, "Tp/CdOrPrtry/Prtry", bal_where)
        if not code:
            raise _invalid(f"{bal_where}/Tp/CdOrPrtry has no code")
        amount, _ = _amount_element(r, r.find(bal, "Amt"), f"{bal_where}/Amt")
        balances[code] = amount if _credit(r, bal, bal_where) else -amount
    return balances


def _check_balances(statement: Statement, where: str) -> None:
    """Opening + booked entries = closing, when the bank sends both: a statement that does not add up
    is refused rather than half-believed."""
    opening = statement.balances.get("OPBD", statement.balances.get("PRCD"))
    closing = statement.balances.get("CLBD")
    if opening is None or closing is None:
        return
    booked = [e for e in statement.entries if e.booked]
    if len({e.currency for e in booked} | ({statement.currency} if statement.currency else set())) > 1:
        return  # a multi-currency account's balances are not in one currency; nothing to add up
    movement = sum((e.signed_amount for e in booked), Decimal(0))
    if opening + movement != closing:
        raise _invalid(f"{where}: opening balance {opening} plus booked entries {movement} is "
                       f"{opening + movement}, but the closing balance (CLBD) is {closing}")


def parse_statements(xml_bytes: bytes) -> list[Statement]:
    """Every account statement (camt.053 Stmt) or notification (camt.054 Ntfctn) in one document."""
    root = parse_xml(xml_bytes, "bank statement")
    match = re.fullmatch(r"\{([^}]*)\}(.*)", root.tag)
    ns, local = (match.group(1), match.group(2)) if match else ("", root.tag)
    kind_match = _CAMT_NS.fullmatch(ns)
    if local != "Document" or not kind_match:
        raise _invalid(f"root element is {local!r} in namespace {ns!r}; expected Document in a camt.053 or "
                       f"camt.054 namespace such as {NS_CAMT053}")
    message, report, kind = _CAMT_ROOT[kind_match.group(1)]
    r = _Reader(ns)
    body = r.find(root, message)
    if body is None:
        raise _invalid(f"Document/{message} is missing ({kind} namespace)")
    where_root = f"Document/{message}"
    message_id = r.text(body, "GrpHdr/MsgId", where_root, required=True)
    header_created = r.text(body, "GrpHdr/CreDtTm", where_root, required=True)
    reports = r.findall(body, report)
    if not reports:
        raise _invalid(f"{where_root}/{report} is missing: the document reports no account")
    digest = hashlib.sha256(xml_bytes).hexdigest()
    statements = []
    for i, rep in enumerate(reports, 1):
        where = f"{where_root}/{report}[{i}]"
        acct = r.find(rep, "Acct")
        if acct is None:
            raise _invalid(f"{where}/Acct is missing")
        entries = tuple(_entry(r, n, f"{where}/Ntry[{j}]") for j, n in enumerate(r.findall(rep, "Ntry"), 1))
        currency_text = r.text(acct, "Ccy", f"{where}/Acct")
        currency = _currency(currency_text, f"{where}/Acct/Ccy") if currency_text else None
        if currency is None and entries and len({e.currency for e in entries}) == 1:
            currency = entries[0].currency
        created_text = r.text(rep, "CreDtTm", where) or header_created
        statement = Statement(
            kind=kind,
            message_id=message_id,
            statement_id=r.text(rep, "Id", where, required=True),
            account=_account_id(r, acct, f"{where}/Acct"),
            currency=currency,
            created=_datetime(created_text, f"{where}/CreDtTm"),
            entries=entries,
            owner_name=r.text(acct, "Ownr/Nm", f"{where}/Acct"),
            balances=_balances(r, rep, where),
            digest=digest,
        )
        _check_balances(statement, where)
        statements.append(statement)
    return statements


def parse_statement(xml_bytes: bytes) -> Statement:
    """The one statement or notification in a camt.053/camt.054 document (see parse_statements for
    documents covering several accounts)."""
    statements = parse_statements(xml_bytes)
    if len(statements) != 1:
        raise _invalid(f"document holds {len(statements)} account reports; use parse_statements")
    return statements[0]


# ---------------------------------------------------------------------------------------------------
# pain.001: the portal's payment orders (remittance to the treasury, returns to victims)


@dataclass(frozen=True)
class Debtor:
    name: str
    account: str  # the paying account (the bureau's special case-funds account)
    agent_bic: str | None = None  # the debtor's bank; "NOTPROVIDED" is sent when unknown


@dataclass(frozen=True)
class Payment:
    end_to_end_id: str  # the portal's transfer reference: the idempotency key the bank echoes back
    amount: Decimal
    currency: str
    creditor_name: str
    creditor_account: str
    remittance: str = ""
    creditor_agent_bic: str | None = None


@dataclass(frozen=True)
class PaymentOrder:
    """A parsed pain.001, as the bank (or the emulator) sees it."""

    msg_id: str
    created: datetime
    debtor: Debtor
    payments: tuple[Payment, ...]
    nb_of_txs: int
    ctrl_sum: Decimal
    execution_date: date | None = None

    def same_instruction(self, other: PaymentOrder) -> bool:
        """Same money to the same people, whatever the creation time: a legitimate resubmission."""
        return (self.msg_id, self.debtor, self.payments) == (other.msg_id, other.debtor, other.payments)


def _is_iban(account: str) -> bool:
    return bool(re.fullmatch(r"[A-Z]{2}[0-9]{2}[A-Za-z0-9]{1,30}", account))


def _check_text(value: str, what: str, max_len: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _invalid(f"{what} is empty", ErrorCode.VALIDATION)
    if len(value) > max_len:
        raise _invalid(f"{what} is longer than {max_len} characters", ErrorCode.VALIDATION)
    if any(ord(c) < 32 for c in value):
        raise _invalid(f"{what} contains control characters", ErrorCode.VALIDATION)
    return value


def check_portal_id(value: str, what: str) -> str:
    if not isinstance(value, str) or not _PORTAL_ID.fullmatch(value):
        raise _invalid(f"{what} {value!r} must be 1-35 letters, digits, '.', '_' or '-'", ErrorCode.VALIDATION)
    return value


def format_amount(amount: Decimal, currency: str, what: str = "amount") -> str:
    """The amount with exactly the currency's minor units; refuses floats and sub-unit amounts rather
    than rounding them away."""
    if isinstance(amount, float) or not isinstance(amount, Decimal):
        raise TypeError(f"{what} must be a Decimal, not {type(amount).__name__}")
    if not amount.is_finite() or amount <= 0:
        raise _invalid(f"{what} {amount} must be a positive amount", ErrorCode.VALIDATION)
    units = minor_units(currency)
    step = Decimal(1).scaleb(-units)
    if amount != amount.quantize(step):
        raise _invalid(f"{what} {amount} has more than {units} decimal places for {currency}", ErrorCode.VALIDATION)
    return format(amount.quantize(step), "f")


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrib) -> ET.Element:
    el = ET.SubElement(parent, tag, attrib)
    if text is not None:
        el.text = text
    return el


def _account(parent: ET.Element, tag: str, account: str) -> None:
    ident = _sub(_sub(parent, tag), "Id")
    if _is_iban(account):
        _sub(ident, "IBAN", account)
    else:
        _sub(_sub(ident, "Othr"), "Id", account)


def _agent(parent: ET.Element, tag: str, bic: str | None) -> None:
    fin = _sub(_sub(parent, tag), "FinInstnId")
    if bic:
        _sub(fin, "BICFI", bic)
    else:
        _sub(_sub(fin, "Othr"), "Id", "NOTPROVIDED")


def build_pain001(msg_id: str, debtor: Debtor, payments: list[Payment], created: datetime, *,
                  execution_date: date | None = None) -> bytes:
    """A pain.001.001.09 credit transfer initiation: one PmtInf from the debtor's account, one
    CdtTrfTxInf per payment. NbOfTxs and CtrlSum (the sum of all amounts, as ISO defines it,
    irrespective of currency) are computed here and repeated on GrpHdr and PmtInf."""
    check_portal_id(msg_id, "MsgId")
    if created.tzinfo is None:
        raise _invalid("created must carry a time zone (an ISO date-time without one is ambiguous)",
                       ErrorCode.VALIDATION)
    if not payments:
        raise _invalid("a payment order needs at least one payment", ErrorCode.VALIDATION)
    _check_text(debtor.name, "debtor name", 140)
    _check_text(debtor.account, "debtor account", 34)
    seen = set()
    amounts = []
    for i, p in enumerate(payments, 1):
        check_portal_id(p.end_to_end_id, f"payment {i} EndToEndId")
        if p.end_to_end_id in seen:
            raise _invalid(f"EndToEndId {p.end_to_end_id} appears twice in one order", ErrorCode.VALIDATION)
        seen.add(p.end_to_end_id)
        if not isinstance(p.currency, str) or not _CURRENCY.fullmatch(p.currency):
            raise _invalid(f"payment {p.end_to_end_id} currency {p.currency!r} is not a 3-letter ISO 4217 code",
                           ErrorCode.VALIDATION)
        amounts.append(format_amount(p.amount, p.currency, f"payment {p.end_to_end_id} amount"))
        _check_text(p.creditor_name, f"payment {p.end_to_end_id} creditor name", 140)
        _check_text(p.creditor_account, f"payment {p.end_to_end_id} creditor account", 34)
        if p.remittance:
            _check_text(p.remittance, f"payment {p.end_to_end_id} remittance", 140)
    nb = str(len(payments))
    ctrl_sum = format(sum((p.amount for p in payments), Decimal(0)), "f")

    # Unqualified tags under a literal xmlns: ElementTree's default_namespace option refuses the
    # unqualified Ccy attribute ISO uses, and register_namespace would change global state.
    doc = ET.Element("Document", xmlns=NS_PAIN001)
    initn = _sub(doc, "CstmrCdtTrfInitn")
    hdr = _sub(initn, "GrpHdr")
    _sub(hdr, "MsgId", msg_id)
    _sub(hdr, "CreDtTm", created.isoformat(timespec="seconds"))
    _sub(hdr, "NbOfTxs", nb)
    _sub(hdr, "CtrlSum", ctrl_sum)
    _sub(_sub(hdr, "InitgPty"), "Nm", debtor.name)
    pmt = _sub(initn, "PmtInf")
    _sub(pmt, "PmtInfId", msg_id)
    _sub(pmt, "PmtMtd", "TRF")
    _sub(pmt, "NbOfTxs", nb)
    _sub(pmt, "CtrlSum", ctrl_sum)
    _sub(_sub(pmt, "ReqdExctnDt"), "Dt", (execution_date or created.date()).isoformat())
    _sub(_sub(pmt, "Dbtr"), "Nm", debtor.name)
    _account(pmt, "DbtrAcct", debtor.account)
    _agent(pmt, "DbtrAgt", debtor.agent_bic)
    _sub(pmt, "ChrgBr", "DEBT")  # the payer bears charges: the treasury must receive the full amount
    for p, amount in zip(payments, amounts):
        tx = _sub(pmt, "CdtTrfTxInf")
        pmt_id = _sub(tx, "PmtId")
        _sub(pmt_id, "InstrId", p.end_to_end_id)
        _sub(pmt_id, "EndToEndId", p.end_to_end_id)
        _sub(_sub(tx, "Amt"), "InstdAmt", amount, Ccy=p.currency)
        if p.creditor_agent_bic:
            _agent(tx, "CdtrAgt", p.creditor_agent_bic)
        _sub(_sub(tx, "Cdtr"), "Nm", p.creditor_name)
        _account(tx, "CdtrAcct", p.creditor_account)
        if p.remittance:
            _sub(_sub(tx, "RmtInf"), "Ustrd", p.remittance)
    ET.indent(doc)
    return ET.tostring(doc, encoding="UTF-8", xml_declaration=True)


def parse_pain001(xml_bytes: bytes) -> PaymentOrder:
    """Read and check a pain.001.001.09: counts and control sums consistent, amounts positive and exact,
    end-to-end ids unique. Used by the adapters before sending, and by the emulator on receipt. Every
    problem is a PermanentError with code VALIDATION: the order is what a bank would refuse."""
    try:
        return _parse_pain001(xml_bytes)
    except PermanentError as exc:
        if exc.code == ErrorCode.VALIDATION:
            raise
        raise _invalid(exc.message, ErrorCode.VALIDATION) from None


def _parse_pain001(xml_bytes: bytes) -> PaymentOrder:
    root = parse_xml(xml_bytes, "payment order")
    if root.tag != f"{{{NS_PAIN001}}}Document":
        raise _invalid(f"root element is {root.tag!r}; expected Document in {NS_PAIN001}")
    r = _Reader(NS_PAIN001)
    body = r.find(root, "CstmrCdtTrfInitn")
    if body is None:
        raise _invalid("Document/CstmrCdtTrfInitn is missing")
    top = "Document/CstmrCdtTrfInitn"
    msg_id = r.text(body, "GrpHdr/MsgId", top, required=True)
    created = _datetime(r.text(body, "GrpHdr/CreDtTm", top, required=True), f"{top}/GrpHdr/CreDtTm")
    pmt_infs = r.findall(body, "PmtInf")
    if not pmt_infs:
        raise _invalid(f"{top}/PmtInf is missing")
    payments: list[Payment] = []
    debtor = execution_date = None
    for i, pmt in enumerate(pmt_infs, 1):
        where = f"{top}/PmtInf[{i}]"
        this_debtor = Debtor(
            name=r.text(pmt, "Dbtr/Nm", where, required=True),
            account=r.text(pmt, "DbtrAcct/Id/IBAN", where) or r.text(pmt, "DbtrAcct/Id/Othr/Id", where, required=True),
            agent_bic=r.text(pmt, "DbtrAgt/FinInstnId/BICFI", where),
        )
        if debtor is not None and this_debtor != debtor:
            raise _invalid(f"{where}/DbtrAcct differs from PmtInf[1]: one order pays from one account",
                           ErrorCode.VALIDATION)
        debtor = this_debtor
        execution_date = _date(r, pmt, "ReqdExctnDt", where)
        block = []
        for j, tx in enumerate(r.findall(pmt, "CdtTrfTxInf"), 1):
            tx_where = f"{where}/CdtTrfTxInf[{j}]"
            amount, ccy = _amount_element(r, r.find(tx, "Amt/InstdAmt"), f"{tx_where}/Amt/InstdAmt")
            if amount <= 0:
                raise _invalid(f"{tx_where}/Amt/InstdAmt must be positive, not {amount}", ErrorCode.VALIDATION)
            block.append(Payment(
                end_to_end_id=r.text(tx, "PmtId/EndToEndId", tx_where, required=True),
                amount=amount,
                currency=ccy,
                creditor_name=r.text(tx, "Cdtr/Nm", tx_where, required=True),
                creditor_account=(r.text(tx, "CdtrAcct/Id/IBAN", tx_where)
                                  or r.text(tx, "CdtrAcct/Id/Othr/Id", tx_where, required=True)),
                remittance=_remittance(r, tx) or "",
                creditor_agent_bic=r.text(tx, "CdtrAgt/FinInstnId/BICFI", tx_where),
            ))
        if not block:
            raise _invalid(f"{where}/CdtTrfTxInf is missing")
        _check_totals(r, pmt, where, block, required=False)
        payments.extend(block)
    header = r.find(body, "GrpHdr")
    if header is None:
        raise _invalid(f"{top}/GrpHdr is missing")
    nb, ctrl = _check_totals(r, header, f"{top}/GrpHdr", payments, required=True)
    ids = [p.end_to_end_id for p in payments]
    if len(set(ids)) != len(ids):
        raise _invalid(f"{top}: an EndToEndId appears twice in one order", ErrorCode.VALIDATION)
    return PaymentOrder(msg_id=msg_id, created=created, debtor=debtor, payments=tuple(payments), nb_of_txs=nb,
                        ctrl_sum=ctrl, execution_date=execution_date)


def _check_totals(r: _Reader, el: ET.Element, where: str, payments: list[Payment], *,
                  required: bool) -> tuple[int, Decimal]:
    """NbOfTxs and CtrlSum against the transactions they count: mandatory on GrpHdr (NbOfTxs),
    optional on PmtInf, checked wherever present."""
    nb_text = r.text(el, "NbOfTxs", where, required=required)
    if nb_text is not None:
        if not re.fullmatch(r"[0-9]{1,15}", nb_text):
            raise _invalid(f"{where}/NbOfTxs {nb_text!r} is not a number", ErrorCode.VALIDATION)
        if int(nb_text) != len(payments):
            raise _invalid(f"{where}/NbOfTxs says {nb_text} but there are {len(payments)} transactions",
                           ErrorCode.VALIDATION)
    total = sum((p.amount for p in payments), Decimal(0))
    ctrl_text = r.text(el, "CtrlSum", where)
    if ctrl_text is not None:
        try:
            ctrl = Decimal(ctrl_text)
        except InvalidOperation:
            raise _invalid(f"{where}/CtrlSum {ctrl_text!r} is not a decimal", ErrorCode.VALIDATION) from None
        if not ctrl.is_finite() or ctrl != total:
            raise _invalid(f"{where}/CtrlSum says {ctrl_text} but the amounts add up to {total}",
                           ErrorCode.VALIDATION)
    return len(payments), total
