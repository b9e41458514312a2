"""Every action a person takes on the entrustment page: what it is called, which service does
it, which form feeds it, what it acts on, and when it is offered.

An action is offered (`Action.available`) when two things hold:

* the record allows it: the django-fsm transition the service runs can proceed from the
  current state (`can_proceed(..., check_conditions=False)`: the guards are the service's to
  explain), or, for actions that record without a transition, the service's own state
  precondition;
* the person holds the membership the service requires (`cases.workflow.member_of` with the
  same organisation and roles as the service's `require`).

The service still decides: `available` only keeps the page from offering what would be
refused. `perform` runs one action under the entrustment's row lock after checking that the
page it came from still shows the record as it is (the state token), so a double submit or a
stale page never does a step twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.db import transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django_fsm import ConcurrentTransition, can_proceed

from agencies.models import Membership, Role
from settlements import services as money

from . import forms as f
from . import services, whitelist
from .models import TERMINAL, Entrustment, EntrustmentState, Event, EventType, Lot, LotState
from .workflow import DisposalError, lock_entrustment, member_of

S, L = EntrustmentState, LotState
OFFICER, APPROVER = Role.OFFICER, Role.APPROVER
ENTRUSTMENT, LOT, VICTIM_RETURN = "entrustment", "lot", "victim_return"
BUREAU, BCE, AGENCY = "bureau", "bce", "agency"


# --------------------------------------------------------------------------- preconditions


def fsm(name):
    """The entrustment's transition `name` can run from its current state."""
    return lambda e, target, user: can_proceed(getattr(e, name), check_conditions=False)


def lot_fsm(name):
    """The lot's transition `name` can run from its current state."""
    return lambda e, lot, user: can_proceed(getattr(lot, name), check_conditions=False)


def state_is(*states):
    """The service's own state precondition, for actions without a transition of their own."""
    return lambda e, target, user: e.state in states


def lot_state_is(*states):
    return lambda e, lot, user: lot.state in states


def _remittance(e):
    try:
        return e.remittance  # cached on the instance after the first look, found or not
    except ObjectDoesNotExist:
        return None


def _rounds_left(e, lot) -> bool:
    return lot.failed_rounds < e.policy.max_failed_rounds


def _submit(e, target, user):
    return can_proceed(e.submit, check_conditions=False) and user.pk != e.prepared_by_id  # four eyes


def _lots_plan(e, target, user):
    return e.state == S.IN_CUSTODY and not list(e.lots.all())  # planned once


def _credited_unremitted(e):
    return e.state == S.CREDITED and _remittance(e) is None


def _victim_return_prepare(e, target, user):
    return _credited_unremitted(e)


def _remittance_prepare(e, target, user):
    return _credited_unremitted(e) and not any(r.approved_at is None for r in e.victim_returns.all())


def _remittance_approve(e, target, user):
    remittance = _remittance(e) if e.state == S.CREDITED else None
    # Once authorised (quorum met, waiting for the bank's booking) there is nothing left to approve.
    return (remittance is not None and remittance.approved_at is None and remittance.remitted_at is None
            and remittance.prepared_by_id != user.pk)


def _remittance_confirm(e, target, user):
    remittance = _remittance(e) if e.state == S.CREDITED else None
    return remittance is not None and remittance.approved_at is not None and remittance.remitted_at is None


def _reserve_propose(e, lot, user):
    return lot.state == L.PLANNED or (lot.state == L.NO_DEAL and _rounds_left(e, lot))


def _reserve_approve(e, lot, user):
    reserve = f.pending_reserve(lot) if lot.state in (L.PLANNED, L.NO_DEAL) else None
    return reserve is not None and reserve.proposed_by_id != user.pk


def _inquiry_open(e, lot, user):
    return can_proceed(lot.open_inquiry, check_conditions=False) and e.state in (S.AT_PLATFORM, S.SELLING)


