"""Reading a holdings list from a CSV or XLSX file, and checking every row before anything is saved.

Bureaus receive seizure lists as spreadsheets (often exported from Chinese Excel, so CSV may be
GB18030/GBK rather than UTF-8). An import is all or nothing: every row is checked first with
the validation the service itself uses (`parse_address`, `parse_amount`), duplicates are found
within the file and against the case's holdings, and only then is each row written through
`holding_register` inside one transaction. A row the checks missed but the service refuses
still rolls the whole import back.

The officer may choose to import only the rows that passed; those rows are kept server-side
in the session under a random token (never sent back through the browser), so the second
request imports exactly what was shown.
"""

from __future__ import annotations

import csv
import io
import secrets
import zipfile
from dataclasses import dataclass, field
from decimal import MAX_PREC, Context, Decimal, InvalidOperation

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.translation import gettext as _

from .models import Asset, Holding
from .services import holding_register, parse_address, parse_amount

COLUMNS = ("asset", "chain", "address", "amount", "location")
REQUIRED = ("asset", "address", "amount", "location")
# Header names as clerks write them; compared case-insensitively after trimming.
HEADER_ALIASES = {
    "asset": "asset", "symbol": "asset", "coin": "asset", "资产": "asset", "币种": "asset",
    "chain": "chain", "network": "chain", "链": "chain", "公链": "chain", "网络": "chain",
    "address": "address", "地址": "address", "钱包地址": "address",
    "amount": "amount", "quantity": "amount", "数量": "amount",
    "location": "location", "位置": "location", "存放位置": "location", "存放地点": "location",
}
# Token standards people write instead of the chain name.
CHAIN_ALIASES = {"trc20": "tron", "trc-20": "tron", "erc20": "ethereum", "erc-20": "ethereum"}

# Excel keeps 15 significant digits of a number; beyond that what the cell shows is not what was typed.
EXCEL_DIGITS = 15
# Trailing formatted-but-empty rows are common; a long run of them is the end of the data.
BLANK_RUN_END = 1000
MAX_CELL_CHARS = 1000
_EXACT = Context(prec=MAX_PREC)


def max_bytes() -> int:
    return getattr(settings, "HOLDINGS_IMPORT_MAX_BYTES", 5 * 1024 * 1024)


def max_rows() -> int:
    # Each row is one service call (record, history, event): 5,000 rows import in about 15 s, inside
    # the web server's request timeout. Larger lists are split into several files.
    return getattr(settings, "HOLDINGS_IMPORT_MAX_ROWS", 5_000)


def max_unpacked_bytes() -> int:
    # An XLSX is a zip: bound what it unpacks to, not only what was uploaded.
    return getattr(settings, "HOLDINGS_IMPORT_MAX_UNPACKED_BYTES", 100 * 1024 * 1024)


class ImportFileError(Exception):
    """The file as a whole cannot be read (type, size, encoding, header). The message is for the officer."""


@dataclass
class RowError:
    row: int
    column: str
    value: str
    message: str


@dataclass
class GoodRow:
    row: int
    asset: Asset
    address: str  # canonical form, as the service stores it
    amount: str  # plain decimal text in coin units, exact
    base_units: int
    location: str

    def as_session(self) -> dict:
        return {"row": self.row, "asset": self.asset.pk, "address": self.address, "amount": self.amount,
                "location": self.location}


@dataclass
class ImportCheck:
    good: list[GoodRow] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)

    @property
    def bad_rows(self) -> list[int]:
        return sorted({e.row for e in self.errors})

    @property
    def ok(self) -> bool:
        return not self.errors and bool(self.good)


@dataclass
class Table:
    """The header's canonical column names with the file's own labels, and the data rows."""

    labels: dict[str, str]  # canonical → as written in the file
    rows: list[tuple[int, dict[str, object]]]  # (row number as a spreadsheet shows it, {canonical: cell})


# --------------------------------------------------------------------------- reading the file


