"""The entrustment state machine, its guards, four eyes, permissions and the record of each step.

Every test drives the real services as the persona whose job it is; no state is set by hand.
The transition table is read from the FSM itself, so a transition added to the model without a
service that reaches it, or a source state added by mistake, fails here.
"""

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone, translation
from django_fsm import can_proceed

from agencies.models import BondState, Role
from cases import services
from cases.models import (
    BEFORE_CUSTODY,
    TERMINAL,
    Approval,
    Entrustment,
    EntrustmentState,
    Event,
    EventType,
    Fill,
    Lot,
    LotState,
)
from cases.selectors import reconciliation
from cases.workflow import DisposalError, NotPermitted
from settlements import services as money
from settlements.models import VictimReturn

from .factories import SEIZED_AT, VALUATION, member
from .flow import STEPS, Flow

S = EntrustmentState
ALL_TRANSITIONS = list(Entrustment._meta.get_field("state").get_all_transitions(Entrustment))
SOURCES: dict[str, set[str]] = {}
for _t in ALL_TRANSITIONS:
    SOURCES.setdefault(_t.name, set()).add(_t.source)
TRANSITION_NAMES = sorted(SOURCES)


@pytest.fixture(autouse=True)
def english():
    """Messages are asserted in English whatever LANGUAGE_CODE says."""
    with translation.override("en"):
        yield


def label(state: str) -> str:
    return str(EntrustmentState(state).label)


def btc_only(world) -> Flow:
    return Flow(world, holdings=(("BTC", "2.5"),), case_number="顺公立字〔2025〕200号")


def transitions_of(entrustment, name=None):
    events = Event.objects.filter(entrustment=entrustment, type=EventType.TRANSITION)
    return events.filter(details__transition=name) if name else events


def fail_round(flow, lot) -> Lot:
    """Open (if needed) and close one inquiry round with every quote below the reserve."""
    w = flow.w
    lot.refresh_from_db()
    if lot.state != LotState.INQUIRY:
        services.inquiry_open(actor=w.agency_officer, lot=lot)
    lot.refresh_from_db()
    reserve, n = lot.current_reserve().price, lot.rounds.count()
    flow.quote(lot, w.osl, reserve - 100, f"osl-low-{lot.pk}-{n}")
    flow.quote(lot, w.hashkey, reserve - 200, f"hk-low-{lot.pk}-{n}")
    services.inquiry_close(actor=w.agency_officer, lot=lot)
    lot.refresh_from_db()
    return lot


def cut_reserve(flow, lot, cut=Decimal("0.20")) -> Lot:
    previous = lot.current_reserve().price
    price = (previous * (1 - cut)).quantize(Decimal("0.00000001"))
    services.reserve_propose(actor=flow.w.bce_officer, lot=lot, price=price,
                             inputs={"previous": str(previous), "cut": str(cut)})
    services.reserve_approve(actor=flow.w.bce_approver, lot=lot)
    lot.refresh_from_db()
    return lot


def mismatch(flow, **overrides):
    overrides = overrides or {"BTC": flow.entrustment.holdings.get(asset__symbol="BTC").declared_amount - 5_000}
    services.detection_record(actor=flow.w.agency_officer, entrustment=flow.entrustment,
                              observations=flow.observations(**overrides), witness=flow.w.witness)
    return flow.refresh()


# =========================================================================== the table


@pytest.mark.parametrize("name", TRANSITION_NAMES)
def test_the_table_allows_each_transition_from_its_sources_and_from_no_other_state(name):
    sources = SOURCES[name]
    outside = [s for s in S.values if s not in sources]
    assert sources and len(outside) >= 5, (name, sources)
    for state in S.values:
        entrustment = Entrustment(state=state)  # in memory only: nothing is saved
        method = getattr(entrustment, name)
        if state in sources:
            assert can_proceed(method, check_conditions=False), (name, state)
        else:
            assert not can_proceed(method), (name, state)


def test_no_transition_leaves_a_terminal_state():
    assert {t.source for t in ALL_TRANSITIONS}.isdisjoint(TERMINAL)
    for state in TERMINAL:
        assert list(Entrustment(state=state).get_available_state_transitions()) == []


def test_cancellation_is_possible_exactly_while_no_coin_has_moved():
    assert SOURCES["cancel"] == set(BEFORE_CUSTODY)
    assert S.IN_CUSTODY not in SOURCES["cancel"]


