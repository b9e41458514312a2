"""One access helper per object type: fetch and authorise in one call.

Missing and not-yours give the same 404, so nobody can probe for other bureaus' cases.
"""

from django.http import Http404
from django.shortcuts import get_object_or_404

from .selectors import visible_cases, visible_entrustments


def entrustment_for_user(user, pk):
    return get_object_or_404(
        visible_entrustments(user).select_related("case", "bureau", "bce", "agency", "platform", "policy"), pk=pk
    )


def case_for_user(user, pk):
    return get_object_or_404(visible_cases(user).select_related("bureau"), pk=pk)


def lot_for_user(user, pk):
    from .models import Lot

    lot = Lot.objects.select_related("entrustment", "asset").filter(pk=pk).first()
    if lot is None or not visible_entrustments(user).filter(pk=lot.entrustment_id).exists():
        raise Http404
    return lot


def evidence_for_user(user, pk):
    """Evidence on an entrustment follows that entrustment's visibility; case-level evidence the case's."""
    from .models import EvidenceFile

    evidence = EvidenceFile.objects.select_related("case").filter(pk=pk).first()
    if evidence is None:
        raise Http404
    if evidence.entrustment_id is not None:
        visible = visible_entrustments(user).filter(pk=evidence.entrustment_id).exists()
    else:
        visible = visible_cases(user).filter(pk=evidence.case_id).exists()
    if not visible:
        raise Http404
    return evidence
