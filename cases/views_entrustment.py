"""The entrustment page: the whole record of one entrustment, and every action its reader may take now.

Views fetch through `cases.access` (one 404 for missing and not-yours), ask `cases.actions`
what is offered, and run an action with `actions.perform`, which calls the one service
function for it. Nothing here writes state.
"""

from __future__ import annotations

from datetime import timedelta

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Prefetch, Q, prefetch_related_objects
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from agencies.models import Appointment, Organisation

from . import actions
from .access import entrustment_for_user, lot_for_user
from .models import (
    CoinTransfer,
    Detection,
    EntrustmentState,
    Event,
    EventType,
    EvidenceFile,
    Holding,
    InquiryRound,
    Lot,
    LotState,
    Quote,
    ReservePrice,
)
from .selectors import reconciliation

TEMPLATE = "cases/entrustment_detail.html"
S = EntrustmentState


# --------------------------------------------------------------------------- views


@login_required
def entrustment_detail(request, pk):
    entrustment = entrustment_for_user(request.user, pk)
    return render(request, TEMPLATE, page_context(request, entrustment))


@login_required
@require_POST
def entrustment_action(request, pk, key):
    entrustment = entrustment_for_user(request.user, pk)
    return _act(request, _action(key, actions.ENTRUSTMENT), entrustment, entrustment)


@login_required
@require_POST
def lot_action(request, pk, key):
    lot = lot_for_user(request.user, pk)
    entrustment = entrustment_for_user(request.user, lot.entrustment_id)
    return _act(request, _action(key, actions.LOT), entrustment, lot)


@login_required
@require_POST
def victim_return_action(request, pk, key):
    from settlements.models import VictimReturn

    victim_return = VictimReturn.objects.filter(pk=pk).first()
    if victim_return is None:
        raise Http404
    entrustment = entrustment_for_user(request.user, victim_return.entrustment_id)
    return _act(request, _action(key, actions.VICTIM_RETURN), entrustment, victim_return)


def _action(key, target):
    action = actions.get(key, target)
    if action is None:
        raise Http404
    return action


def _act(request, action, entrustment, target):
    form = action.form(request.POST, request.FILES, entrustment=entrustment, target=target,
                       auto_id=f"{actions.dom_id(action, target)}-%s")
    try:
        result = actions.perform(action, actor=request.user, entrustment=entrustment, target=target, form=form,
                                 posted=request.POST)
    except actions.Refused as refusal:
        return _refused(request, entrustment, action, target, refusal)
    except actions.Invalid:
        item = actions.item_for(action, entrustment, target, form=form, record=actions.record_token(entrustment))
        if _htmx(request):
            return render(request, "cases/partials/action.html", {"item": item}, status=400)
        return render(request, TEMPLATE, page_context(request, entrustment, bound=item), status=400)
    messages.success(request, _done(action, result))
    url = reverse("entrustment-detail", args=[entrustment.pk])
    if _htmx(request):
        return HttpResponse(headers={"HX-Redirect": url})
    return redirect(url)


def _refused(request, entrustment, action, target, refusal):
    if _htmx(request):
        context = {"dom_id": actions.dom_id(action, target), "action": action, "message": refusal.message,
                   "page_url": reverse("entrustment-detail", args=[entrustment.pk])}
        return render(request, "cases/partials/refused.html", context, status=refusal.status)
    entrustment.refresh_from_db()
    return render(request, TEMPLATE, page_context(request, entrustment, alert=refusal.message),
                  status=refusal.status)


def _htmx(request) -> bool:
    return request.headers.get("HX-Request") == "true"


def _done(action, result) -> str:
    if isinstance(result, EvidenceFile):
        return _("Evidence “%(name)s” added. SHA-256: %(sha)s") % {"name": result.original_name,
                                                                   "sha": result.sha256}
    return _("Done: %(action)s.") % {"action": action.label}


# --------------------------------------------------------------------------- the page


def _page_prefetches():
    return [
        Prefetch("holdings", queryset=Holding.objects.select_related("asset").prefetch_related(
            Prefetch("detections", queryset=Detection.objects.order_by("-recorded_at", "-id")))),
        Prefetch("lots", queryset=Lot.objects.select_related("asset").prefetch_related(
            Prefetch("reserves", queryset=ReservePrice.objects.select_related("proposed_by").order_by("round_no")),
            Prefetch("rounds", queryset=InquiryRound.objects.select_related("reserve").prefetch_related(
                Prefetch("quotes", queryset=Quote.objects.select_related("platform")))),
            "fills")),
        Prefetch("transfers", queryset=CoinTransfer.objects.select_related("asset").order_by("recorded_at", "id")),
        Prefetch("victim_returns", queryset=_victim_returns()),
        "offshore_receipts__bank",
        "fx_conversions",
    ]


def _victim_returns():
    from settlements.models import VictimReturn

    return VictimReturn.objects.select_related("prepared_by").order_by("prepared_at", "id")


MESSAGES_SHOWN = 100  # the rest stay in the record (and the admin)


