"""Which step produces which document. Consulted after every transition; generation runs
in a Celery task after the transaction commits, keyed by the event that produced it."""

from django.db import transaction

from .models import DocumentType as D

ENTRUSTMENT_PRODUCES = {
    "submitted": [D.ENTRUSTMENT_LETTER],
    "accepted": [D.AGREEMENT],
    "agency_appointed": [D.APPOINTMENT],
    "bonded": [D.BOND_CERTIFICATE],
    "detected": [D.DETECTION_REPORT],
    "detection_mismatch": [D.DETECTION_REPORT],  # the mismatch is certified too, with its evidence
    "in_custody": [D.HANDOVER_RECORD],
    "proceeds_received": [D.FX_APPLICATION],
    "credited": [D.CREDIT_NOTICE],
    "remitted": [D.TREASURY_REMITTANCE, D.RETURN_LIST],
    "closed": [D.FINAL_REPORT],
}
LOT_PRODUCES = {
    "reserve_set": [D.RESERVE_DETERMINATION],
    "award_pending": [D.INQUIRY_RECORD],
    "no_deal": [D.INQUIRY_RECORD],
    "executed": [D.SALE_CONFIRMATION],
    "partially_executed": [D.SALE_CONFIRMATION],
}


def documents_for(obj) -> list[tuple[str, str]]:
    """(type, subject) pairs the new state of `obj` (an entrustment or a lot) produces."""
    from cases.models import Lot

    if isinstance(obj, Lot):
        return [(t, f"lot:{obj.pk}") for t in LOT_PRODUCES.get(obj.state, [])]
    types = ENTRUSTMENT_PRODUCES.get(obj.state, [])
    if D.RETURN_LIST in types and not obj.victim_returns.filter(approved_at__isnull=False).exists():
        types = [t for t in types if t != D.RETURN_LIST]  # no returns ordered: no return list
    return [(t, "") for t in types]


def schedule_after_transition(obj, event) -> None:
    from .tasks import generate_document

    entrustment_id = getattr(obj, "entrustment_id", None) or obj.pk
    for doc_type, subject in documents_for(obj):
        trigger = f"event:{event.pk}:{doc_type}"
        transaction.on_commit(
            lambda t=doc_type, s=subject, k=trigger: generate_document.delay(entrustment_id, t, s, k), robust=True
        )
