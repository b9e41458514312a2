"""Who is expected to act next on an entrustment, by state: the work queue's definition.

A party is the entrustment's bureau, BCE or agency; the role is the membership role whose
holder takes the next step. Lot-level work (reserves, awards) is summarised on the
entrustment's `selling` state: both BCE and the agency may have something to do then.
"""

from django.db.models import Q

from agencies.models import Membership, Role

from .models import EntrustmentState as S
from .selectors import visible_entrustments

BUREAU, BCE, AGENCY = "bureau", "bce", "agency"
O, A = Role.OFFICER, Role.APPROVER

WAITING_ON: dict[str, list[tuple[str, str]]] = {
    S.DRAFT: [(BUREAU, A), (BUREAU, O)],
    S.SUBMITTED: [(BCE, A), (BCE, O)],
    S.RETURNED: [(BUREAU, O), (BUREAU, A)],
    S.ACCEPTED: [(BCE, O)],
    S.AGENCY_APPOINTED: [(BCE, O)],
    S.BONDED: [(AGENCY, O)],
    S.DETECTED: [(AGENCY, O)],
    S.DETECTION_MISMATCH: [(BUREAU, A), (AGENCY, O)],
    S.IN_CUSTODY: [(BCE, O), (BCE, A)],
    S.RESERVE_SET: [(AGENCY, O)],
    S.TRANSFERRING: [(AGENCY, O)],
    S.TRANSFER_FAILED: [(AGENCY, O)],
    S.AML_HOLD: [(AGENCY, O)],
    S.AT_PLATFORM: [(AGENCY, O)],
    S.SELLING: [(AGENCY, O), (BCE, O), (BCE, A)],
    S.SOLD: [(AGENCY, O)],
    S.PROCEEDS_RECEIVED: [(AGENCY, O)],
    S.FX_REJECTED: [(AGENCY, O)],
    S.FX_CLEARED: [(BUREAU, O)],
    S.CREDITED: [(BUREAU, O), (BUREAU, A)],
    S.REMITTED: [(BCE, A)],
    S.AGENCY_DEFAULT: [(BCE, A)],
    S.DISPUTED: [(BCE, A)],
}

PARTY_FIELD = {BUREAU: "bureau_id", BCE: "bce_id", AGENCY: "agency_id"}


def waiting_for(user):
    """Entrustments whose next step `user` may take, given their memberships."""
    memberships = list(Membership.objects.filter(user=user, is_active=True, organisation__is_active=True)
                       .values_list("organisation_id", "role"))
    condition = Q(pk__in=[])
    for state, actors in WAITING_ON.items():
        for party, role in actors:
            orgs = [org for org, r in memberships if r == role]
            if orgs:
                condition |= Q(state=state, **{f"{PARTY_FIELD[party]}__in": orgs})
    return visible_entrustments(user).filter(condition)


def waits_on(entrustment, user) -> bool:
    return waiting_for(user).filter(pk=entrustment.pk).exists()
