"""The mechanics every service shares: who may act, locking, transitions, the record.

Services in `cases/services.py` and `settlements/services.py` are built from these pieces
so that each state change is written in exactly one way: lock the entrustment row, check
the actor, run the guarded transition, save once (one history row with user and reason),
write the business event, and schedule side effects for after the commit.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django_fsm import TransitionNotAllowed, can_proceed

from agencies.models import Membership, Organisation, Role

from .models import Entrustment, Event, EventType, Lot


class DisposalError(Exception):
    """A rule of the process refused the action. The message is for the person acting."""

    def __init__(self, message, *, field: str | None = None):
        super().__init__(message)
        self.message = str(message)
        self.field = field

    @classmethod
    def wrong_state(cls, obj, message, **kwargs):
        """A refusal that also names the state the entrustment or lot is in."""
        return cls(_("%(message)s (Current state: “%(state)s”.)") % {"message": message,
                                                                    "state": obj.get_state_display()}, **kwargs)


class NotPermitted(DisposalError):
    """The actor's organisation or role may not take this action."""


def member_of(actor, organisation: Organisation | None, roles: tuple[str, ...]) -> Membership | None:
    if organisation is None or actor is None or not actor.is_authenticated:
        return None
    return (
        Membership.objects.select_related("organisation")
        .filter(user=actor, organisation=organisation, role__in=roles, is_active=True, organisation__is_active=True)
        .first()
    )


def require(actor, organisation: Organisation | None, *roles: str) -> Membership:
    """The actor's membership in `organisation` with one of `roles`, or NotPermitted."""
    membership = member_of(actor, organisation, roles)
    if membership is None:
        role_names = ", ".join(str(Role(r).label) for r in roles)
        org_name = organisation.name if organisation else _("the responsible organisation")
        raise NotPermitted(_("Only %(roles)s of %(org)s may take this action.") % {"roles": role_names, "org": org_name})
    return membership


def reason_required(reason: str) -> str:
    if not reason or not reason.strip():
        raise ValidationError({"reason": _("A reason is required for this action.")})
    if "\x00" in reason:  # PostgreSQL refuses NUL in text: a refusal, not a server error
        raise ValidationError({"reason": _("Null characters are not allowed.")})
    return reason.strip()


def transition_with_reason(entrustment: Entrustment, transition: str, *, actor, party: str, roles: tuple,
                           reason: str) -> Entrustment:
    """The whole of a step that only moves the state, for a stated reason, by one party's role.

    Call it inside the service's transaction; `party` names the entrustment's organisation
    field ("bureau", "bce" or "agency").
    """
    reason = reason_required(reason)
    entrustment = lock_entrustment(entrustment)
    membership = require(actor, getattr(entrustment, party), *roles)
    run_transition(entrustment, transition, actor=actor, membership=membership, reason=reason)
    return entrustment


def lock_entrustment(entrustment: Entrustment) -> Entrustment:
    """Re-read the entrustment under a row lock; every writer on it takes this lock first.

    One lock order (entrustment, then its lots) keeps concurrent services from deadlocking,
    and the second of two concurrent transitions sees the first one's state and fails its guard.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("lock_entrustment() must run inside transaction.atomic()")
    # NO KEY UPDATE: rows that merely reference the entrustment (events, approvals, ledger entries) take a KEY
    # SHARE lock on it when inserted, which a plain FOR UPDATE would block — and deadlock with.
    return Entrustment.objects.select_for_update(of=("self",), no_key=True).select_related(
        "policy", "bureau", "bce", "agency").get(
        pk=entrustment.pk
    )


# Row locks in the services are always taken `of=("self",)`: a model whose default ordering joins another
# table (Holding orders by asset symbol) would otherwise also lock the shared rows of that table (the assets)
# FOR UPDATE, and every entrustment would queue on them — deadlocking with the record chain's head lock.


def lock_lot(lot: Lot) -> tuple[Entrustment, Lot]:
    entrustment = lock_entrustment(lot.entrustment)
    return entrustment, Lot.objects.select_for_update(of=("self",)).select_related("asset").get(pk=lot.pk)


def emit(*, case, entrustment=None, actor=None, membership=None, type: str, reason: str = "",
         from_state: str = "", to_state: str = "", details: dict | None = None) -> Event:
    """Write the business event in the caller's transaction, and notify after commit."""
    event = Event.objects.create(
        case=case,
        entrustment=entrustment,
        actor=actor,
        actor_organisation=membership.organisation if membership else None,
        type=type,
        reason=reason,
        from_state=from_state,
        to_state=to_state,
        details=details or {},
    )
    from .tasks import notify_event

    # robust: the event is committed whatever happens; a broker outage must not turn a
    # completed action into an error page. Notifications are best effort on top of the record.
    transaction.on_commit(lambda: notify_event.delay(event.pk), robust=True)
    return event