def test_every_state_is_reachable_and_every_non_terminal_state_has_a_way_out():
    targets = {t.target for t in ALL_TRANSITIONS if isinstance(t.target, str)}
    # resolve_dispute returns to the state before the dispute (RETURN_VALUE), so its targets are dynamic.
    assert set(S.values) - targets - {S.DRAFT} == set()
    sources = {t.source for t in ALL_TRANSITIONS}
    assert set(S.values) - sources == set(TERMINAL)


# =========================================================================== every transition through its service


def _return(flow):
    flow.to("submitted")
    services.entrustment_return(actor=flow.w.bce_officer, entrustment=flow.entrustment,
                                reason="The seizure list is missing.")


def _refuse(flow):
    flow.to("submitted")
    services.entrustment_refuse(actor=flow.w.bce_approver, entrustment=flow.entrustment,
                                reason="Outside BCE's remit.")


def _record_mismatch(flow):
    flow.to("bonded")
    mismatch(flow)


def _accept_detected(flow):
    _record_mismatch(flow)
    services.detection_accept_observed(actor=flow.w.shunyi_approver, entrustment=flow.entrustment,
                                       reason="Network fees paid by the suspect before seizure.")


def _fail_transfer(flow):
    flow.to("transferring")
    services.platform_transfer_fail(actor=flow.w.agency_officer, entrustment=flow.entrustment,
                                    reason="Wrong memo.")


def _aml_hold(flow):
    flow.to("transferring")
    services.platform_aml_hold(actor=flow.w.agency_officer, entrustment=flow.entrustment,
                               reason="Travel Rule data requested.")


def _terminate(flow):
    flow = btc_only(flow.w)
    flow.to("selling")
    lot = flow.entrustment.lots.get()
    for n in range(flow.entrustment.policy.max_failed_rounds):
        fail_round(flow, lot)
        if lot.rounds_left():
            cut_reserve(flow, lot)
    services.lot_exhaust(actor=flow.w.bce_approver, lot=lot, reason="Three rounds without a deal.")
    return flow


def _reject_fx(flow):
    flow.to("proceeds_received")
    money.fx_record_rejection(actor=flow.w.agency_officer, entrustment=flow.entrustment, currency="USD",
                              reason="SAFE asked for the judgment.")


def _resubmit_fx(flow):
    _reject_fx(flow)
    money.fx_resubmit(actor=flow.w.agency_officer, entrustment=flow.entrustment, reason="Judgment attached.")


def _cancel(flow):
    flow.to("accepted")
    services.entrustment_cancel(actor=flow.w.shunyi_approver, entrustment=flow.entrustment,
                                reason="The court stayed the disposal.")


def _default(flow):
    flow.to("bonded")
    services.entrustment_declare_agency_default(actor=flow.w.bce_approver, entrustment=flow.entrustment,
                                                reason="The agency stopped answering.")


def _open_dispute(flow):
    flow.to("in_custody")
    services.entrustment_open_dispute(actor=flow.w.shunyi_approver, entrustment=flow.entrustment,
                                      reason="A victim claims the coins.")


def _resolve_dispute(flow):
    _open_dispute(flow)
    services.entrustment_resolve_dispute(actor=flow.w.bce_approver, entrustment=flow.entrustment,
                                         reason="The claim was withdrawn.")


def _reach(state):
    def reach(flow):
        flow.to(state)
    return reach


REACHED_BY = {
    "submit": _reach("submitted"),
    "return_for_correction": _return,
    "refuse": _refuse,
    "accept": _reach("accepted"),
    "appoint_agency": _reach("agency_appointed"),
    "confirm_bond": _reach("bonded"),
    "record_detection": _reach("detected"),
    "record_mismatch": _record_mismatch,
    "accept_detected_amounts": _accept_detected,
    "receive_into_custody": _reach("in_custody"),
    "set_reserve": _reach("reserve_set"),
    "instruct_transfer": _reach("transferring"),
    "fail_transfer": _fail_transfer,
    "hold_for_aml": _aml_hold,
    "clear_at_platform": _reach("at_platform"),
    "start_selling": _reach("selling"),
    "complete_sale": _reach("sold"),
    "terminate_unsold": _terminate,
    "receive_proceeds": _reach("proceeds_received"),
    "reject_fx": _reject_fx,
    "resubmit_fx": _resubmit_fx,
    "clear_fx": _reach("fx_cleared"),
    "credit_special_account": _reach("credited"),
    "remit": _reach("remitted"),
    "close": _reach("closed"),
    "cancel": _cancel,
    "declare_agency_default": _default,
    "open_dispute": _open_dispute,
    "resolve_dispute": _resolve_dispute,
}


