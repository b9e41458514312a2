"""Render an official document to PDF: Django template → HTML → WeasyPrint.

`render_pdf(doc_type, context, number=, version=, verify_url=, issued_at=)` renders
`templates/documents/<doc_type>.html` (which extends `documents/base.html`) with the context
from `documents.facts.build_context`, and returns the PDF bytes (unsigned; signing is
`documents/signing.py`'s job).

Offline and fast: the only resource is the QR code, an SVG data URI made here with segno;
the URL fetcher refuses everything that is not a `data:` URI, so a template can never make
the renderer reach the network or the file system. The stylesheet
(`static/documents/print.css`) is parsed once per process and thread, with one shared font
configuration. Fonts: Noto Serif/Sans CJK SC (fonts-noto-cjk, real bold); Pango falls back to
fonts-hanazono by itself for rare characters (𠮷, 𠀀). Needs libharfbuzz-subset0 for fast font
subsetting (see STACK-NOTES).
"""

from __future__ import annotations

import threading
from datetime import datetime
from pathlib import Path

import segno
from django.conf import settings
from django.template.loader import render_to_string
from django.utils import timezone

from .models import DocumentType

STYLESHEET = Path(settings.BASE_DIR) / "static" / "documents" / "print.css"
QR_SCALE = 4  # module size in SVG user units; the printed size is set in CSS (22 mm)

_local = threading.local()


def _weasy():
    """WeasyPrint objects reused across renders in this thread (parsing the CSS and loading fonts
    once saves ~40% of a small document's time)."""
    from weasyprint import CSS
    from weasyprint.text.fonts import FontConfiguration
    from weasyprint.urls import URLFetcher

    mtime = STYLESHEET.stat().st_mtime
    cached = getattr(_local, "cached", None)
    if cached is None or cached[0] != mtime:
        font_config = FontConfiguration()
        fetcher = URLFetcher(allowed_protocols={"data"})
        css = CSS(string=STYLESHEET.read_text(encoding="utf-8"), font_config=font_config, url_fetcher=fetcher)
        cached = _local.cached = (mtime, font_config, css)
    return cached[1], cached[2]


def qr_data_uri(verify_url: str) -> str:
    return segno.make(verify_url, error="m").svg_data_uri(scale=QR_SCALE, border=0)


def render_html(doc_type: str, context: dict, *, number: str, version: int, verify_url: str,
                issued_at: datetime) -> str:
    if doc_type not in DocumentType.values:
        raise ValueError(f"Unknown document type: {doc_type!r}")
    local_issued = timezone.localtime(issued_at) if timezone.is_aware(issued_at) else issued_at
    return render_to_string(f"documents/{doc_type}.html", {
        **context,
        "number": number,
        "version": version,
        "verify_url": verify_url,
        "issued_at": local_issued,
        "issued_at_text": local_issued.strftime("%Y-%m-%d %H:%M:%S"),
        "issued_at_iso": local_issued.isoformat(),
        "qr_data_uri": qr_data_uri(verify_url),
    })


def render_pdf(doc_type: str, context: dict, *, number: str, version: int, verify_url: str,
               issued_at: datetime) -> bytes:
    from weasyprint import HTML
    from weasyprint.urls import URLFetcher

    html = render_html(doc_type, context, number=number, version=version, verify_url=verify_url,
                       issued_at=issued_at)
    font_config, css = _weasy()
    document = HTML(string=html, base_url=str(STYLESHEET.parent) + "/",
                    url_fetcher=URLFetcher(allowed_protocols={"data"}))
    return document.write_pdf(stylesheets=[css], font_config=font_config)
