"""The public verify pages: by token (QR code) and by uploading the PDF."""

import hashlib
import io
import re
import uuid

import pytest
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from documents.models import Document, DocumentType, new_token
from documents.signing import sign_pdf

pytestmark = pytest.mark.documents

FACTS = {"检测对象 Subject": "BTC 2.5", "检测结论 Conclusion": "一致 consistent"}


@pytest.fixture(scope="module")
def plain_pdf():
    import weasyprint

    return weasyprint.HTML(string="<p>测试 test</p>").write_pdf()


@pytest.fixture
def storage(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def pki(world, tmp_path, settings):
    folder = tmp_path / "pki"
    call_command("make_dev_pki", "shunyi", "witness", dir=str(folder), stdout=io.StringIO())
    settings.DOCUMENT_PKI_DIR = folder
    settings.DOCUMENT_TRUST_ROOTS = [folder / "ca.pem"]
    return folder


@pytest.fixture
def client():
    """Anonymous, in English (the project defaults to Chinese; translations may come later)."""
    return Client(headers={"accept-language": "en"})


def issue(entrustment, issuer, data: bytes, *, version=1, supersedes=None, number="JC-2026-000017"):
    doc = Document(type=DocumentType.DETECTION_REPORT, number=number, year=2026, version=version,
                   entrustment=entrustment, issuer=issuer, supersedes=supersedes,
                   sha256=hashlib.sha256(data).hexdigest(), size=len(data), printed_facts=FACTS, signed=True,
                   trigger=f"test:{uuid.uuid4()}")
    doc.file.save("ignored.pdf", ContentFile(data), save=False)
    doc.save()
    return doc


@pytest.fixture
def issued(flow, world, storage, pki, plain_pdf):
    """Version 1 and its replacement version 2 of one detection report, both signed by the witness."""
    entrustment = flow.to("draft")
    v1_pdf = sign_pdf(plain_pdf, world.witness, reason="v1")
    v2_pdf = sign_pdf(plain_pdf, world.witness, reason="v2")
    v1 = issue(entrustment, world.witness, v1_pdf)
    v2 = issue(entrustment, world.witness, v2_pdf, version=2, supersedes=v1)
    return {"entrustment": entrustment, "v1": v1, "v2": v2, "v1_pdf": v1_pdf, "v2_pdf": v2_pdf}


def text(response) -> str:
    return response.content.decode()


def without_csrf(html: str) -> str:
    """The page minus what differs per request: CSRF tokens (form field, htmx header on <body>),
    the CSP nonce and the language switcher's return address."""
    html = re.sub(r'nonce="[^"]*"', "", html)
    html = re.sub(r'"inlineScriptNonce": *"[^"]*"|"inlineStyleNonce": *"[^"]*"', "", html)
    html = re.sub(r'name="csrfmiddlewaretoken" value="[^"]*"', "", html)
    html = re.sub(r'name="next" value="[^"]*"', "", html)
    return re.sub(r'"X-CSRFToken": "[^"]*"', "", html)


def upload(client, data: bytes, name="document.pdf"):
    return client.post(reverse("documents:verify-upload"),
                       {"file": SimpleUploadedFile(name, data, content_type="application/pdf")})


# --- by token


def test_current_document_is_genuine_and_current(client, issued, world):
    response = client.get(reverse("documents:verify", args=[issued["v2"].token]))
    assert response.status_code == 200
    page = text(response)
    assert "Genuine and current" in page
    assert "JC-2026-000017" in page and "Detection report" in page and world.witness.name in page
    for label, value in FACTS.items():
        assert label in page and value in page
    assert "no-store" in response["Cache-Control"]


def test_superseded_document_says_so_and_names_the_current_version(client, issued):
    response = client.get(reverse("documents:verify", args=[issued["v1"].token]))
    assert response.status_code == 200
    page = text(response)
    assert "Genuine but superseded" in page
    assert "superseded by version 2" in page
    assert "Genuine and current" not in page


def test_verify_page_shows_nothing_beyond_the_printed_facts(client, issued, world):
    page = text(client.get(reverse("documents:verify", args=[issued["v2"].token])))
    entrustment = issued["entrustment"]
    for secret in (entrustment.number, entrustment.case.case_number, entrustment.case.title, world.shunyi.name,
                   world.bce.name, issued["v1"].token, issued["v2"].sha256):
        assert secret not in page


@pytest.mark.parametrize("token", ["x", "a" * 32, "a" * 200, "%3Cscript%3E", "....", "'; DROP TABLE x; --"])
def test_unknown_or_malformed_token_is_the_same_404(client, issued, token):
    response = client.get(f"/verify/{token}/")
    assert response.status_code == 404
    assert "Unknown" in text(response)
    assert "no-store" in response["Cache-Control"]
    reference = client.get(reverse("documents:verify", args=[new_token()]))
    assert reference.status_code == 404
    assert without_csrf(text(response)) == without_csrf(text(reference))


def test_verify_pages_need_no_login(issued):
    anonymous = Client(headers={"accept-language": "en"})
    assert anonymous.get(reverse("documents:verify", args=[issued["v2"].token])).status_code == 200
    assert anonymous.get(reverse("documents:verify-upload")).status_code == 200
    assert upload(anonymous, issued["v2_pdf"]).status_code == 200


def test_no_listing(client, issued):
    assert client.get("/verify/").status_code == 200  # the upload form, not a list
    assert issued["v1"].number not in text(client.get("/verify/"))


# --- by upload


def test_upload_form_is_labelled_and_csrf_protected(issued):
    strict = Client(enforce_csrf_checks=True, headers={"accept-language": "en"})
    form = strict.get(reverse("documents:verify-upload"))
    page = text(form)
    assert 'enctype="multipart/form-data"' in page
    assert '<label for="id_file">' in page and 'id="id_file"' in page
    assert "no-store" in form["Cache-Control"]
    # Without the token: refused.
    assert upload(strict, issued["v2_pdf"]).status_code == 403
    # With it: checked.
    token = strict.cookies["csrftoken"].value
    response = strict.post(reverse("documents:verify-upload"),
                           {"csrfmiddlewaretoken": token,
                            "file": SimpleUploadedFile("d.pdf", issued["v2_pdf"], content_type="application/pdf")})
    assert response.status_code == 200 and "Genuine and current" in text(response)


def test_upload_of_the_issued_file_is_genuine_and_signed(client, issued, world):
    response = upload(client, issued["v2_pdf"])
    assert response.status_code == 200
    page = text(response)
    assert "Genuine and current" in page
    assert "JC-2026-000017" in page
    assert f"Signed by</dt><dd>{world.witness.name}</dd>" in page
    assert "Signer's certificate trusted</dt><dd>yes" in page
    assert re.search(r"Unaltered since signing</dt><dd>yes", page)
    assert re.search(r"Signature covers the whole file</dt><dd>yes", page)
    assert "no-store" in response["Cache-Control"]


def test_upload_of_a_superseded_file(client, issued):
    page = text(upload(client, issued["v1_pdf"]))
    assert "Genuine but superseded" in page and "superseded by version 2" in page


def test_upload_of_a_one_byte_altered_copy_is_unknown(client, issued):
    altered = bytearray(issued["v2_pdf"])
    altered[len(altered) // 3] ^= 0x01
    response = upload(client, bytes(altered))
    assert response.status_code == 200
    page = text(response)
    assert "Unknown: this exact file was not issued here" in page
    assert "Genuine" not in page
    assert "JC-2026-000017" not in page
    assert re.search(r"Unaltered since signing</dt><dd>no", page)


def test_upload_of_an_unsigned_unknown_pdf(client, issued, plain_pdf):
    page = text(upload(client, plain_pdf))
    assert "Unknown: this exact file was not issued here" in page
    assert "no electronic signature" in page


def test_upload_of_something_that_is_not_a_pdf(client, issued):
    response = upload(client, b"GIF89a not a pdf at all", name="picture.pdf")
    assert response.status_code == 400
    assert "This file is not a PDF." in text(response)


def test_upload_without_a_file(client, issued):
    response = client.post(reverse("documents:verify-upload"), {})
    assert response.status_code == 400
    assert "Choose a PDF file" in text(response)


def test_upload_over_the_limit_is_refused_with_a_message(client, issued, settings):
    settings.DOCUMENT_VERIFY_MAX_BYTES = 1000
    # Slightly too large: stopped by the upload handler while reading.
    response = upload(client, b"%PDF-1.7\n" + b"x" * 5000)
    assert response.status_code == 413
    assert "The file is too large (limit 1000 bytes)." in text(response)
    # Far too large: refused from Content-Length before the body is read.
    response = upload(client, b"%PDF-1.7\n" + b"x" * 200_000)
    assert response.status_code == 413
    assert "The file is too large (limit 1000 bytes)." in text(response)
    assert "no-store" in response["Cache-Control"]


def test_limit_message_in_megabytes(client, issued, settings):
    settings.DOCUMENT_VERIFY_MAX_BYTES = 20 * 1024 * 1024
    assert "at most 20 MB" in text(client.get(reverse("documents:verify-upload")))


def test_upload_exactly_at_the_limit_is_accepted(client, issued, settings):
    settings.DOCUMENT_VERIFY_MAX_BYTES = len(issued["v2_pdf"])
    assert "Genuine and current" in text(upload(client, issued["v2_pdf"]))


def test_oversized_upload_is_refused_early(client, issued, settings, monkeypatch):
    """Far too large: refused from Content-Length with no parsing; slightly too large: reading stops."""
    import documents.verify as verify

    handlers = []
    original_init = verify._LimitedUploadHandler.__init__

    def spy(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        handlers.append(self)

    monkeypatch.setattr(verify._LimitedUploadHandler, "__init__", spy)
    settings.DOCUMENT_VERIFY_MAX_BYTES = 1000
    assert upload(client, b"%PDF-1.7\n" + b"x" * 200_000).status_code == 413
    assert handlers == []  # the body was never parsed
    assert upload(client, b"%PDF-1.7\n" + b"x" * 5000).status_code == 413
    assert len(handlers) == 1 and handlers[0].too_large