def test_every_transition_of_the_model_has_a_service_scenario():
    assert set(REACHED_BY) == set(TRANSITION_NAMES)


@pytest.mark.parametrize("name", TRANSITION_NAMES)
def test_each_transition_is_reached_through_its_service(flow, name):
    flow = REACHED_BY[name](flow) or flow
    entrustment = flow.refresh()
    events = list(transitions_of(entrustment, name))
    assert len(events) == 1, (name, [(e.from_state, e.to_state) for e in transitions_of(entrustment)])
    event = events[0]
    assert event.from_state in SOURCES[name]
    assert event.actor is not None and event.actor_organisation is not None
    row = entrustment.history.filter(state=event.to_state).order_by("-history_date").first()
    assert row is not None and row.history_user == event.actor


# =========================================================================== refusals name the state


def _call(service, persona, **kwargs):
    return lambda f: service(actor=getattr(f.w, persona), entrustment=f.entrustment, **kwargs)


REFUSALS = [
    ("draft", _call(services.entrustment_accept, "bce_approver")),
    ("draft", _call(services.entrustment_return, "bce_officer", reason="x")),
    ("draft", _call(services.entrustment_open_dispute, "shunyi_approver", reason="x")),
    ("accepted", _call(services.entrustment_submit, "shunyi_approver")),
    ("accepted", _call(services.entrustment_refuse, "bce_approver", reason="x")),
    ("submitted", lambda f: f._agency_appointed()),
    ("detected", lambda f: services.bond_post(actor=f.w.bce_officer, entrustment=f.entrustment,
                                              posted_cny=VALUATION * 2, reference="BG-9")),
    ("bonded", _call(services.detection_accept_observed, "shunyi_approver", reason="x")),
    ("bonded", _call(services.entrustment_reopen_after_default, "bce_approver", reason="x")),
    ("in_custody", _call(services.entrustment_cancel, "shunyi_approver", reason="x")),
    ("in_custody", lambda f: f._detected()),
    ("in_custody", _call(services.entrustment_resolve_dispute, "bce_approver", reason="x")),
    ("detected", lambda f: f._reserve_set()),
    ("at_platform", _call(services.platform_aml_hold, "agency_officer", reason="x")),
    ("at_platform", _call(services.platform_transfer_fail, "agency_officer", reason="x")),
    ("proceeds_received", _call(money.fx_resubmit, "agency_officer", reason="x")),
    ("proceeds_received", lambda f: f._credited()),
    ("fx_cleared", lambda f: f._remitted()),
    ("credited", _call(money.entrustment_close, "bce_approver")),
    ("credited", _call(services.entrustment_declare_agency_default, "bce_approver", reason="x")),
    ("closed", _call(services.entrustment_open_dispute, "bce_approver", reason="x")),
    ("closed", _call(services.entrustment_cancel, "shunyi_approver", reason="x")),
]


@pytest.mark.parametrize("state, act", REFUSALS, ids=[f"{s}-{i}" for i, (s, _) in enumerate(REFUSALS)])
def test_a_service_called_in_the_wrong_state_is_refused_with_a_message_naming_the_state(flow, state, act):
    entrustment = flow.to(state)
    events = transitions_of(entrustment).count()
    with pytest.raises(DisposalError) as refused:
        act(flow)
    assert not isinstance(refused.value, NotPermitted)
    assert label(state) in refused.value.message
    assert flow.refresh().state == state
    assert transitions_of(entrustment).count() == events


def test_it_refuses_to_accept_a_draft(flow):
    flow.to("draft")
    with pytest.raises(DisposalError, match="Draft"):
        services.entrustment_accept(actor=flow.w.bce_approver, entrustment=flow.entrustment)
    assert not Approval.objects.filter(entrustment=flow.entrustment).exists()


# =========================================================================== guards: the bond


