"""The document registry: every official document issued, every version, with its hash.

Documents are stored artifacts. A corrected or regenerated document is a new version that
supersedes the previous one; nothing is overwritten and every version stays.
"""

import secrets

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _


class DocumentType(models.TextChoices):
    AGREEMENT = "agreement", _("Disposal service agreement")
    ENTRUSTMENT_LETTER = "entrustment_letter", _("Entrustment letter")
    APPOINTMENT = "appointment", _("Agency appointment")
    BOND_CERTIFICATE = "bond_certificate", _("Performance bond certificate")
    DETECTION_REPORT = "detection_report", _("Detection report")
    HANDOVER_RECORD = "handover_record", _("Hand-over record")
    RESERVE_DETERMINATION = "reserve_determination", _("Reserve price determination")
    INQUIRY_RECORD = "inquiry_record", _("Inquiry record and quote comparison")
    SALE_CONFIRMATION = "sale_confirmation", _("Sale confirmation")
    FX_APPLICATION = "fx_application", _("FX settlement application")
    CREDIT_NOTICE = "credit_notice", _("Special-account credit notice")
    TREASURY_REMITTANCE = "treasury_remittance", _("General Payment Form for Non-tax Revenue (as remitted)")
    RETURN_LIST = "return_list", _("Return list")
    FINAL_REPORT = "final_report", _("Final disposal report")


# Number prefix per type: <prefix>-<year>-<sequence>, e.g. JC-2026-000017.
NUMBER_PREFIX = {
    DocumentType.AGREEMENT: "XY",
    DocumentType.ENTRUSTMENT_LETTER: "WT",
    DocumentType.APPOINTMENT: "QR",
    DocumentType.BOND_CERTIFICATE: "BZ",
    DocumentType.DETECTION_REPORT: "JC",
    DocumentType.HANDOVER_RECORD: "JJ",
    DocumentType.RESERVE_DETERMINATION: "BL",
    DocumentType.INQUIRY_RECORD: "XJ",
    DocumentType.SALE_CONFIRMATION: "CJ",
    DocumentType.FX_APPLICATION: "JH",
    DocumentType.CREDIT_NOTICE: "RZ",
    DocumentType.TREASURY_REMITTANCE: "JK",
    DocumentType.RETURN_LIST: "FH",
    DocumentType.FINAL_REPORT: "BG",
}


def new_token() -> str:
    return secrets.token_urlsafe(24)


def document_path(instance, filename):
    return f"documents/{instance.year}/{instance.number}/v{instance.version}-{instance.sha256[:16]}.pdf"


class Document(models.Model):
    type = models.CharField(_("type"), max_length=30, choices=DocumentType.choices)
    # The number stays the same across versions of one document; (number, version) is unique.
    number = models.CharField(_("number"), max_length=30, db_index=True)
    year = models.PositiveSmallIntegerField()
    version = models.PositiveSmallIntegerField(default=1)
    entrustment = models.ForeignKey("cases.Entrustment", on_delete=models.PROTECT, related_name="documents")
    # Which record within the entrustment it certifies, when there can be several (a lot, a return).
    subject = models.CharField(max_length=60, blank=True)
    issuer = models.ForeignKey("agencies.Organisation", on_delete=models.PROTECT, related_name="+")
    supersedes = models.OneToOneField("self", on_delete=models.PROTECT, null=True, blank=True,
                                      related_name="superseded_by")
    file = models.FileField(upload_to=document_path)
    sha256 = models.CharField(max_length=64, db_index=True)  # the verify page looks uploads up by it
    size = models.PositiveIntegerField()
    # The only handle the public verify page accepts: unguessable, so documents cannot be enumerated.
    token = models.CharField(max_length=40, unique=True, default=new_token)
    # What is printed on the document, shown back by the verify page (and nothing more).
    printed_facts = models.JSONField(default=dict)
    signed = models.BooleanField(default=False)
    # The idempotency key of the generation: "event:<id>" for the step that produced it,
    # "regenerate:<uuid>" for an on-demand version. A redelivered task finds it and stops.
    trigger = models.CharField(max_length=60, unique=True)
    reason = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["entrustment", "type", "subject", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["number", "version"], name="unique_document_version"),
            models.UniqueConstraint(fields=["entrustment", "type", "subject", "version"],
                                    name="one_version_per_subject"),
        ]

    def __str__(self):
        return f"{self.number} v{self.version} {self.get_type_display()}"

    @property
    def is_current(self) -> bool:
        return not Document.objects.filter(supersedes=self).exists()