def _award_approve(e, lot, user):
    if lot.state != L.AWARD_PENDING:
        return False
    inquiry = f.current_round(lot)
    return inquiry is not None and inquiry.award_prepared_by_id != user.pk


def _lot_exhaust(e, lot, user):
    return can_proceed(lot.exhaust, check_conditions=False) and not _rounds_left(e, lot)


def _victim_return_approve(e, victim_return, user):
    return victim_return.approved_at is None and victim_return.prepared_by_id != user.pk


def _bond_release(e, target, user):
    bond = e.current_bond() if e.state == S.CANCELLED else None
    return bond is not None and bond.state == "posted"  # a quorum above one left it posted at the cancellation


def _fx_application_approve(e, target, user):
    return e.state == S.PROCEEDS_RECEIVED and not money.fx_application_approved(e)


def _whitelist_propose(e, target, user):
    return e.agency_id is not None and e.state not in TERMINAL


def _whitelist_approve(e, target, user):
    # The proposer never counts: an entry only they could approve is not offered to them.
    return f.pending_whitelist_entries(e).exclude(proposed_by=user).exists()


def _evidence_add(e, target, user):
    # The service takes evidence in any state; the page stops offering it once the file is archived.
    return e.state != S.CLOSED


# --------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class Action:
    key: str
    label: str
    service: Callable
    form_class: type
    when: Callable
    # Who may act: (party of the entrustment, roles); any one suffices, as in the service.
    parties: tuple[tuple[str, tuple[str, ...]], ...]
    target: str = ENTRUSTMENT
    # Records something without (necessarily) moving the state: a double submit is caught by
    # the record token (the latest person's event) instead of the state token.
    records: bool = False
    # An exception path or an irreversible refusal: the page sets it apart.
    exceptional: bool = False

    def permitted(self, entrustment, user, member=member_of) -> bool:
        return any(member(user, getattr(entrustment, party), roles) for party, roles in self.parties)

    def available(self, entrustment, user, lot=None, victim_return=None, *, member=member_of) -> bool:
        target = {ENTRUSTMENT: entrustment, LOT: lot, VICTIM_RETURN: victim_return}[self.target]
        if target is None or user is None or not user.is_authenticated:
            return False
        return bool(self.when(entrustment, target, user)) and self.permitted(entrustment, user, member)

    def form(self, data=None, files=None, *, entrustment, target=None, **kwargs):
        return self.form_class(data, files, entrustment=entrustment, target=target, **kwargs)


def _a(key, label, service, form_class, when, *parties, **options):
    return Action(key=key, label=label, service=service, form_class=form_class, when=when, parties=parties,
                  **options)


B_OFF, B_APP = (BUREAU, (OFFICER,)), (BUREAU, (APPROVER,))
C_OFF, C_APP, C_ANY = (BCE, (OFFICER,)), (BCE, (APPROVER,)), (BCE, (OFFICER, APPROVER))
A_OFF, A_APP = (AGENCY, (OFFICER,)), (AGENCY, (APPROVER,))