def test_it_refuses_a_bond_below_the_ratio_naming_the_field_and_the_shortfall(flow):
    flow.to("agency_appointed")
    with pytest.raises(ValidationError) as refused:
        services.bond_post(actor=flow.w.bce_officer, entrustment=flow.entrustment, posted_cny=VALUATION,
                           reference="BG-SHORT")
    message = " ".join(refused.value.message_dict["posted_cny"])
    assert "1000000.00" in message  # 11,000,000.00 required, 10,000,000.00 posted
    assert "11000000.00" in message and "110%" in message
    entrustment = flow.refresh()
    assert entrustment.state == S.AGENCY_APPOINTED
    assert entrustment.current_bond() is None
    assert not can_proceed(entrustment.confirm_bond)


def test_it_refuses_a_bond_one_fen_short_and_accepts_the_exact_amount(flow):
    flow.to("agency_appointed")
    with pytest.raises(ValidationError, match="0.01 CNY is missing"):
        services.bond_post(actor=flow.w.bce_officer, entrustment=flow.entrustment,
                           posted_cny=Decimal("10999999.99"), reference="BG-1")
    services.bond_post(actor=flow.w.bce_officer, entrustment=flow.entrustment, posted_cny=Decimal("11000000.00"),
                       reference="BG-1")
    assert flow.refresh().state == S.BONDED


def test_no_coin_moves_once_the_bond_is_forfeited(flow):
    flow.to("detected")
    services.entrustment_declare_agency_default(actor=flow.w.bce_approver, entrustment=flow.entrustment,
                                                reason="Custody keys lost.")
    with pytest.raises(DisposalError, match="performance bond covers"):
        services.custody_receive(actor=flow.w.agency_officer, entrustment=flow.entrustment,
                                 transfers=flow.custody_transfers())
    assert not flow.entrustment.transfers.exists()


def test_no_coin_moves_while_the_new_agency_has_posted_no_bond(flow):
    flow.to("detected")
    w = flow.w
    services.entrustment_declare_agency_default(actor=w.bce_approver, entrustment=flow.entrustment, reason="x")
    services.entrustment_reopen_after_default(actor=w.bce_approver, entrustment=flow.entrustment, reason="y")
    services.agency_appoint(actor=w.bce_officer, entrustment=flow.entrustment, agency=w.agency_b,
                            valuation_cny=VALUATION, valuation_source="s", qualification_note="q",
                            capacity_note="c", conflicts_declared="none")
    entrustment = flow.refresh()
    assert entrustment.current_bond() is None
    with pytest.raises(DisposalError, match="performance bond covers"):
        services.custody_receive(actor=w.agency_b_officer, entrustment=entrustment,
                                 transfers=flow.custody_transfers())
    assert not entrustment.bond_covers()


# =========================================================================== guards: no award below reserve


def test_it_records_no_deal_when_every_quote_is_below_the_reserve(world):
    flow = btc_only(world)
    flow.to("selling")
    lot = fail_round(flow, flow.entrustment.lots.get())
    assert lot.state == LotState.NO_DEAL
    assert lot.failed_rounds == 1
    assert lot.current_round().awarded_quote is None
    event = Event.objects.filter(type=EventType.LOT_TRANSITION, details__transition="record_no_deal").get()
    assert event.reason == "no quote at or above the reserve"


def test_it_records_no_deal_with_fewer_quotes_than_the_policy_requires(world):
    flow = btc_only(world)
    flow.to("selling")
    lot = flow.entrustment.lots.get()
    flow.quote(lot, world.osl, lot.current_reserve().price + 1000, "osl-only")
    services.inquiry_close(actor=world.agency_officer, lot=lot)
    lot.refresh_from_db()
    assert lot.state == LotState.NO_DEAL
    event = Event.objects.filter(type=EventType.LOT_TRANSITION, details__transition="record_no_deal").get()
    assert event.reason == "fewer quotes than the policy requires"
    assert event.details["quotes"] == 1 and event.details["min_quotes"] == world.policy.min_quotes


def test_it_refuses_award_below_reserve_at_the_model_and_fills_below_reserve_at_execution(world):
    flow = btc_only(world)
    flow.to("selling")
    lot = fail_round(flow, flow.entrustment.lots.get())
    assert not can_proceed(lot.propose_award) and not can_proceed(lot.approve_award)
    # A round that is awarded cannot be filled below the reserve either.
    lot = cut_reserve(flow, lot)
    services.inquiry_open(actor=world.agency_officer, lot=lot)
    reserve = lot.current_reserve().price
    flow.quote(lot, world.osl, reserve + 10, "osl-ok")
    flow.quote(lot, world.hashkey, reserve + 5, "hk-ok")
    services.inquiry_close(actor=world.agency_officer, lot=lot)
    services.award_approve(actor=world.bce_approver, lot=lot)
    with pytest.raises(ValidationError, match="below the reserve"):
        services.execution_record(actor=world.agency_officer, lot=lot, fills=[services.FillRecord(
            trade_id="T-low", quantity=lot.quantity, price=reserve - 1, gross=Decimal("1.00"), fee=Decimal("0"),
            executed_at=timezone.now())])
    assert not Fill.objects.filter(lot=lot).exists()


