"""Signing official documents and checking their signatures (documents/signing.py, make_dev_pki)."""

import io
import os
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from django.core.management import call_command
from django.core.management.base import CommandError

from documents.signing import SigningUnavailable, sign_pdf, validate_pdf

pytestmark = pytest.mark.documents


@pytest.fixture(scope="module")
def plain_pdf():
    import weasyprint

    return weasyprint.HTML(string="<p>测试 test</p>").write_pdf()


@pytest.fixture
def pki(world, tmp_path, settings):
    """A development PKI for every organisation of the world, configured as the one in use."""
    folder = tmp_path / "pki"
    call_command("make_dev_pki", dir=str(folder), stdout=io.StringIO())
    settings.DOCUMENT_PKI_DIR = folder
    settings.DOCUMENT_TRUST_ROOTS = [folder / "ca.pem"]
    return folder


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


# --- signing and validating


def test_signed_pdf_is_intact_valid_trusted_and_names_the_signer(pki, world, plain_pdf):
    signed = sign_pdf(plain_pdf, world.shunyi, reason="检测报告")
    assert signed.startswith(plain_pdf)  # an incremental update: the original bytes are untouched
    check = validate_pdf(signed)
    assert check.signed and check.intact and check.valid and check.trusted and check.covers_whole_file
    assert check.ok
    assert check.signer == "顺义分局"
    assert check.signed_at is not None
    assert check.summary == "signed, unaltered and trusted"


def test_one_byte_changed_in_the_signed_range_fails(pki, world, plain_pdf):
    signed = bytearray(sign_pdf(plain_pdf, world.shunyi))
    middle = len(plain_pdf) // 2  # inside the original document, which the signature covers
    signed[middle] ^= 0x01
    check = validate_pdf(bytes(signed))
    assert check.signed  # still a readable, signed PDF ...
    assert not check.intact  # ... whose signed bytes no longer match the signature
    assert not check.trusted and not check.ok
    assert check.summary == "the document was altered after signing"


def test_signature_by_a_ca_outside_the_trust_roots_is_not_trusted(pki, world, plain_pdf, tmp_path, settings):
    other = tmp_path / "other-pki"
    call_command("make_dev_pki", "shunyi", dir=str(other), stdout=io.StringIO())
    settings.DOCUMENT_PKI_DIR = other  # sign with the other CA's certificate ...
    signed = sign_pdf(plain_pdf, world.shunyi)
    settings.DOCUMENT_PKI_DIR = pki  # ... and check against our trust root only
    settings.DOCUMENT_TRUST_ROOTS = [pki / "ca.pem"]
    check = validate_pdf(signed)
    assert check.signed and check.intact and check.valid
    assert not check.trusted
    assert not check.ok
    # No trust roots configured at all: still not trusted, and no fallback to the system trust list.
    settings.DOCUMENT_TRUST_ROOTS = [tmp_path / "missing.pem"]
    assert not validate_pdf(signed).trusted


def test_an_incremental_update_after_signing_is_detected(pki, world, plain_pdf):
    from pyhanko.pdf_utils import generic
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter

    signed = sign_pdf(plain_pdf, world.shunyi)
    writer = IncrementalPdfFileWriter(io.BytesIO(signed))
    writer.set_info(generic.DictionaryObject({generic.NameObject("/Title"): generic.TextStringObject("改过的")}))
    out = io.BytesIO()
    writer.write(out)
    appended = out.getvalue()
    assert appended.startswith(signed) and len(appended) > len(signed)

    check = validate_pdf(appended)
    assert check.signed and check.intact  # the signed revision itself is unchanged ...
    assert not check.covers_whole_file  # ... but something was added after it
    assert not check.ok


def test_unsigned_pdf_is_reported_unsigned(pki, plain_pdf):
    check = validate_pdf(plain_pdf)
    assert not check.signed and not check.trusted and not check.ok
    assert check.signer == ""


@pytest.mark.parametrize("junk", [b"", b"garbage bytes", b"%PDF-1.7\n\x00\xff broken", os.urandom(4096),
                                  b"%PDF-1.4\n" + os.urandom(2048) + b"\n%%EOF"])