def read_table(upload) -> Table:
    name = (getattr(upload, "name", "") or "").lower()
    if upload.size > max_bytes():
        raise ImportFileError(_("The file is larger than the limit of %(size)s. Split it into several files.")
                              % {"size": _size(max_bytes())})
    upload.seek(0)
    data = upload.read(max_bytes() + 1)
    if len(data) > max_bytes():
        raise ImportFileError(_("The file is larger than the limit of %(size)s. Split it into several files.")
                              % {"size": _size(max_bytes())})
    if not data:
        raise ImportFileError(_("The file is empty."))
    if data.startswith(b"\xd0\xcf\x11\xe0"):
        raise ImportFileError(_("This is an old Excel (.xls) file. Save it as .xlsx or as CSV and upload it again."))
    is_zip = data.startswith(b"PK\x03\x04")
    if name.endswith(".xlsx"):
        if not is_zip:
            raise ImportFileError(_("This file is named .xlsx but is not an Excel workbook."))
        return _read_xlsx(data)
    if name.endswith(".csv"):
        if is_zip:
            raise ImportFileError(_("This file is named .csv but is a zip archive or workbook. Upload a real CSV "
                                    "file, or the workbook as .xlsx."))
        return _read_csv(data)
    raise ImportFileError(_("Only .csv and .xlsx files can be imported."))


def _size(n: int) -> str:
    from django.template.defaultfilters import filesizeformat

    return filesizeformat(n)


