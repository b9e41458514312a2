"""Electronic signatures on official documents (PAdES baseline, via pyHanko).

These are the issuing organisations' *document-signing* keys (X.509 certificates used to seal
PDFs). They have nothing to do with the cryptocurrency keys of seized assets.

Configuration (settings, read at call time):

``DOCUMENT_PKI_DIR`` (default ``VAR_DIR / "pki"``)
    One folder per organisation code::

        <DOCUMENT_PKI_DIR>/ca.pem                    CA certificate(s) sent along as the chain
        <DOCUMENT_PKI_DIR>/<org code>/key.pem        the organisation's private key (PEM)
        <DOCUMENT_PKI_DIR>/<org code>/cert.pem       its certificate (PEM)
        <DOCUMENT_PKI_DIR>/<org code>/chain.pem      optional: intermediates to embed instead of ca.pem

    ``manage.py make_dev_pki`` creates a development CA and a key + certificate per organisation.
    Real certificates are configured the same way: put the organisation's key, its certificate
    and (if any) its issuing chain at these paths, and point ``DOCUMENT_TRUST_ROOTS`` at the real
    root(s). Keys are read as PEM; an encrypted key is opened with the passphrase in the
    environment variable ``DOCUMENT_KEY_PASSPHRASE`` (never logged, never stored in settings).

``DOCUMENT_TRUST_ROOTS`` (default ``[<DOCUMENT_PKI_DIR>/ca.pem]``)
    PEM (or DER) files with the root certificates a signature must chain to in order to be
    reported as *trusted*. Validation never falls back to the operating system's trust list.

Public API: ``sign_pdf``, ``validate_pdf``, ``SignatureCheck``, ``SigningUnavailable``,
``pki_dir``, ``key_paths``, ``trust_root_paths``.
"""

from __future__ import annotations

import io
import logging
import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from django.conf import settings

logger = logging.getLogger(__name__)

PASSPHRASE_ENV = "DOCUMENT_KEY_PASSPHRASE"
FIELD_NAME = "Signature"
_SAFE_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


class SigningUnavailable(Exception):
    """The organisation has no usable document-signing key and certificate."""


# --- configuration


def pki_dir() -> Path:
    configured = getattr(settings, "DOCUMENT_PKI_DIR", None)
    return Path(configured) if configured else Path(settings.VAR_DIR) / "pki"


def trust_root_paths() -> list[Path]:
    configured = getattr(settings, "DOCUMENT_TRUST_ROOTS", None)
    if configured:
        return [Path(p) for p in configured]
    return [pki_dir() / "ca.pem"]


def key_paths(org_code: str) -> tuple[Path, Path]:
    """(key.pem, cert.pem) for an organisation code. The code must be a plain slug."""
    if not org_code or not _SAFE_CODE.match(org_code):
        raise SigningUnavailable(f"organisation code {org_code!r} is not usable as a key folder name")
    folder = pki_dir() / org_code
    return folder / "key.pem", folder / "cert.pem"


def _chain_files(org_code: str) -> tuple[str, ...]:
    own_chain = pki_dir() / org_code / "chain.pem"
    if own_chain.is_file():
        return (str(own_chain),)
    ca = pki_dir() / "ca.pem"
    return (str(ca),) if ca.is_file() else ()


def _passphrase() -> bytes | None:
    value = os.environ.get(PASSPHRASE_ENV)
    return value.encode("utf-8") if value else None


# --- signing


def _load_signer(organisation):
    from pyhanko.sign import signers

    code = getattr(organisation, "code", "")
    key, cert = key_paths(code)
    missing = [p for p in (key, cert) if not p.is_file()]
    if missing:
        raise SigningUnavailable(
            f"no document-signing key/certificate for organisation {code!r}: expected "
            f"{key} and {cert} (missing: {', '.join(str(p) for p in missing)}); "
            f"run `manage.py make_dev_pki {code}` for a development key"
        )
    signer = signers.SimpleSigner.load(
        str(key), str(cert), ca_chain_files=_chain_files(code) or None, key_passphrase=_passphrase()
    )
    if signer is None:  # pyHanko logs the cause (never the passphrase) and returns None
        raise SigningUnavailable(
            f"the document-signing key/certificate for organisation {code!r} at {key.parent} could not be "
            f"loaded (corrupt file, key/certificate mismatch or wrong {PASSPHRASE_ENV})"
        )
    return signer