def test_garbage_is_unsigned_and_never_raises(junk):
    check = validate_pdf(junk)
    assert not check.signed and not check.ok


def test_truncated_signed_pdf_never_raises(pki, world, plain_pdf):
    signed = sign_pdf(plain_pdf, world.shunyi)
    check = validate_pdf(signed[: len(signed) - 200])
    assert not check.ok


def test_organisation_without_keys_is_signing_unavailable(pki, plain_pdf):
    stranger = SimpleNamespace(code="no-such-org", name="无", name_en="")
    with pytest.raises(SigningUnavailable) as exc:
        sign_pdf(plain_pdf, stranger)
    message = str(exc.value)
    assert "no-such-org" in message
    assert str(pki / "no-such-org" / "key.pem") in message


def test_unsafe_organisation_code_is_refused(pki, plain_pdf):
    with pytest.raises(SigningUnavailable):
        sign_pdf(plain_pdf, SimpleNamespace(code="../shunyi", name="x", name_en=""))


def test_encrypted_key_uses_the_passphrase_from_the_environment(pki, world, plain_pdf, monkeypatch, caplog):
    key_path = pki / "shunyi" / "key.pem"
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.BestAvailableEncryption(b"correct horse")))
    monkeypatch.delenv("DOCUMENT_KEY_PASSPHRASE", raising=False)
    with pytest.raises(SigningUnavailable):
        sign_pdf(plain_pdf, world.shunyi)
    monkeypatch.setenv("DOCUMENT_KEY_PASSPHRASE", "guess-4711")
    with pytest.raises(SigningUnavailable) as exc:
        sign_pdf(plain_pdf, world.shunyi)
    assert "guess-4711" not in str(exc.value)
    monkeypatch.setenv("DOCUMENT_KEY_PASSPHRASE", "correct horse")
    assert validate_pdf(sign_pdf(plain_pdf, world.shunyi)).ok
    assert "guess-4711" not in caplog.text and "correct horse" not in caplog.text


# --- make_dev_pki


def test_make_dev_pki_creates_ca_and_one_certificate_per_organisation(world, tmp_path):
    folder = tmp_path / "pki"
    out = io.StringIO()
    call_command("make_dev_pki", dir=str(folder), stdout=out)
    assert "created development CA" in out.getvalue()

    ca = x509.load_pem_x509_certificate((folder / "ca.pem").read_bytes())
    assert ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == \
        "Disposal Portal Development CA — NOT FOR PRODUCTION"
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert (ca.not_valid_after_utc - ca.not_valid_before_utc).days >= 3650

    from agencies.models import Organisation

    for org in Organisation.objects.all():
        key, cert_path = folder / org.code / "key.pem", folder / org.code / "cert.pem"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        cert.verify_directly_issued_by(ca)
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == org.name
        assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == org.code
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        assert usage.digital_signature and usage.content_commitment and not usage.key_cert_sign
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        assert 365 * 3 - 1 <= (cert.not_valid_after_utc - cert.not_valid_before_utc).days <= 365 * 3 + 1
        assert f"{org.code}" in out.getvalue()
    assert stat.S_IMODE((folder / "ca-key.pem").stat().st_mode) == 0o600


def test_make_dev_pki_is_idempotent(world, tmp_path):
    folder = tmp_path / "pki"
    call_command("make_dev_pki", dir=str(folder), stdout=io.StringIO())
    before = snapshot(folder)
    out = io.StringIO()
    call_command("make_dev_pki", dir=str(folder), stdout=out)
    assert "created" not in out.getvalue()
    assert snapshot(folder) == before


def test_make_dev_pki_for_named_organisations_only_and_adds_new_ones_later(world, tmp_path):
    folder = tmp_path / "pki"
    call_command("make_dev_pki", "shunyi", dir=str(folder), stdout=io.StringIO())
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == ["shunyi"]
    before = snapshot(folder)
    out = io.StringIO()
    call_command("make_dev_pki", "shunyi", "cbex", dir=str(folder), stdout=out)
    assert "cbex" in out.getvalue() and "development CA" not in out.getvalue()
    after = snapshot(folder)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing existing was touched
    with pytest.raises(CommandError):
        call_command("make_dev_pki", "nobody", dir=str(folder), stdout=io.StringIO())
