"""What an evidence file may be: size and type, checked by name and by content."""

from pathlib import PurePath

from django.conf import settings
from django.core.exceptions import ValidationError
from django.template.defaultfilters import filesizeformat
from django.utils.translation import gettext as _

# Extension → the type its first bytes must announce.
EVIDENCE_TYPES = {"pdf": "PDF", "jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "mp4": "MP4", "mp3": "MP3",
                  "zip": "ZIP"}
ACCEPT = ",".join(f".{ext}" for ext in EVIDENCE_TYPES)


def sniff(head: bytes) -> str | None:
    """The type the first bytes of a file announce, among the ones evidence may be."""
    if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"%PDF-"):
        return "PDF"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[4:8] == b"ftyp":
        return "MP4"
    if head.startswith(b"ID3") or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "MP3"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"):
        return "ZIP"
    return None


def check_evidence_file(upload):
    """The upload, or a ValidationError saying why it cannot be evidence (size, type, content)."""
    limit = settings.EVIDENCE_MAX_BYTES
    if upload.size > limit:
        raise ValidationError(_("“%(name)s” is %(size)s; the limit is %(limit)s.") % {
            "name": upload.name, "size": filesizeformat(upload.size), "limit": filesizeformat(limit)})
    expected = EVIDENCE_TYPES.get(PurePath(upload.name).suffix.lower().lstrip("."))
    if expected is None:
        raise ValidationError(_("“%(name)s” is not accepted: only PDF, JPEG, PNG, MP4, MP3 and ZIP files may be "
                                "uploaded as evidence.") % {"name": upload.name})
    upload.seek(0)
    found = sniff(upload.read(1024))
    upload.seek(0)
    if found != expected:
        raise ValidationError(_("“%(name)s” is named as a %(expected)s file but its content is not %(expected)s "
                                "(%(found)s).") % {"name": upload.name, "expected": expected,
                                                   "found": found or _("unrecognised content")})
    return upload