def sign_pdf(pdf: bytes, organisation, *, reason: str = "", location: str = "Beijing") -> bytes:
    """Return ``pdf`` with an invisible PAdES baseline (B-B) signature by ``organisation``.

    The signature is appended as an incremental update; the original bytes are unchanged.
    Raises ``SigningUnavailable`` when the organisation has no key/certificate.
    """
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.sign import fields, signers

    signer = _load_signer(organisation)
    meta = signers.PdfSignatureMetadata(
        field_name=FIELD_NAME,
        subfilter=fields.SigSeedSubFilter.PADES,
        md_algorithm="sha256",
        reason=reason or None,
        location=location or None,
    )
    writer = IncrementalPdfFileWriter(io.BytesIO(pdf))
    out = signers.PdfSigner(meta, signer=signer).sign_pdf(writer)
    return out.getvalue()


# --- validation


@dataclass
class SignatureCheck:
    signed: bool
    intact: bool
    valid: bool
    trusted: bool
    signer: str
    signed_at: datetime | None
    covers_whole_file: bool
    summary: str

    @property
    def ok(self) -> bool:
        """Everything holds: signed, unaltered, cryptographically valid, trusted, nothing appended."""
        return self.signed and self.intact and self.valid and self.trusted and self.covers_whole_file


def _unsigned(summary: str) -> SignatureCheck:
    return SignatureCheck(signed=False, intact=False, valid=False, trusted=False, signer="", signed_at=None,
                          covers_whole_file=False, summary=summary)


def _load_trust_roots() -> list:
    from pyhanko.keys import load_certs_from_pemder

    roots = []
    for path in trust_root_paths():
        try:
            roots.extend(load_certs_from_pemder([str(path)]))
        except Exception:  # a missing or unreadable root means "not trusted", never a crash
            logger.warning("document trust root %s could not be loaded", path)
    return roots


def _signer_name(cert) -> str:
    if cert is None:
        return ""
    try:
        subject = cert.subject.native
        return subject.get("common_name") or subject.get("organization_name") or cert.subject.human_friendly
    except Exception:
        return ""


def validate_pdf(pdf: bytes) -> SignatureCheck:
    """Check the signature(s) in ``pdf``. Never raises for bad input.

    With several signatures every one must hold (intact, valid, trusted), ``signer`` lists them
    all, and ``covers_whole_file`` is about the last one (nothing may be appended after it).
    """
    try:
        from pyhanko.pdf_utils.reader import PdfFileReader
        from pyhanko.sign.validation import SignatureCoverageLevel, validate_pdf_signature
        from pyhanko_certvalidator import ValidationContext
    except Exception:  # pragma: no cover - installation problem
        logger.exception("pyHanko is not importable")
        return _unsigned("signature checking is unavailable")

    if not isinstance(pdf, (bytes, bytearray)) or not bytes(pdf[:1024]).lstrip().startswith(b"%PDF-"):
        return _unsigned("not a readable PDF")
    try:
        reader = PdfFileReader(io.BytesIO(bytes(pdf)), strict=False)
        embedded = list(reader.embedded_signatures)
    except Exception:
        return _unsigned("not a readable PDF")
    if not embedded:
        return _unsigned("the PDF carries no electronic signature")

    roots = _load_trust_roots()
    results = []
    for sig in embedded:
        try:
            # Always explicit trust roots: never the system trust list (see STACK-NOTES).
            context = ValidationContext(trust_roots=roots)
            status = validate_pdf_signature(sig, context)
        except Exception as exc:
            logger.info("signature %s could not be validated: %s", getattr(sig, "field_name", "?"), exc)
            return SignatureCheck(signed=True, intact=False, valid=False, trusted=False, signer="", signed_at=None,
                                  covers_whole_file=False, summary="the signature could not be checked")
        results.append(status)

    last = results[-1]
    intact = all(s.intact for s in results)
    valid = all(s.valid for s in results)
    trusted = all(s.trusted for s in results)
    covers = last.coverage == SignatureCoverageLevel.ENTIRE_FILE
    signer = "; ".join(n for n in (_signer_name(s.signing_cert) for s in results) if n)
    signed_at = last.signer_reported_dt

    if not intact:
        summary = "the document was altered after signing"
    elif not valid:
        summary = "the signature is not valid"
    elif not trusted:
        summary = "the signature is valid but the signer's certificate is not trusted"
    elif not covers:
        summary = "the signature is valid but content was added after signing"
    else:
        summary = "signed, unaltered and trusted"
    return SignatureCheck(signed=True, intact=intact, valid=valid, trusted=trusted, signer=signer,
                          signed_at=signed_at, covers_whole_file=covers, summary=summary)