# =========================================================================== guards: four eyes


def test_the_preparer_may_not_submit_his_own_entrustment_even_with_an_approver_role(flow):
    w = flow.w
    member("shunyi_officer", w.shunyi, Role.APPROVER)
    flow.to("draft")
    assert flow.entrustment.prepared_by == w.shunyi_officer
    with pytest.raises(DisposalError, match="four eyes"):
        services.entrustment_submit(actor=w.shunyi_officer, entrustment=flow.entrustment)
    assert flow.refresh().state == S.DRAFT
    assert not Approval.objects.filter(entrustment=flow.entrustment).exists()


def test_the_award_may_not_be_approved_by_the_person_who_proposed_it(world):
    member("agency_officer", world.bce, Role.APPROVER)  # a conflict the portal must still catch
    flow = btc_only(world)
    flow.to("selling")
    lot = flow.entrustment.lots.get()
    reserve = lot.current_reserve().price
    flow.quote(lot, world.osl, reserve + 10, "osl-1")
    flow.quote(lot, world.hashkey, reserve + 5, "hk-1")
    services.inquiry_close(actor=world.agency_officer, lot=lot)
    with pytest.raises(DisposalError, match="four eyes"):
        services.award_approve(actor=world.agency_officer, lot=lot)
    lot.refresh_from_db()
    assert lot.state == LotState.AWARD_PENDING
    services.award_approve(actor=world.bce_approver, lot=lot)
    lot.refresh_from_db()
    assert lot.state == LotState.EXECUTING


def test_the_reserve_may_not_be_approved_by_the_person_who_proposed_it(flow):
    w = flow.w
    member("bce_officer", w.bce, Role.APPROVER)
    flow.to("in_custody")
    services.lots_plan(actor=w.bce_officer, entrustment=flow.entrustment)
    lot = flow.entrustment.lots.order_by("sequence").first()
    services.reserve_propose(actor=w.bce_officer, lot=lot, price="62000",
                             inputs={"reference_prices": ["60000", "61000", "62000"], "source": "Bitstamp"})
    with pytest.raises(DisposalError, match="four eyes"):
        services.reserve_approve(actor=w.bce_officer, lot=lot)
    lot.refresh_from_db()
    assert lot.state == LotState.PLANNED and lot.current_reserve() is None


def test_a_second_approval_by_the_same_approver_is_refused(flow):
    w = flow.w
    w.policy.quorums["reserve"] = 2
    w.policy.save()
    flow.to("in_custody")
    services.lots_plan(actor=w.bce_officer, entrustment=flow.entrustment)
    lot = flow.entrustment.lots.order_by("sequence").first()
    services.reserve_propose(actor=w.bce_officer, lot=lot, price="62000",
                             inputs={"reference_prices": ["60000", "61000", "62000"], "source": "Bitstamp"})
    services.reserve_approve(actor=w.bce_approver, lot=lot)
    with pytest.raises(DisposalError, match="already approved"):
        services.reserve_approve(actor=w.bce_approver, lot=lot)
    lot.refresh_from_db()
    assert lot.state == LotState.PLANNED
    services.reserve_approve(actor=w.bce_approver_2, lot=lot)
    lot.refresh_from_db()
    assert lot.state == LotState.RESERVE_SET


# =========================================================================== guards: amounts reconcile before close


