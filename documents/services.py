"""Issue official documents: number, render, sign, hash, store, supersede. Never overwrite."""

from __future__ import annotations

import hashlib
import logging
import uuid

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _

from cases.models import Entrustment, EventType, Sequence
from cases.workflow import DisposalError, emit, require

from .models import NUMBER_PREFIX, Document, DocumentType, new_token

log = logging.getLogger(__name__)


def next_number(doc_type: str, year: int) -> str:
    """The next number in the type's yearly sequence. Must run inside the issuing transaction."""
    return Sequence.next_number(f"document:{doc_type}", NUMBER_PREFIX[doc_type], year)


def current_version(entrustment, doc_type: str, subject: str) -> Document | None:
    return (
        Document.objects.filter(entrustment=entrustment, type=doc_type, subject=subject, superseded_by__isnull=True)
        .order_by("-version")
        .first()
    )


def document_issue(*, entrustment_id: int, doc_type: str, subject: str = "", trigger: str, actor=None,
                   reason: str = "") -> Document | None:
    """Issue the next version of one document. Returns None (and records why) when it cannot be.

    Idempotent on `trigger`: the same trigger never issues twice, whatever retries happen.
    """
    from .facts import MissingFacts, build_context, issuer_for
    from .rendering import render_pdf
    from .signing import SigningUnavailable, sign_pdf

    existing = Document.objects.filter(trigger=trigger).first()
    if existing:
        return existing
    try:
        with transaction.atomic():
            entrustment = Entrustment.objects.select_for_update(of=("self",)).select_related("case").get(
                pk=entrustment_id)
            previous = current_version(entrustment, doc_type, subject)
            context = build_context(doc_type, entrustment, subject)
            issuer = issuer_for(doc_type, entrustment)
            issued_at = timezone.now()
            year = timezone.localtime(issued_at).year
            number = previous.number if previous else next_number(doc_type, year)
            version = previous.version + 1 if previous else 1
            token = new_token()
            verify_url = settings.PUBLIC_BASE_URL.rstrip("/") + reverse("documents:verify", args=[token])
            pdf = render_pdf(doc_type, context, number=number, version=version, verify_url=verify_url,
                             issued_at=issued_at)
            pdf = sign_pdf(pdf, issuer, reason=f"{number} v{version}")
            sha256 = hashlib.sha256(pdf).hexdigest()
            document = Document(type=doc_type, number=number, year=previous.year if previous else year,
                                version=version, entrustment=entrustment, subject=subject, issuer=issuer,
                                supersedes=previous, sha256=sha256, size=len(pdf), token=token,
                                printed_facts=context["facts"], signed=True, reason=reason, created_by=actor,
                                trigger=trigger)
            document.file.save(f"{number}.pdf", ContentFile(pdf), save=False)
            document.save()
            emit(case=entrustment.case, entrustment=entrustment, actor=actor, type=EventType.DOCUMENT_ISSUED,
                 reason=reason, details={"type": doc_type, "number": number, "version": version,
                                         "subject": subject, "sha256": sha256,
                                         "supersedes": previous.pk if previous else None})
            return document
    except IntegrityError:
        # A concurrent delivery of the same trigger won; its document is the answer.
        return Document.objects.filter(trigger=trigger).first()
    except (MissingFacts, SigningUnavailable) as exc:
        # Missing facts are the readers' business; where the server keeps its keys is not:
        # the record says which organisation cannot sign, the log says where the key was sought.
        if isinstance(exc, SigningUnavailable):
            issuer = issuer_for(doc_type, Entrustment.objects.get(pk=entrustment_id))
            said = _("No signing certificate is configured for %(org)s.") % {"org": issuer.name}
        else:
            said = str(exc)
        with transaction.atomic():
            entrustment = Entrustment.objects.select_related("case").get(pk=entrustment_id)
            emit(case=entrustment.case, entrustment=entrustment, actor=actor, type=EventType.DOCUMENT_REFUSED,
                 reason=said, details={"type": doc_type, "subject": subject, "trigger": trigger})
        log.warning("document %s for entrustment %s not issued: %s", doc_type, entrustment_id, exc)
        if actor is not None:
            raise DisposalError(said) from exc
        return None


def document_regenerate(*, actor, document: Document, reason: str) -> Document:
    """Authorised staff of the issuing organisation issue a new version (a correction)."""
    if not (reason or "").strip():
        raise DisposalError(_("A reason is required to issue a new version."))
    require(actor, document.issuer, "officer", "approver")
    if not document.is_current:
        raise DisposalError(_("Only the current version can be superseded."))
    return document_issue(entrustment_id=document.entrustment_id, doc_type=document.type, subject=document.subject,
                          trigger=f"regenerate:{uuid.uuid4()}", actor=actor, reason=reason.strip())


__all__ = ["DocumentType", "document_issue", "document_regenerate", "next_number"]