ACTIONS: list[Action] = [
    # bureau and BCE
    _a("submit", gettext_lazy("Sign off and entrust to CBEX"), services.entrustment_submit, f.SubmitForm, _submit, B_APP),
    _a("accept", gettext_lazy("Accept the entrustment"), services.entrustment_accept, f.NoteForm, state_is(S.SUBMITTED),
       C_APP),
    _a("return", gettext_lazy("Return for correction"), services.entrustment_return, f.ReasonForm,
       fsm("return_for_correction"), C_ANY, exceptional=True),
    _a("refuse", gettext_lazy("Refuse the entrustment"), services.entrustment_refuse, f.ReasonForm, fsm("refuse"), C_APP,
       exceptional=True),
    _a("appoint_agency", gettext_lazy("Appoint the service agency"), services.agency_appoint, f.AppointAgencyForm,
       fsm("appoint_agency"), C_OFF),
    _a("post_bond", gettext_lazy("Record the performance bond"), services.bond_post, f.PostBondForm, fsm("confirm_bond"),
       C_OFF),
    # detection and custody
    _a("record_detection", gettext_lazy("Record the on-chain detection"), services.detection_record, f.DetectionForm,
       fsm("record_detection"), A_OFF),
    _a("accept_observed", gettext_lazy("Accept the observed amounts"), services.detection_accept_observed, f.ReasonForm,
       fsm("accept_detected_amounts"), B_APP),
    _a("custody_receive", gettext_lazy("Record the receipt into custody"), services.custody_receive, f.CustodyReceiveForm,
       fsm("receive_into_custody"), A_OFF),
    # lots and reserve
    _a("lots_plan", gettext_lazy("Plan the lots"), services.lots_plan, f.LotsPlanForm, _lots_plan, C_OFF, records=True),
    _a("reserve_propose", gettext_lazy("Propose a reserve price"), services.reserve_propose, f.ReserveProposeForm,
       _reserve_propose, C_OFF, target=LOT, records=True),
    _a("reserve_approve", gettext_lazy("Approve the reserve price"), services.reserve_approve, f.ReserveApproveForm,
       _reserve_approve, C_APP, target=LOT),
    # transfer to the platform
    _a("instruct_transfer", gettext_lazy("Instruct the transfer to the platform"), services.platform_transfer_instruct,
       f.InstructTransferForm, fsm("instruct_transfer"), A_OFF),
    _a("confirm_deposit", gettext_lazy("Confirm the deposit at the platform"), services.platform_deposit_confirm,
       f.ConfirmDepositForm, fsm("clear_at_platform"), A_OFF),
    _a("aml_hold", gettext_lazy("Record an AML hold at the platform"), services.platform_aml_hold, f.ReasonForm,
       fsm("hold_for_aml"), A_OFF, exceptional=True),
    _a("transfer_failed", gettext_lazy("Record that the transfer failed"), services.platform_transfer_fail, f.ReasonForm,
       fsm("fail_transfer"), A_OFF, exceptional=True),
    # inquiry and sale
    _a("inquiry_open", gettext_lazy("Open an inquiry"), services.inquiry_open, f.LotConfirmForm, _inquiry_open, A_OFF,
       target=LOT),
    _a("quote_record", gettext_lazy("Record a quote"), services.quote_record, f.QuoteForm, lot_state_is(L.INQUIRY), A_OFF,
       target=LOT, records=True),
    _a("inquiry_close", gettext_lazy("Close the inquiry"), services.inquiry_close, f.InquiryCloseForm,
       lot_state_is(L.INQUIRY), A_OFF, target=LOT),
    _a("award_approve", gettext_lazy("Approve the award"), services.award_approve, f.AwardApproveForm, _award_approve,
       C_APP, target=LOT),
    _a("execution_record", gettext_lazy("Record the execution (fills)"), services.execution_record, f.ExecutionForm,
       lot_state_is(L.EXECUTING), A_OFF, target=LOT),
    _a("execution_fail", gettext_lazy("Record that the order was not carried out"), services.execution_fail,
       f.LotReasonForm, lot_fsm("fail_execution"), A_OFF, target=LOT, exceptional=True),
    _a("lot_suspend", gettext_lazy("Suspend the lot (market move)"), services.lot_suspend, f.LotReasonForm,
       lot_fsm("suspend"), A_OFF, C_ANY, target=LOT, exceptional=True),
    _a("lot_exhaust", gettext_lazy("Close the lot unsold"), services.lot_exhaust, f.LotReasonForm, _lot_exhaust, C_APP,
       target=LOT, exceptional=True),
    # money
    _a("offshore_receipt", gettext_lazy("Record the offshore receipt"), money.offshore_receipt_record, f.OffshoreReceiptForm,
       fsm("receive_proceeds"), A_OFF, records=True),
    _a("fx_application_approve", gettext_lazy("Approve the FX application"), money.fx_application_approve, f.NoteForm,
       _fx_application_approve, A_APP, records=True),
    _a("fx_approval", gettext_lazy("Record the FX approval and conversion"), money.fx_record_approval, f.FxApprovalForm,
       state_is(S.PROCEEDS_RECEIVED), A_OFF, records=True),
    _a("fx_rejection", gettext_lazy("Record an FX rejection"), money.fx_record_rejection, f.FxRejectionForm, fsm("reject_fx"),
       A_OFF, exceptional=True),
    _a("fx_resubmit", gettext_lazy("Resubmit the FX application"), money.fx_resubmit, f.ReasonForm, fsm("resubmit_fx"),
       A_OFF),
    _a("special_account_credit", gettext_lazy("Record the special-account credit"), money.special_account_credit_record,
       f.CreditForm, fsm("credit_special_account"), B_OFF),
    _a("victim_return_prepare", gettext_lazy("Prepare a return to victims"), money.victim_return_prepare,
       f.VictimReturnPrepareForm, _victim_return_prepare, B_OFF, records=True),
    _a("victim_return_approve", gettext_lazy("Approve the return to victims"), money.victim_return_approve,
       f.VictimReturnApproveForm, _victim_return_approve, B_APP, target=VICTIM_RETURN, records=True),
    _a("remittance_prepare", gettext_lazy("Prepare the treasury remittance"), money.remittance_prepare,
       f.RemittancePrepareForm, _remittance_prepare, B_OFF, records=True),
    _a("remittance_approve", gettext_lazy("Approve the treasury remittance"), money.remittance_approve,
       f.RemittanceApproveForm, _remittance_approve, B_APP),
    _a("remittance_confirm", gettext_lazy("Record the treasury receipt of the bank's payment"),
       money.remittance_confirm, f.RemittanceConfirmForm, _remittance_confirm, B_OFF),
    _a("close", gettext_lazy("Close and archive"), money.entrustment_close, f.CloseForm, fsm("close"), C_APP),
    # exceptions on the entrustment
    _a("cancel", gettext_lazy("Cancel the entrustment"), services.entrustment_cancel, f.ReasonForm, fsm("cancel"), B_APP,
       exceptional=True),
    _a("bond_release", gettext_lazy("Approve the release of the bond"), services.bond_release_approve, f.NoteForm,
       _bond_release, B_APP, records=True),
    _a("declare_default", gettext_lazy("Declare agency default (bond claim)"), services.entrustment_declare_agency_default,
       f.ReasonForm, fsm("declare_agency_default"), C_APP, exceptional=True),
    _a("reopen_after_default", gettext_lazy("Reopen for a new agency"), services.entrustment_reopen_after_default,
       f.ReasonForm, state_is(S.AGENCY_DEFAULT), C_APP),
    _a("open_dispute", gettext_lazy("Open a dispute"), services.entrustment_open_dispute, f.ReasonForm, fsm("open_dispute"),
       B_APP, C_APP, exceptional=True),
    _a("resolve_dispute", gettext_lazy("Resolve the dispute"), services.entrustment_resolve_dispute, f.ReasonForm,
       fsm("resolve_dispute"), C_APP),
    # the agency's address whitelist (the organisation's, proposed and approved from the entrustment that needs it)
    _a("whitelist_propose", gettext_lazy("Propose an address for the whitelist"), whitelist.whitelist_propose,
       f.WhitelistProposeForm, _whitelist_propose, A_OFF, records=True),
    _a("whitelist_approve", gettext_lazy("Approve a whitelist address"), whitelist.whitelist_approve,
       f.WhitelistApproveForm, _whitelist_approve, C_APP, records=True),
    # the record
    _a("evidence_add", gettext_lazy("Add evidence"), services.evidence_add, f.EvidenceForm, _evidence_add,
       (BUREAU, (OFFICER, APPROVER)), (BCE, (OFFICER, APPROVER)), (AGENCY, (OFFICER, APPROVER)), records=True),
]
REGISTRY: dict[str, Action] = {a.key: a for a in ACTIONS}
assert len(REGISTRY) == len(ACTIONS), "action keys must be unique"