def test_it_refuses_to_close_when_a_forged_fill_breaks_the_reconciliation(flow):
    entrustment = flow.to("remitted")
    lot = entrustment.lots.order_by("sequence").first()
    genuine = lot.fills.get()
    # A record that did not come through the services: the kind of tampering the close must catch.
    Fill.objects.create(lot=lot, quote=genuine.quote, trade_id="FORGED", quantity=1, price=genuine.price,
                        gross=Decimal("1.00"), fee=Decimal("0.00"), currency=genuine.currency,
                        executed_at=genuine.executed_at, recorded_by=flow.w.agency_officer)
    with pytest.raises(DisposalError) as refused:
        money.entrustment_close(actor=flow.w.bce_approver, entrustment=entrustment)
    assert "USD: proceeds net of fees" in refused.value.message and "differ" in refused.value.message
    assert f"Lot {lot.sequence} is executed but its fills add up to" in refused.value.message
    entrustment = flow.refresh()
    assert entrustment.state == S.REMITTED
    assert not can_proceed(entrustment.close)
    assert not Approval.objects.filter(entrustment=entrustment, action="close").exists()
    assert entrustment.current_bond().state == BondState.POSTED


def test_it_refuses_to_close_when_a_return_to_victims_was_slipped_in_beside_the_remittance(flow):
    entrustment = flow.to("remitted")
    VictimReturn.objects.create(entrustment=entrustment, recipient="X", recipient_account="1", basis="none",
                                amount_cny=Decimal("100.00"), prepared_by=flow.w.shunyi_officer,
                                approved_at=timezone.now())
    with pytest.raises(DisposalError, match="is not fully accounted for"):
        money.entrustment_close(actor=flow.w.bce_approver, entrustment=entrustment)
    assert flow.refresh().state == S.REMITTED


def test_a_return_to_victims_cannot_be_prepared_once_the_whole_credit_is_being_remitted(flow):
    """Otherwise the same yuan goes to the treasury and to a victim, and only the close notices."""
    w = flow.w
    entrustment = flow.to("credited")
    money.remittance_prepare(actor=w.shunyi_officer, entrustment=entrustment, payment_code=f"{entrustment.pk:020d}")
    with pytest.raises(ValidationError, match="remains unallocated"):
        money.victim_return_prepare(actor=w.shunyi_officer, entrustment=entrustment, recipient="Victim",
                                    recipient_account="6222", amount_cny="100.00", basis="Judgment item 3")
    assert not entrustment.victim_returns.exists()
    money.remittance_approve(actor=w.shunyi_approver, entrustment=entrustment, treasury_receipt="TR-1")
    assert reconciliation(flow.refresh()).problems == []


def test_returns_to_victims_and_the_remittance_add_up_to_the_credit_and_the_case_closes(flow):
    w = flow.w
    entrustment = flow.to("credited")
    credit = entrustment.credit.amount_cny
    victim_return = money.victim_return_prepare(actor=w.shunyi_officer, entrustment=entrustment,
                                                recipient="Victim", recipient_account="6222",
                                                amount_cny="1000.00", basis="Judgment item 3")
    with pytest.raises(DisposalError, match="pending returns"):
        money.remittance_prepare(actor=w.shunyi_officer, entrustment=entrustment,
                                 payment_code=f"{entrustment.pk:020d}")
    with pytest.raises(NotPermitted):
        money.victim_return_approve(actor=w.shunyi_officer, victim_return=victim_return)
    money.victim_return_approve(actor=w.shunyi_approver, victim_return=victim_return)
    remittance = money.remittance_prepare(actor=w.shunyi_officer, entrustment=entrustment,
                                          payment_code=f"{entrustment.pk:020d}")
    assert remittance.amount_cny == credit - Decimal("1000.00")
    money.remittance_approve(actor=w.shunyi_approver, entrustment=entrustment, treasury_receipt="TR-1")
    recon = reconciliation(flow.refresh())
    assert recon.problems == [] and recon.returned_cny == Decimal("1000.00")
    assert flow.to("closed").state == S.CLOSED


# =========================================================================== quorum


def test_a_quorum_of_two_needs_two_approvers_and_the_preparer_never_counts(flow):
    w = flow.w
    w.policy.quorums["submit"] = 2
    w.policy.save()
    member("shunyi_officer", w.shunyi, Role.APPROVER)
    entrustment = flow.to("draft")
    with pytest.raises(DisposalError, match="four eyes"):
        services.entrustment_submit(actor=w.shunyi_officer, entrustment=entrustment)
    services.entrustment_submit(actor=w.shunyi_approver, entrustment=entrustment)
    assert flow.refresh().state == S.DRAFT
    assert Approval.objects.filter(entrustment=entrustment, action="submit").count() == 1
    assert not transitions_of(entrustment).exists()
    services.entrustment_submit(actor=w.shunyi_approver_2, entrustment=entrustment)
    entrustment = flow.refresh()
    assert entrustment.state == S.SUBMITTED
    assert set(Approval.objects.filter(entrustment=entrustment, action="submit").values_list("approver", flat=True)) \
        == {w.shunyi_approver.pk, w.shunyi_approver_2.pk}
    assert transitions_of(entrustment).get().actor == w.shunyi_approver_2
    assert Event.objects.filter(entrustment=entrustment, type=EventType.APPROVAL_GIVEN).count() == 2


