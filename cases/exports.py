"""The filtered entrustment list as CSV or XLSX, with the same columns and rows as the list page.

CSV is streamed (UTF-8 with a byte-order mark, so Excel opens Chinese text correctly); XLSX
is written with openpyxl's write-only workbook, which keeps only the current row in memory.
The views pass in a queryset already narrowed by `visible_entrustments` and the list's filters.

Amounts are written as text in the asset's precision (`Asset.format_amount`): a spreadsheet
number is a binary float and cannot hold 18 decimals of ether exactly.
"""

from __future__ import annotations

import csv
import tempfile
from collections.abc import Iterable, Iterator
from datetime import datetime

from django.conf import settings
from django.http import FileResponse, StreamingHttpResponse
from django.utils import timezone
from django.utils.translation import gettext as _

DEFAULT_MAX_ROWS = 100_000
CHUNK = 2_000
CSV_DATETIME = "%Y-%m-%d %H:%M"
XLSX_DATETIME = "yyyy-mm-dd hh:mm"
# Characters that make Excel or LibreOffice read a CSV cell as a formula.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def max_rows() -> int:
    return int(getattr(settings, "PORTAL_EXPORT_MAX_ROWS", DEFAULT_MAX_ROWS))


def headings() -> list[str]:
    tz = timezone.get_current_timezone_name()
    return [
        _("Number"),
        _("Case number"),
        _("Bureau"),
        _("Agency"),
        _("State"),
        _("Created (%(tz)s)") % {"tz": tz},
        _("State changed (%(tz)s)") % {"tz": tz},
        _("SLA deadline (%(tz)s)") % {"tz": tz},
        _("Holdings"),
    ]


def holdings_by_asset(entrustment) -> list[tuple[object, int]]:
    """(asset, accepted base units) per asset, from the prefetched holdings; summed in Python (see BaseUnitsField)."""
    totals: dict[int, list] = {}
    for holding in entrustment.holdings.all():
        totals.setdefault(holding.asset_id, [holding.asset, 0])[1] += holding.accepted_amount
    return sorted(((asset, amount) for asset, amount in totals.values()),
                  key=lambda pair: (pair[0].symbol, pair[0].chain))


def holdings_text(entrustment) -> str:
    return "; ".join(f"{asset.format_amount(amount)} {asset.symbol}"
                     for asset, amount in holdings_by_asset(entrustment))


def _local(value: datetime | None) -> datetime | None:
    # Spreadsheets have no time zones: write the wall-clock time of settings.TIME_ZONE, named in the heading.
    return timezone.localtime(value).replace(tzinfo=None) if value else None


def rows(queryset: Iterable) -> Iterator[list]:
    """One list per entrustment: text, and naive local datetimes (or None) for the three times."""
    for e in queryset:
        yield [
            e.number,
            e.case.case_number,
            e.bureau.name,
            e.agency.name if e.agency_id else "",
            e.get_state_display(),
            _local(e.created_at),
            _local(e.state_changed_at),
            _local(e.sla_deadline),
            holdings_text(e),
        ]


def _iterate(queryset):
    # iterator() with a chunk size keeps the prefetch of holdings (one query per chunk) and the memory flat.
    return queryset[: max_rows()].iterator(chunk_size=CHUNK)


# --------------------------------------------------------------------------- CSV


def _csv_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime(CSV_DATETIME)
    text = str(value)
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


class _Echo:
    """A file-like object whose write() hands the line back, so csv.writer can feed a generator."""

    def write(self, value):
        return value


def _csv_lines(queryset) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield "\ufeff"
    yield writer.writerow(headings())
    for row in rows(_iterate(queryset)):
        yield writer.writerow([_csv_cell(value) for value in row])


def csv_response(queryset, filename: str) -> StreamingHttpResponse:
    response = StreamingHttpResponse(_csv_lines(queryset), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


# --------------------------------------------------------------------------- XLSX


def xlsx_response(queryset, filename: str) -> FileResponse:
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet(title=_("Entrustments")[:31])
    for letter, width in zip("ABCDEFGHI", (18, 26, 22, 22, 24, 17, 17, 17, 50)):
        sheet.column_dimensions[letter].width = width
    sheet.freeze_panes = "A2"

    def cell(value):
        c = WriteOnlyCell(sheet, value=ILLEGAL_CHARACTERS_RE.sub("", value) if isinstance(value, str) else value)
        if isinstance(value, str):
            c.data_type = "s"  # never a formula, whatever the text starts with
        elif isinstance(value, datetime):
            c.number_format = XLSX_DATETIME
        return c

    sheet.append([cell(h) for h in headings()])
    for row in rows(_iterate(queryset)):
        sheet.append([cell(value) for value in row])
    # Spooled: small exports stay in memory, large ones go to a temporary file instead of the heap.
    buffer = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024)
    workbook.save(buffer)
    buffer.seek(0)
    return FileResponse(
        buffer,
        as_attachment=True,
        filename=filename,
        content_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    )