def get(key: str, target: str) -> Action | None:
    action = REGISTRY.get(key)
    return action if action is not None and action.target == target else None


def memberships(user) -> Callable:
    """`member_of` for one person, answered from one query (the page asks it for many actions)."""
    held = set(Membership.objects.filter(user=user, is_active=True, organisation__is_active=True)
               .values_list("organisation_id", "role")) if user.is_authenticated else set()

    def member(actor, organisation, roles):
        return organisation is not None and any((organisation.pk, r) in held for r in roles)

    return member


# --------------------------------------------------------------------------- tokens


def state_token(entrustment: Entrustment, lot: Lot | None = None) -> str:
    """What the page showed: the entrustment's state and when it last changed (and the lot's state and round)."""
    token = f"{entrustment.state}:{entrustment.state_changed_at.timestamp()}"
    if lot is not None:
        token += f":{lot.state}:{lot.failed_rounds}"
    return token


def record_token(entrustment: Entrustment) -> str:
    """The latest event a person caused on the entrustment (system events such as documents don't count)."""
    latest = (Event.objects.filter(entrustment=entrustment, actor__isnull=False).order_by("-id")
              .values_list("id", flat=True).first())
    return str(latest or 0)


def _who(event) -> str:
    if event is None or event.actor is None:
        return _("the system")
    name = event.actor.get_full_name() or event.actor.username
    return f"{name} ({event.actor_organisation.name})" if event.actor_organisation else name