def test_an_approval_of_content_that_changed_since_does_not_count_toward_the_quorum(flow):
    w = flow.w
    w.policy.quorums["submit"] = 2
    w.policy.save()
    entrustment = flow.to("draft")
    services.entrustment_submit(actor=w.shunyi_approver, entrustment=entrustment)
    services.case_record_legal_basis(actor=w.shunyi_officer, case=flow.case, kind="confiscation",
                                     document_no="顺没〔2025〕1号-更正", basis_date=SEIZED_AT.date(),
                                     authority="顺义分局")
    services.entrustment_submit(actor=w.shunyi_approver_2, entrustment=entrustment)
    assert flow.refresh().state == S.DRAFT
    services.entrustment_submit(actor=w.shunyi_approver, entrustment=entrustment)
    assert flow.refresh().state == S.SUBMITTED


# =========================================================================== permissions


def test_an_officer_of_another_bureau_cannot_register_holdings_on_the_case(flow):
    w = flow.w
    flow.to("draft")
    with pytest.raises(NotPermitted):
        services.holding_register(actor=w.chaoyang_officer, case=flow.case, asset=w.btc,
                                  address="bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", amount="1",
                                  location="硬件钱包")
    with pytest.raises(NotPermitted):
        services.entrustment_cancel(actor=w.chaoyang_approver, entrustment=flow.entrustment, reason="x")
    assert flow.case.holdings.count() == 2


def test_another_agency_cannot_record_detection_on_an_entrustment_it_is_not_appointed_to(flow):
    entrustment = flow.to("bonded")
    with pytest.raises(NotPermitted):
        services.detection_record(actor=flow.w.agency_b_officer, entrustment=entrustment,
                                  observations=flow.observations(), witness=flow.w.witness)
    assert flow.refresh().state == S.BONDED
    assert not any(h.detections.exists() for h in entrustment.holdings.all())


SUPERVISOR_ATTEMPTS = {
    "register a case": lambda f, u: services.case_register(
        actor=u, bureau=f.w.shunyi, case_number="X-1", title="t", seized_at=SEIZED_AT, seizure_decision_no="d",
        custodian="c"),
    "submit": lambda f, u: services.entrustment_submit(actor=u, entrustment=f.entrustment),
    "accept": lambda f, u: services.entrustment_accept(actor=u, entrustment=f.entrustment),
    "return": lambda f, u: services.entrustment_return(actor=u, entrustment=f.entrustment, reason="x"),
    "cancel": lambda f, u: services.entrustment_cancel(actor=u, entrustment=f.entrustment, reason="x"),
    "open a dispute": lambda f, u: services.entrustment_open_dispute(actor=u, entrustment=f.entrustment,
                                                                    reason="x"),
    "declare a default": lambda f, u: services.entrustment_declare_agency_default(
        actor=u, entrustment=f.entrustment, reason="x"),
}


@pytest.mark.parametrize("persona", ["supervisor", "stranger"])
@pytest.mark.parametrize("attempt", list(SUPERVISOR_ATTEMPTS))
def test_supervisors_and_strangers_can_change_nothing(flow, persona, attempt):
    entrustment = flow.to("submitted")
    events = Event.objects.count()
    with pytest.raises(NotPermitted):
        SUPERVISOR_ATTEMPTS[attempt](flow, getattr(flow.w, persona))
    assert flow.refresh().state == entrustment.state
    assert Event.objects.count() == events


def test_supervisors_and_strangers_cannot_touch_lots_or_money(flow):
    w = flow.w
    entrustment = flow.to("selling")
    lot = entrustment.lots.order_by("sequence").first()
    for user in (w.supervisor, w.stranger):
        for attempt in (
            lambda: services.inquiry_close(actor=user, lot=lot),
            lambda: services.lot_suspend(actor=user, lot=lot, reason="x"),
            lambda: services.reserve_approve(actor=user, lot=lot),
            lambda: money.fx_resubmit(actor=user, entrustment=entrustment, reason="x"),
            lambda: money.entrustment_close(actor=user, entrustment=entrustment),
        ):
            with pytest.raises(NotPermitted):
                attempt()