def save_tracked(obj, *, actor, reason: str = "") -> None:
    """Save with the acting user and reason on the history row simple-history writes."""
    obj._history_user = actor
    # The history row's reason column holds 100 characters; the full reason is on the business event.
    obj._change_reason = (reason or "")[:100]
    obj.save()


def run_transition(obj, name: str, *, actor, membership, reason: str = "", details: dict | None = None):
    """Run one guarded transition on an entrustment or a lot, save once, record it."""
    method = getattr(obj, name)
    before = obj.state
    if not can_proceed(method):
        raise DisposalError(_transition_refusal(obj, name))
    try:
        method()
    except TransitionNotAllowed as exc:  # a guard that flipped between check and call
        raise DisposalError(_transition_refusal(obj, name)) from exc
    entrustment = obj if isinstance(obj, Entrustment) else obj.entrustment
    if isinstance(obj, Entrustment):
        obj.state_changed_at = timezone.now()
        _run_clock(obj)
    save_tracked(obj, actor=actor, reason=reason)
    event = emit(
        case=entrustment.case,
        entrustment=entrustment,
        actor=actor,
        membership=membership,
        type=EventType.TRANSITION if isinstance(obj, Entrustment) else EventType.LOT_TRANSITION,
        reason=reason,
        from_state=before,
        to_state=obj.state,
        details={"transition": name, **({"lot": obj.sequence} if isinstance(obj, Lot) else {}), **(details or {})},
    )
    # Steps that produce official documents have them issued after the commit.
    from documents.producing import schedule_after_transition

    schedule_after_transition(obj, event)
    return event


def _run_clock(entrustment: Entrustment) -> None:
    from .models import SLA_RUNNING, EntrustmentState

    now = timezone.now()
    if entrustment.state == EntrustmentState.DETECTED and entrustment.sla_started_at is None:
        entrustment.sla_started_at = now
    if entrustment.state == EntrustmentState.CREDITED and entrustment.sla_stopped_at is None:
        entrustment.sla_stopped_at = now
    if entrustment.state not in SLA_RUNNING and entrustment.sla_started_at and not entrustment.sla_stopped_at:
        # Cancelled, disputed or defaulted: the clock stops where it stood.
        if entrustment.state not in (EntrustmentState.DISPUTED,):
            entrustment.sla_stopped_at = now


def _transition_refusal(obj, name: str) -> str:
    """Say why a transition cannot run: the wrong state, or which guard failed."""
    candidates = [t for t in obj._meta.get_field("state").get_all_transitions(type(obj)) if t.name == name]
    matching = [t for t in candidates if t.source in (obj.state, "*", "+")]
    if not matching:
        return _("This action is not possible while the record is in state “%(state)s”.") % {
            "state": obj.get_state_display()
        }
    for candidate in matching:
        for condition in candidate.conditions:
            if not condition(obj):
                return str(GUARD_MESSAGES.get(condition.__name__, condition.__name__))
    return _("This action is not possible now.")


GUARD_MESSAGES = {
    "bond_covers": gettext_lazy("No coin may move before the performance bond covers the required ratio."),
    "all_lots_reserved": gettext_lazy("Every lot needs an approved reserve price first."),
    "sale_complete": gettext_lazy("Not every lot is executed or closed yet."),
    "nothing_sold": gettext_lazy("Some lots are still open or sold; the entrustment cannot end unsold."),
    "reconciled": gettext_lazy("The amounts do not reconcile; see the reconciliation table."),
    "has_reserve": gettext_lazy("This lot needs an approved reserve price for the coming round."),
    "award_at_or_above_reserve": gettext_lazy("No quote at or above the reserve price: no award is possible."),
    "nothing_filled": gettext_lazy("Fills are recorded for this lot: record the execution, not a failure."),
}
