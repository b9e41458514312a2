"""Public verification of official documents (no login).

``verify``: the address in a document's QR code, ``/verify/<token>/``. Says whether the document
is genuine and current, genuine but superseded, or unknown (HTTP 404, the same page whether the
token is malformed or simply not issued), and shows back only what is printed on the document.

``verify_upload``: upload a PDF; its SHA-256 is looked up in the registry (an altered file is
unknown) and its electronic signature is checked.

Nothing here lists documents or reveals anything about the entrustment beyond the printed facts.
"""

from __future__ import annotations

import hashlib
import re

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_http_methods

from .models import Document
from .signing import validate_pdf

# Tokens are secrets.token_urlsafe(24) (32 characters); the column allows up to 40.
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,40}$")
# Room for the multipart envelope and the CSRF field around the file itself.
MULTIPART_OVERHEAD = 64 * 1024
FIELD = "file"


def max_bytes() -> int:
    return int(getattr(settings, "DOCUMENT_VERIFY_MAX_BYTES", 20 * 1024 * 1024))


def limit_label(limit: int) -> str:
    """20971520 -> "20 MB"; small test limits stay readable ("1000 bytes", "64 KB")."""
    mb, kb = 1024 * 1024, 1024
    if limit >= mb:
        return f"{limit // mb} MB" if limit % mb == 0 else f"{limit / mb:.1f} MB"
    if limit >= kb:
        return f"{limit // kb} KB" if limit % kb == 0 else f"{limit / kb:.1f} KB"
    return f"{limit} bytes"


def _no_store(response):
    response["Cache-Control"] = "no-store, private"
    response["X-Robots-Tag"] = "noindex, nofollow"
    return response


def _current_version(document: Document) -> Document:
    """Follow supersedes links forward to the newest version (bounded, in case of a bad chain)."""
    current = document
    for _ in range(1000):
        newer = Document.objects.filter(supersedes=current).select_related("issuer").first()
        if newer is None:
            return current
        current = newer
    return current


def _describe(document: Document | None) -> dict:
    """The template context for one document: only what is printed on it."""
    if document is None:
        return {"verdict": "unknown", "document": None}
    current = _current_version(document)
    facts = document.printed_facts if isinstance(document.printed_facts, dict) else {}
    return {
        "verdict": "current" if current.pk == document.pk else "superseded",
        "document": {
            "type_label": document.get_type_display(),
            "number": document.number,
            "version": document.version,
            "issuer": document.issuer.name,
            "issued_at": document.created_at,
            "facts": [(str(label), "" if value is None else str(value)) for label, value in facts.items()],
        },
        "current_version": current.version,
        "current_issued_at": current.created_at,
    }


@never_cache
@require_http_methods(["GET", "HEAD"])
def verify(request, token: str):
    document = None
    if _TOKEN.match(token or ""):
        document = Document.objects.select_related("issuer").filter(token=token).first()
    context = _describe(document)
    status = 404 if document is None else 200
    return _no_store(render(request, "documents/verify.html", context, status=status))


class _LimitedUploadHandler(FileUploadHandler):
    """First in the chain: stops reading the upload as soon as it exceeds the limit."""

    def __init__(self, limit: int, request=None):
        super().__init__(request)
        self.limit = limit
        self.received = 0
        self.too_large = False

    def new_file(self, *args, **kwargs):
        super().new_file(*args, **kwargs)
        self.received = 0

    def receive_data_chunk(self, raw_data, start):
        self.received += len(raw_data)
        if self.received > self.limit:
            self.too_large = True
            raise StopUpload(connection_reset=False)  # drain the (bounded) rest so the client gets the answer
        return raw_data

    def file_complete(self, file_size):
        return None


@never_cache
@csrf_exempt  # the CSRF check runs in _verify_upload, after the size-limiting upload handler is in place
@require_http_methods(["GET", "HEAD", "POST"])
def verify_upload(request):
    limit = max_bytes()
    if request.method == "POST":
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared = 0
        if declared > limit + MULTIPART_OVERHEAD:
            # Refused before reading the body. Nothing changes state here, so answering without the
            # CSRF check (which would need the body) is harmless.
            return _upload_page(request, limit, error="too_large", status=413)
        handler = _LimitedUploadHandler(limit, request)
        request.upload_handlers.insert(0, handler)
        return _verify_upload(request, limit, handler)
    return _verify_upload(request, limit, None)


@csrf_protect
def _verify_upload(request, limit: int, handler: _LimitedUploadHandler | None):
    if request.method != "POST":
        return _upload_page(request, limit)
    upload = request.FILES.get(FIELD)
    if (handler is not None and handler.too_large) or (upload is not None and upload.size > limit):
        return _upload_page(request, limit, error="too_large", status=413)
    if upload is None or upload.size == 0:
        return _upload_page(request, limit, error="missing", status=400)
    head = upload.read(5)
    if head != b"%PDF-":
        return _upload_page(request, limit, error="not_pdf", status=400)
    data = head + upload.read(limit + 1 - len(head))
    if len(data) > limit:
        return _upload_page(request, limit, error="too_large", status=413)
    digest = hashlib.sha256(data).hexdigest()
    document = (Document.objects.select_related("issuer").filter(sha256=digest).order_by("-created_at").first())
    context = _describe(document)
    context.update(checked=True, sha256=digest, signature=validate_pdf(data))
    return _upload_page(request, limit, **context)


def _upload_page(request, limit: int, *, error: str = "", status: int = 200, **context):
    context.update(error=error, limit=limit_label(limit), field=FIELD)
    return _no_store(render(request, "documents/verify_upload.html", context, status=status))