def page_context(request, entrustment, *, bound=None, alert: str = "") -> dict:
    e = entrustment
    prefetch_related_objects([e], *_page_prefetches())
    holdings, lots, victim_returns = list(e.holdings.all()), list(e.lots.all()), list(e.victim_returns.all())
    offered = actions.offered(e, request.user, lots=lots, victim_returns=victim_returns, bound=bound)
    for lot in lots:
        lot.quantity_display = lot.asset.format_amount(lot.quantity)
        approved = [r for r in lot.reserves.all() if r.approved_at]
        lot.reserve = approved[-1] if approved else None
        lot.pending = next((r for r in lot.reserves.all() if not r.approved_at), None)
        lot.items = offered["lots"][lot.pk]
    for h in holdings:
        h.latest_detection = next(iter(h.detections.all()), None)
        h.declared_display = h.asset.format_amount(h.declared_amount)
        h.accepted_display = h.asset.format_amount(h.accepted_amount)
        if h.latest_detection:
            h.observed_display = h.asset.format_amount(h.latest_detection.observed_amount)
    transfers = list(e.transfers.all())
    for t in transfers:
        t.amount_display, t.fee_display = t.asset.format_amount(t.amount), t.asset.format_amount(t.network_fee)
    quotes = [(lot, rnd, q) for lot in lots for rnd in sorted(lot.rounds.all(), key=lambda r: r.number)
              for q in sorted(rnd.quotes.all(), key=lambda q: q.quoted_at)]
    for lot, _rnd, q in quotes:
        q.quantity_display = lot.asset.format_amount(q.quantity)
    recon = reconciliation(e)
    for r in victim_returns:
        r.items = offered["returns"][r.pk]
    events = list(Event.objects.filter(Q(entrustment=e) | Q(case_id=e.case_id, entrustment__isnull=True))
                  .select_related("actor", "actor_organisation").order_by("created_at", "id"))
    history = list(e.history.select_related("history_user").order_by("history_date", "history_id"))
    # Adding evidence is not a step of the process: its form sits with the evidence list.
    evidence_items = [i for i in offered["entrustment"] if i.key == "evidence_add"]
    entrustment_items = [i for i in offered["entrustment"] if i.key != "evidence_add"]
    from counterparties.models import CounterpartyMessage, OperationalException

    exceptions = list(OperationalException.objects.filter(entrustment=e).select_related("resolved_by"))
    messages = CounterpartyMessage.objects.filter(entrustment=e)
    return {
        "exceptions": exceptions,
        "open_exceptions": [x for x in exceptions if x.is_open],
        "message_count": messages.count(),
        "counterparty_messages": list(messages.order_by("-started_at", "-id")[:MESSAGES_SHOWN]),
        "e": e,
        "alert": alert,
        "steps": lifecycle_steps(e, events),
        "sla": sla_clock(e),
        "actions": [i for i in entrustment_items if not i.action.exceptional],
        "exception_actions": [i for i in entrustment_items if i.action.exceptional],
        "evidence_actions": evidence_items,
        "lots_with_actions": [lot for lot in lots if lot.items],
        "returns_with_actions": [r for r in victim_returns if r.items],
        "has_actions": bool(entrustment_items or any(lot.items for lot in lots)
                            or any(r.items for r in victim_returns)),
        "appointment": Appointment.objects.filter(entrustment=e, is_current=True).select_related(
            "agency", "bond").first(),
        "holdings": holdings,
        "lots": lots,
        "settlement": _settlement(e, victim_returns),
        "recon": recon,
        "recon_coins": [{"symbol": line.asset.symbol, "values": [line.asset.format_amount(v) for v in (
            line.declared, line.accepted, line.to_custody, line.to_platform, line.network_fees, line.sold,
            line.still_held)]} for line in recon.coins],
        "transfers": transfers,
        "quotes": quotes,
        "evidence": EvidenceFile.objects.filter(Q(entrustment=e) | Q(case_id=e.case_id, entrustment__isnull=True))
        .select_related("uploaded_by").order_by("uploaded_at", "id"),
        "documents": e.documents.select_related("issuer", "superseded_by").order_by("type", "subject", "-version"),
        "timeline": timeline(e, events, history),
    }


def _settlement(e, victim_returns) -> dict:
    from settlements.models import SpecialAccountCredit, TreasuryRemittance

    return {
        "receipts": list(e.offshore_receipts.all()),
        "fx": list(e.fx_conversions.all()),
        "credit": SpecialAccountCredit.objects.filter(entrustment=e).first(),
        "remittance": TreasuryRemittance.objects.filter(entrustment=e).first(),
        "returns": victim_returns,
    }


# --------------------------------------------------------------------------- where it stands

MAIN_PATH = [S.DRAFT, S.SUBMITTED, S.ACCEPTED, S.AGENCY_APPOINTED, S.BONDED, S.DETECTED, S.IN_CUSTODY,
             S.RESERVE_SET, S.TRANSFERRING, S.AT_PLATFORM, S.SELLING, S.SOLD, S.PROCEEDS_RECEIVED, S.FX_CLEARED,
             S.CREDITED, S.REMITTED, S.CLOSED]