def test_a_bce_officer_cannot_approve_an_award_or_a_reserve(world):
    flow = btc_only(world)
    flow.to("selling")
    lot = flow.entrustment.lots.get()
    reserve = lot.current_reserve().price
    flow.quote(lot, world.osl, reserve + 10, "osl-1")
    flow.quote(lot, world.hashkey, reserve + 5, "hk-1")
    services.inquiry_close(actor=world.agency_officer, lot=lot)
    with pytest.raises(NotPermitted, match="Approver"):
        services.award_approve(actor=world.bce_officer, lot=lot)
    lot.refresh_from_db()
    assert lot.state == LotState.AWARD_PENDING
    # Back to a lot without a reserve: the same officer proposes a reserve but cannot approve it.
    services.lot_suspend(actor=world.bce_officer, lot=lot, reason="Market halt.")
    with pytest.raises(NotPermitted, match="Approver"):
        services.reserve_approve(actor=world.bce_officer, lot=lot)
    with pytest.raises(NotPermitted):
        services.entrustment_accept(actor=world.bce_officer, entrustment=flow.entrustment)


def test_a_bureau_officer_prepares_but_cannot_submit(flow):
    flow.to("draft")
    with pytest.raises(NotPermitted):
        services.entrustment_submit(actor=flow.w.shunyi_officer, entrustment=flow.entrustment)


# =========================================================================== the record of each action


RECORDED = [
    ("submitted", "return_for_correction", "bce_officer",
     lambda f, r: services.entrustment_return(actor=f.w.bce_officer, entrustment=f.entrustment, reason=r)),
    ("bonded", "cancel", "shunyi_approver",
     lambda f, r: services.entrustment_cancel(actor=f.w.shunyi_approver, entrustment=f.entrustment, reason=r)),
    ("in_custody", "open_dispute", "bce_approver",
     lambda f, r: services.entrustment_open_dispute(actor=f.w.bce_approver, entrustment=f.entrustment,
                                                    reason=r)),
    ("detected", "declare_agency_default", "bce_approver",
     lambda f, r: services.entrustment_declare_agency_default(actor=f.w.bce_approver, entrustment=f.entrustment,
                                                              reason=r)),
    ("transferring", "hold_for_aml", "agency_officer",
     lambda f, r: services.platform_aml_hold(actor=f.w.agency_officer, entrustment=f.entrustment, reason=r)),
    ("proceeds_received", "reject_fx", "agency_officer",
     lambda f, r: money.fx_record_rejection(actor=f.w.agency_officer, entrustment=f.entrustment, currency="USD",
                                            reason=r)),
]


@pytest.mark.parametrize("state, name, persona, act", RECORDED, ids=[r[1] for r in RECORDED])
def test_each_action_writes_one_history_row_and_one_transition_event_with_actor_and_reason(
        flow, state, name, persona, act):
    entrustment = flow.to(state)
    rows, events = entrustment.history.count(), transitions_of(entrustment).count()
    reason = f"Reason for {name}, recorded verbatim."
    act(flow, reason)
    entrustment = flow.refresh()
    assert entrustment.history.count() == rows + 1
    assert transitions_of(entrustment).count() == events + 1
    actor = getattr(flow.w, persona)
    event = transitions_of(entrustment).latest("id")
    assert (event.from_state, event.to_state) == (state, entrustment.state)
    assert event.details["transition"] == name
    assert event.actor == actor and event.reason == reason
    row = entrustment.history.latest("history_date")
    assert row.state == entrustment.state
    assert row.history_user == actor and row.history_change_reason == reason


def test_a_service_without_a_reason_is_refused_where_the_process_needs_one(flow):
    entrustment = flow.to("submitted")
    with pytest.raises(ValidationError) as refused:
        services.entrustment_return(actor=flow.w.bce_officer, entrustment=entrustment, reason="  ")
    assert "reason" in refused.value.message_dict
    assert flow.refresh().state == S.SUBMITTED


def test_the_happy_path_writes_exactly_one_history_row_per_state_change(flow):
    entrustment = flow.to("closed")
    states = [row.state for row in entrustment.history.order_by("history_date", "history_id")]
    # The first row is the draft's creation; every later row is one transition.
    assert states == STEPS
    assert len(states) == transitions_of(entrustment).count() + 1