def _when(event, fallback) -> str:
    moment = event.created_at if event is not None else fallback
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S")


def stale_message(entrustment: Entrustment, lot: Lot | None = None, *, record: bool = False) -> str:
    events = Event.objects.filter(entrustment=entrustment).select_related("actor", "actor_organisation")
    if record:
        event = events.filter(actor__isnull=False).order_by("-id").first()
        return _("This entrustment’s record changed since you opened the page: %(what)s by %(actor)s at %(time)s. "
                 "Nothing was done; please review.") % {
            "what": event.get_type_display() if event else "—", "actor": _who(event),
            "time": _when(event, entrustment.state_changed_at)}
    if lot is not None:
        event = events.filter(type=EventType.LOT_TRANSITION, details__lot=lot.sequence).order_by("-id").first()
        return _("Lot %(n)s changed since you opened the page: it is now “%(state)s”, changed by %(actor)s at "
                 "%(time)s. Nothing was done; please review.") % {
            "n": lot.sequence, "state": lot.get_state_display(), "actor": _who(event),
            "time": _when(event, entrustment.state_changed_at)}
    event = events.filter(type=EventType.TRANSITION).order_by("-created_at", "-id").first()
    return _("This entrustment changed since you opened the page: it is now “%(state)s”, changed by %(actor)s at "
             "%(time)s. Nothing was done; please review.") % {
        "state": entrustment.get_state_display(), "actor": _who(event),
        "time": _when(event, entrustment.state_changed_at)}


# --------------------------------------------------------------------------- performing


class Refused(Exception):
    """The action was not run: `status` 409 (the page is stale), 403 (not offered) or 400 (incomplete)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.message, self.status = message, status


class Invalid(Exception):
    """The form (or the service, through the form) refused what was typed; the errors are on the form."""


def _target_of(action: Action, entrustment: Entrustment, target):
    """The action's target, re-read inside the lock; a lot also gets the locked entrustment."""
    if action.target == ENTRUSTMENT:
        return entrustment
    if action.target == LOT:
        lot = Lot.objects.select_related("asset").get(pk=target.pk)
        lot.entrustment = entrustment
        return lot
    from settlements.models import VictimReturn

    return VictimReturn.objects.get(pk=target.pk)