def _decode(data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ImportFileError(_("This CSV file is in UTF-16. Save it as “CSV UTF-8” and upload it again."))
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A UTF-8 file with a damaged byte would also decode as GB18030, into garbled Chinese that would be
        # imported without anyone noticing. Mostly valid UTF-8 is damaged UTF-8, not GBK: refuse it.
        lenient = data.decode("utf-8", errors="replace")
        invalid = lenient.count("\ufffd")
        if sum(1 for c in lenient if ord(c) > 0x7F) - invalid > invalid:
            raise ImportFileError(_("The file is UTF-8 text with damaged bytes on line %(line)s. Save it again as "
                                    "“CSV UTF-8” and upload it again.")
                                  % {"line": data.count(b"\n", 0, exc.start) + 1}) from None
        # Chinese Excel saves "CSV (comma delimited)" in the system code page: GBK, a subset of GB18030.
        try:
            text = data.decode("gb18030")
        except UnicodeDecodeError:
            raise ImportFileError(_("The file could not be read as text in UTF-8 or GB18030 (GBK). Save it as "
                                    "“CSV UTF-8” and upload it again.")) from None
    if "\x00" in text:
        raise ImportFileError(_("The file contains binary data; it is not a CSV file."))
    return text


def _read_csv(data: bytes) -> Table:
    text = _decode(data)
    first_line = text.split("\n", 1)[0]
    # Some locales export with semicolons or tabs; pick the one the header row actually uses.
    delimiter = max((",", ";", "\t"), key=first_line.count)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    records = []
    try:
        # Rows are numbered by record, as a spreadsheet shows the file (a quoted cell may span lines).
        for number, record in enumerate(reader, start=1):
            records.append((number, record))
            if len(records) > max_rows() + 1 + BLANK_RUN_END:
                break
    except csv.Error as exc:
        raise ImportFileError(_("The CSV file cannot be read near row %(row)s: %(error)s")
                              % {"row": len(records) + 1, "error": exc}) from None
    return _table(records)


def _read_xlsx(data: bytes) -> Table:
    from openpyxl import load_workbook

    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        names = set(archive.namelist())
        unpacked = sum(info.file_size for info in archive.infolist())
    except Exception:  # BadZipFile, but also NotImplementedError, ValueError, … for mangled headers
        raise ImportFileError(_("The workbook is damaged and cannot be opened.")) from None
    if "[Content_Types].xml" not in names:
        raise ImportFileError(_("This zip archive is not an Excel workbook."))
    if unpacked > max_unpacked_bytes():
        raise ImportFileError(_("The workbook unpacks to more than %(size)s; it cannot be imported.")
                              % {"size": _size(max_unpacked_bytes())})
    try:
        workbook = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception:  # openpyxl raises a variety of errors for files it cannot parse
        raise ImportFileError(_("The workbook is damaged or not in .xlsx format and cannot be opened.")) from None
    try:
        if not workbook.worksheets:
            raise ImportFileError(_("The workbook has no worksheet."))
        sheet = workbook.worksheets[0]
        # The stored dimension may be stale (some tools never update it); read what is really there.
        sheet.reset_dimensions()
        records, blank_run = [], 0
        try:
            for number, values in enumerate(sheet.iter_rows(values_only=True), start=1):
                records.append((number, list(values)))
                blank_run = blank_run + 1 if _blank(values) else 0
                if blank_run >= BLANK_RUN_END or len(records) > max_rows() + 1 + BLANK_RUN_END:
                    break
        except Exception:
            raise ImportFileError(_("The workbook is damaged and cannot be read.")) from None
    finally:
        workbook.close()
    return _table(records)


def _blank(values) -> bool:
    return all(v is None or (isinstance(v, str) and not v.strip()) for v in values)


def _table(records: list[tuple[int, list]]) -> Table:
    start = next((i for i, (_n, r) in enumerate(records) if not _blank(r)), None)
    if start is None:
        raise ImportFileError(_("The file has no rows."))
    header_row, header = records[start]
    labels, positions = {}, {}
    for position, cell in enumerate(header):
        label = str(cell).strip().lstrip("\ufeff") if cell is not None else ""
        key = HEADER_ALIASES.get(label.lower())
        if key is None:
            continue
        if key in labels:
            raise ImportFileError(_("The header names the column “%(col)s” twice.") % {"col": key})
        labels[key], positions[key] = label, position
    missing = [c for c in REQUIRED if c not in labels]
    if missing:
        found = ", ".join(str(c) for c in header if c not in (None, "")) or "—"
        raise ImportFileError(
            _("The first row must be a header naming the columns asset, address, amount and location (chain is "
              "optional). Missing: %(missing)s. Found: %(found)s.")
            % {"missing": ", ".join(missing), "found": found[:300]})
    rows = []
    for number, record in records[start + 1:]:
        if _blank(record):
            continue
        rows.append((number, {key: record[pos] if pos < len(record) else None for key, pos in positions.items()}))
    if not rows:
        raise ImportFileError(_("The file has a header but no data rows."))
    if len(rows) > max_rows():
        raise ImportFileError(_("The file has more than %(n)s data rows. Split it into several files.")
                              % {"n": f"{max_rows():,}"})
    return Table(labels=labels, rows=rows)


# --------------------------------------------------------------------------- checking the rows


def _text(value) -> str:
    if value is None:
        return ""
    return str(value).strip()


def _amount_text(value) -> str:
    """The amount as the officer typed it. A float cell from Excel is only trusted to Excel's own precision."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        try:
            exact = Decimal(repr(value))  # the shortest text that reads back as the same number
        except InvalidOperation:
            return repr(value)
        if not exact.is_finite():
            return repr(value)
        digits = len(exact.normalize().as_tuple().digits)
        if digits > EXCEL_DIGITS:
            raise ValidationError(_("Excel keeps only %(n)s significant digits of a number. Format the amount "
                                    "column as Text and type the amount again.") % {"n": EXCEL_DIGITS})
        return format(exact.normalize(), "f")
    return _text(value)


class _Assets:
    """Active and inactive assets by symbol, read once per import."""

    def __init__(self):
        self.by_symbol: dict[str, list[Asset]] = {}
        for asset in Asset.objects.order_by("symbol", "chain"):
            self.by_symbol.setdefault(asset.symbol.lower(), []).append(asset)

    def known(self) -> str:
        symbols = sorted({a.symbol for assets in self.by_symbol.values() for a in assets if a.is_active})
        return ", ".join(symbols)

    def resolve(self, asset_text: str, chain_text: str) -> Asset:
        symbol, chain = asset_text, ""
        if "@" in asset_text:
            symbol, chain = (part.strip() for part in asset_text.split("@", 1))
        elif asset_text.endswith(")") and "(" in asset_text:  # "USDT (tron)", as the portal prints assets
            symbol, chain = (part.strip() for part in asset_text[:-1].split("(", 1))
        chain = CHAIN_ALIASES.get(chain.lower(), chain.lower())
        column_chain = CHAIN_ALIASES.get(chain_text.lower(), chain_text.lower())
        if chain and column_chain and chain != column_chain:
            raise ValidationError({"chain": _("The asset names the chain “%(a)s” but the chain column says "
                                              "“%(b)s”.") % {"a": chain, "b": chain_text}})
        chain = chain or column_chain
        if not symbol:
            raise ValidationError({"asset": _("Name the asset (for example BTC, or USDT@tron).")})
        candidates = self.by_symbol.get(symbol.lower(), [])
        if not candidates:
            raise ValidationError({"asset": _("Unknown asset “%(s)s”. Known assets: %(known)s.")
                                   % {"s": symbol, "known": self.known()}})
        if chain:
            candidates = [a for a in candidates if a.chain.lower() == chain]
            if not candidates:
                chains = ", ".join(a.chain for a in self.by_symbol[symbol.lower()])
                raise ValidationError({"chain": _("%(s)s is not known on the chain “%(c)s”; it is on: %(chains)s.")
                                       % {"s": symbol.upper(), "c": chain, "chains": chains}})
        active = [a for a in candidates if a.is_active]
        if not active:
            raise ValidationError({"asset": _("%(a)s is not enabled for disposal.") % {"a": candidates[0]}})
        if len(active) > 1:
            examples = ", ".join(f"{a.symbol}@{a.chain}" for a in active)
            raise ValidationError({"asset": _("%(s)s exists on several chains: write one of %(ex)s, or fill the "
                                              "chain column.") % {"s": active[0].symbol, "ex": examples}})
        return active[0]


def _messages(exc: ValidationError) -> dict[str, list[str]]:
    if hasattr(exc, "error_dict"):
        return exc.message_dict
    return {"": exc.messages}


def check_rows(table: Table, *, case) -> ImportCheck:
    """Check every row as `holding_register` would, plus duplicates; nothing is written."""
    assets = _Assets()
    location_limit = Holding._meta.get_field("location").max_length
    result = ImportCheck()
    candidates: list[GoodRow] = []
    bad: set[int] = set()

    def fail(row: int, column: str, value, message) -> None:
        label = table.labels.get(column, column)
        result.errors.append(RowError(row=row, column=label, value=_text(value)[:80], message=str(message)))
        bad.add(row)

    for number, cells in table.rows:
        if any(isinstance(v, str) and len(v) > MAX_CELL_CHARS for v in cells.values()):
            fail(number, "", "", _("A cell of this row is longer than %(n)s characters.") % {"n": MAX_CELL_CHARS})
            continue
        asset = None
        try:
            asset = assets.resolve(_text(cells.get("asset")), _text(cells.get("chain")))
        except ValidationError as exc:
            for column, messages in _messages(exc).items():
                for message in messages:
                    fail(number, column or "asset", cells.get(column or "asset"), message)
        address = amount = None
        base_units = 0
        if asset is not None:
            try:
                address = parse_address(_text(cells.get("address")), asset=asset)
            except ValidationError as exc:
                for message in _messages(exc).get("address", exc.messages):
                    fail(number, "address", cells.get("address"), message)
            try:
                amount = _amount_text(cells.get("amount"))
                base_units = parse_amount(amount, asset=asset)
            except ValidationError as exc:
                for message in _messages(exc).get("amount", exc.messages):
                    fail(number, "amount", cells.get("amount"), message)
        location = _text(cells.get("location"))
        if not location:
            fail(number, "location", "", _("Say where the coins sit (wallet, device or exchange)."))
        elif "\x00" in location:
            fail(number, "location", location, _("Null characters are not allowed."))
        elif len(location) > location_limit:
            fail(number, "location", location, _("At most %(n)s characters.") % {"n": location_limit})
        if number not in bad:
            canonical = format(Decimal(base_units).scaleb(-asset.decimals, _EXACT).normalize(_EXACT), "f")
            candidates.append(GoodRow(row=number, asset=asset, address=address, amount=canonical,
                                      base_units=base_units, location=location))

    existing = set(Holding.objects.filter(case=case).values_list("asset_id", "address"))
    first: dict[tuple[int, str], GoodRow] = {}
    for row in candidates:
        key = (row.asset.pk, row.address)
        if key in existing:
            fail(row.row, "address", row.address, _("This case already has a %(sym)s holding at this address.")
                 % {"sym": row.asset.symbol})
        elif key in first:
            earlier = first[key]
            if earlier.base_units == row.base_units:
                fail(row.row, "address", row.address, _("Repeats row %(n)s (same asset and address).")
                     % {"n": earlier.row})
            else:
                # Which amount is right is for the officer to say: neither row is imported.
                fail(row.row, "address", row.address, _("Same asset and address as row %(n)s, with a different "
                                                         "amount.") % {"n": earlier.row})
                fail(earlier.row, "address", earlier.address, _("Same asset and address as row %(n)s, with a "
                                                                 "different amount.") % {"n": row.row})
        else:
            first[key] = row
    result.good = [r for r in candidates if r.row not in bad]
    result.errors.sort(key=lambda e: e.row)
    return result


# --------------------------------------------------------------------------- writing


class ImportRefused(Exception):
    """The service refused a row while importing; nothing of this import was kept."""

    def __init__(self, errors: list[RowError]):
        super().__init__("; ".join(f"{e.row}: {e.message}" for e in errors))
        self.errors = errors


def import_rows(*, actor, case, rows: list[dict]) -> list[Holding]:
    """Register every row through the service in one transaction: all are kept or none.

    `rows` are `GoodRow.as_session()` dicts. NotPermitted and DisposalError propagate unchanged.
    """
    assets = {a.pk: a for a in Asset.objects.filter(pk__in={r["asset"] for r in rows})}
    holdings = []
    with transaction.atomic():
        for row in rows:
            asset = assets.get(row["asset"])
            if asset is None:
                raise ImportRefused([RowError(row["row"], "asset", "", _("This asset no longer exists."))])
            try:
                holdings.append(holding_register(actor=actor, case=case, asset=asset, address=row["address"],
                                                 amount=row["amount"], location=row["location"]))
            except ValidationError as exc:
                raise ImportRefused([RowError(row["row"], column, row.get(column, ""), message)
                                     for column, messages in _messages(exc).items() for message in messages])
    return holdings


# --------------------------------------------------------------------------- the pending "good rows only" import


SESSION_KEY = "holdings_imports"
PENDING_PER_SESSION = 3


def remember_good_rows(session, *, case, check: ImportCheck, filename: str) -> str:
    """Keep the checked good rows in the session; the returned token names them in the confirming POST."""
    pending = dict(session.get(SESSION_KEY, {}))
    # Keep the newest few only: an abandoned report must not grow the session without bound.
    for stale in list(pending)[: max(0, len(pending) - PENDING_PER_SESSION + 1)]:
        del pending[stale]
    token = secrets.token_urlsafe(24)
    pending[token] = {"case": case.pk, "filename": filename[:200], "rows": [r.as_session() for r in check.good]}
    session[SESSION_KEY] = pending
    return token


def take_good_rows(session, *, case, token: str) -> dict | None:
    """The pending rows for this token and case, removed from the session (a token is used once)."""
    pending = dict(session.get(SESSION_KEY, {}))
    entry = pending.get(token) if isinstance(token, str) else None
    if entry is None or entry.get("case") != case.pk:
        return None
    del pending[token]
    session[SESSION_KEY] = pending
    return entry