# The step of the main path an exception state belongs to.
EXCEPTION_AT = {S.RETURNED: S.SUBMITTED, S.REFUSED: S.SUBMITTED, S.DETECTION_MISMATCH: S.DETECTED,
                S.TRANSFER_FAILED: S.TRANSFERRING, S.AML_HOLD: S.TRANSFERRING, S.FX_REJECTED: S.FX_CLEARED,
                S.TERMINATED: S.SELLING}


def lifecycle_steps(e, events) -> dict:
    """The main path draft → … → closed, with the current step, and the exception state as a badge."""
    exception = e.state not in MAIN_PATH
    position = e.state
    if e.state == S.DISPUTED:
        position = e.state_before_dispute
    if position not in MAIN_PATH:
        position = EXCEPTION_AT.get(position)
    if position is None:  # cancelled or defaulted: where it stood when it left the path
        left_from = next((ev.from_state for ev in reversed(events) if ev.type == EventType.TRANSITION
                          and ev.to_state == e.state), "")
        position = EXCEPTION_AT.get(left_from, left_from)
    index = MAIN_PATH.index(position) if position in MAIN_PATH else -1
    steps = [{"label": S(s).label, "done": i < index, "current": i == index} for i, s in enumerate(MAIN_PATH)]
    return {"steps": steps, "exception": S(e.state).label if exception else ""}


def _duration(delta: timedelta) -> str:
    minutes = int(abs(delta).total_seconds() // 60)
    hours, minutes = divmod(minutes, 60)
    return _("%(h)s h %(m)02d min") % {"h": hours, "m": minutes}


def sla_clock(e, now=None) -> dict:
    """The 24-hour clock of the Beijing model: detection to special-account credit."""
    policy = e.policy
    if not e.sla_started_at:
        return {"status": "not_started", "hours": policy.sla_hours}
    now = now or timezone.now()
    deadline = e.sla_deadline
    clock = {"started": e.sla_started_at, "deadline": deadline, "hours": policy.sla_hours,
             "warn_hours": policy.sla_warn_hours}
    if e.sla_stopped_at:
        return {**clock, "status": "stopped", "stopped": e.sla_stopped_at,
                "took": _duration(e.sla_stopped_at - e.sla_started_at), "within": e.sla_stopped_at <= deadline,
                "overrun": _duration(e.sla_stopped_at - deadline)}
    remaining = deadline - now
    if remaining <= timedelta(0):
        return {**clock, "status": "breached", "overdue": _duration(remaining)}
    status = "warning" if remaining < timedelta(hours=policy.sla_warn_hours) else "running"
    return {**clock, "status": status, "remaining": _duration(remaining)}


# --------------------------------------------------------------------------- the record

HISTORY_FIELDS = ["state", "agency_id", "platform_id", "channel", "state_before_dispute", "sla_started_at",
                  "sla_stopped_at"]


def _state_label(value, event_type) -> str:
    if not value:
        return ""
    choices = LotState if event_type == EventType.LOT_TRANSITION else EntrustmentState
    try:
        return str(choices(value).label)
    except ValueError:
        return value


def _person(user) -> str:
    return (user.get_full_name() or user.username) if user else _("the system")


def timeline(e, events, history) -> list[dict]:
    """Business events and field history of the entrustment, merged in time order."""
    entries = [{
        "when": ev.created_at, "kind": "event", "type": ev.get_type_display(), "who": _person(ev.actor),
        "organisation": ev.actor_organisation.name if ev.actor_organisation else "", "reason": ev.reason,
        "from": _state_label(ev.from_state, ev.type), "to": _state_label(ev.to_state, ev.type),
        "lot": ev.details.get("lot") if ev.type == EventType.LOT_TRANSITION else None,
    } for ev in events]
    org_ids = {getattr(h, name) for h in history for name in ("agency_id", "platform_id")} - {None}
    orgs = Organisation.objects.in_bulk(org_ids) if org_ids else {}
    previous = None
    for h in history:
        changes = []
        for name in HISTORY_FIELDS:
            old, new = (getattr(previous, name) if previous else None), getattr(h, name)
            if previous is not None and old != new:
                changes.append((_history_label(name), _history_value(name, old, orgs),
                                _history_value(name, new, orgs)))
        created = h.history_type == "+"
        if created or changes:
            entries.append({"when": h.history_date, "kind": "history",
                            "type": _("Record created") if created else _("Fields changed"),
                            "who": _person(h.history_user), "organisation": "", "from": "", "to": "", "lot": None,
                            "reason": h.history_change_reason or "", "changes": changes})
        previous = h
    entries.sort(key=lambda entry: entry["when"])
    return entries


def _history_label(name) -> str:
    from .models import Entrustment

    return str(Entrustment._meta.get_field(name.removesuffix("_id")).verbose_name)


def _history_value(name, value, orgs) -> str:
    if value in (None, ""):
        return "—"
    if name in ("state", "state_before_dispute"):
        return _state_label(value, EventType.TRANSITION)
    if name.endswith("_id"):
        org = orgs.get(value)
        return org.name if org else f"#{value}"
    if hasattr(value, "tzinfo"):
        return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S")
    return str(value)