def perform(action: Action, *, actor, entrustment: Entrustment, target, form, posted):
    """Run `action` once, as `actor`, if the page it came from is still current. Returns the service's result.

    Everything happens under the entrustment's row lock (the lock every service takes first),
    so a check here cannot be overtaken by a concurrent action before the service runs.
    """
    try:
        with transaction.atomic():
            locked = lock_entrustment(entrustment)
            current = _target_of(action, locked, target)
            lot = current if action.target == LOT else None
            token = posted.get("state_token", "")
            if token and token != state_token(locked, lot):
                base = state_token(locked)
                lot_changed = lot is not None and token.startswith(base + ":")
                raise Refused(stale_message(locked, lot if lot_changed else None), 409)
            seen = posted.get("record_token", "")
            if action.records and seen and seen != record_token(locked):
                raise Refused(stale_message(locked, record=True), 409)
            kwargs = {"lot": lot, "victim_return": current if action.target == VICTIM_RETURN else None}
            if not action.available(locked, actor, **kwargs):
                raise Refused(_("“%(action)s” is not open to you on this record now.") % {"action": action.label}, 403)
            if not token:
                raise Refused(_("This form lacks its page token; reload the page and try again."), 400)
            if not form.is_valid():
                raise Invalid
            try:
                return action.service(actor=actor, **form.service_kwargs())
            except (ValidationError, DisposalError) as exc:
                form.add_service_error(exc)
                raise Invalid
    except ConcurrentTransition:  # cannot happen under the lock; answered like a stale page all the same
        raise Refused(stale_message(Entrustment.objects.get(pk=entrustment.pk)), 409)


# --------------------------------------------------------------------------- what the page offers


@dataclass
class Item:
    """One action offered on the page, with its form and the tokens of the page."""

    action: Action
    form: object
    url: str
    dom_id: str
    state_token: str
    record_token: str
    target: object = None
    open: bool = False
    alert: str = ""

    @property
    def key(self):
        return self.action.key


def url_for(action: Action, target) -> str:
    name = {ENTRUSTMENT: "entrustment-action", LOT: "lot-action", VICTIM_RETURN: "victim-return-action"}
    return reverse(name[action.target], args=[target.pk, action.key])


def dom_id(action: Action, target) -> str:
    suffix = {ENTRUSTMENT: "", LOT: f"-lot{target.pk}", VICTIM_RETURN: f"-return{target.pk}"}[action.target]
    return f"action-{action.key}{suffix}"


def item_for(action: Action, entrustment, target, *, form=None, record: str = "", alert: str = "") -> Item:
    ident = dom_id(action, target)
    if form is None:
        form = action.form(entrustment=entrustment, target=target, auto_id=f"{ident}-%s")
    return Item(action=action, form=form, url=url_for(action, target), dom_id=ident,
                state_token=state_token(entrustment, target if action.target == LOT else None),
                record_token=record, target=target, open=form.is_bound or bool(alert), alert=alert)


def offered(entrustment, user, *, lots=(), victim_returns=(), bound: Item | None = None) -> dict:
    """The actions `user` may take now: {"entrustment": [Item], "lots": {lot pk: [Item]}, "returns": {pk: [Item]}}.

    `bound` replaces the fresh form of the same action and target (a form sent back with errors).
    """
    member = memberships(user)
    record = record_token(entrustment)

    def items(actions, target, **kwargs):
        result = []
        for action in actions:
            if not action.available(entrustment, user, member=member, **kwargs):
                continue
            if bound is not None and bound.action is action and bound.target.pk == target.pk:
                result.append(bound)
            else:
                result.append(item_for(action, entrustment, target, record=record))
        return result

    by_target = {kind: [a for a in ACTIONS if a.target == kind] for kind in (ENTRUSTMENT, LOT, VICTIM_RETURN)}
    return {
        "entrustment": items(by_target[ENTRUSTMENT], entrustment),
        "lots": {lot.pk: items(by_target[LOT], lot, lot=lot) for lot in lots},
        "returns": {r.pk: items(by_target[VICTIM_RETURN], r, victim_return=r) for r in victim_returns},
    }
