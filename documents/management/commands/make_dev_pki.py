"""Create a development PKI for signing official documents. NOT FOR PRODUCTION.

    manage.py make_dev_pki                  # CA + a key/certificate for every organisation
    manage.py make_dev_pki shunyi cbex      # only these organisation codes
    manage.py make_dev_pki --dir /tmp/pki   # somewhere else than settings.DOCUMENT_PKI_DIR

Idempotent: existing files are kept; only what is missing is created. Layout (see
documents/signing.py): <dir>/ca.pem, <dir>/ca-key.pem, <dir>/<code>/key.pem, <dir>/<code>/cert.pem.
These are document-signing keys of organisations, not cryptocurrency keys.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.core.management.base import BaseCommand, CommandError

from agencies.models import Organisation
from documents import signing

CA_NAME = "Disposal Portal Development CA — NOT FOR PRODUCTION"
CA_YEARS = 10
ORG_YEARS = 3
_PRINTABLE = re.compile(r"^[A-Za-z0-9 '()+,\-./:=?]+$")  # X.520 PrintableString (serialNumber)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write atomically with the final permissions from the start (no window with wider ones)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _limit(value: str, n: int = 64) -> str:
    return value[:n]  # X.520 upper bounds (CN, O, OU: 64 characters)


class Command(BaseCommand):
    help = "Create a development CA and document-signing keys/certificates for organisations (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("codes", nargs="*", help="organisation codes (default: all organisations)")
        parser.add_argument("--dir", dest="dir", default=None,
                            help="PKI folder (default: settings.DOCUMENT_PKI_DIR)")

    def handle(self, *args, codes=(), dir=None, **options):
        base = Path(dir) if dir else signing.pki_dir()
        base.mkdir(parents=True, exist_ok=True)
        os.chmod(base, 0o700)
        now = dt.datetime.now(dt.timezone.utc)
        self.created: list[str] = []

        ca_key, ca_cert = self._ca(base, now)

        orgs = Organisation.objects.order_by("code")
        if codes:
            orgs = orgs.filter(code__in=codes)
            unknown = sorted(set(codes) - set(orgs.values_list("code", flat=True)))
            if unknown:
                raise CommandError(f"unknown organisation code(s): {', '.join(unknown)}")
        for org in orgs:
            self._org(base, org, ca_key, ca_cert, now)

        if self.created:
            for line in self.created:
                self.stdout.write(f"created {line}")
        else:
            self.stdout.write("nothing to create: every file exists")

    # --- CA

    def _ca(self, base: Path, now):
        cert_path, key_path = base / "ca.pem", base / "ca-key.pem"
        if cert_path.exists() and key_path.exists():
            ca_key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            ca_cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            if ca_cert.public_key().public_numbers() != ca_key.public_key().public_numbers():
                raise CommandError(f"{key_path} does not match {cert_path}")
            return ca_key, ca_cert
        if cert_path.exists() != key_path.exists():
            raise CommandError(f"only one of {cert_path} and {key_path} exists; remove it to create a new "
                               "development CA (certificates it issued will then no longer be trusted)")
        ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
        ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=365 * CA_YEARS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        _write(key_path, _key_pem(ca_key), 0o600)
        _write(cert_path, _cert_pem(ca_cert), 0o644)
        self.created.append(f"development CA {cert_path} (key {key_path})")
        return ca_key, ca_cert

    # --- organisations

    def _org(self, base: Path, org, ca_key, ca_cert, now):
        if not signing._SAFE_CODE.match(org.code or ""):
            self.stderr.write(f"skipped {org.code!r}: not usable as a folder name")
            return
        folder = base / org.code
        key_path, cert_path = folder / "key.pem", folder / "cert.pem"
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)

        if key_path.exists() and cert_path.exists():
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            try:
                cert.verify_directly_issued_by(ca_cert)
                issued_by_ca = True
            except (ValueError, TypeError, InvalidSignature):
                issued_by_ca = False
            if not issued_by_ca:
                self.stderr.write(f"warning: {cert_path} was not issued by {base / 'ca.pem'}; "
                                  "signatures with it will not be trusted (delete the folder to reissue)")
            return

        if key_path.exists():
            try:
                key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            except (ValueError, TypeError) as exc:
                raise CommandError(f"{key_path} exists but cannot be read ({exc}); add its certificate by hand "
                                   "or remove it") from exc
        else:
            key = ec.generate_private_key(ec.SECP256R1())
            _write(key_path, _key_pem(key), 0o600)
            self.created.append(f"key {key_path}")

        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, _limit(org.name or org.code)),
                 x509.NameAttribute(NameOID.ORGANIZATION_NAME, _limit(org.name_en or org.name or org.code)),
                 x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, _limit(org.code))]
        if _PRINTABLE.match(org.code):
            attrs.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, _limit(org.code)))
        not_after = min(now + dt.timedelta(days=365 * ORG_YEARS), ca_cert.not_valid_after_utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs)).issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        _write(cert_path, _cert_pem(cert), 0o644)
        self.created.append(f"certificate {cert_path} for {org.code} ({org.name})")
