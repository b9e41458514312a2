"""The exception paths of DOMAIN.md, each driven through the real services by the persona whose job it is:
returned, refused, cancelled, detection mismatch, AML hold, transfer failed, no deal and new reserve rounds,
market suspension, FX rejected, agency default, dispute, and partial execution."""

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.utils import translation
from django_fsm import can_proceed

from agencies.models import BondState
from cases import services
from cases.models import (
    Entrustment,
    EntrustmentState,
    Event,
    EventType,
    HoldingStatus,
    Lot,
    LotState,
    TransferKind,
    TransferStatus,
)
from cases.selectors import reconciliation
from cases.services import Observation
from cases.workflow import DisposalError, NotPermitted
from settlements import services as money

from .factories import BASIS_DATE, VALUATION
from .flow import Flow

S = EntrustmentState
ALL_TRANSITION_NAMES = sorted({t.name for t in Entrustment._meta.get_field("state").get_all_transitions(Entrustment)})


@pytest.fixture(autouse=True)
def english():
    with translation.override("en"):
        yield


@pytest.fixture
def btc_flow(world):
    """One holding, one lot: the sale-side exceptions are easiest to follow on a single lot."""
    return Flow(world, holdings=(("BTC", "2.5"),), case_number="顺公立字〔2025〕300号")


def label(state: str) -> str:
    return str(EntrustmentState(state).label)


def transitions(entrustment):
    return Event.objects.filter(entrustment=entrustment, type=EventType.TRANSITION)


def only_lot(flow) -> Lot:
    return flow.entrustment.lots.get()


def quote_pair(flow, lot, osl_price, hk_price):
    n = lot.rounds.count()
    flow.quote(lot, flow.w.osl, osl_price, f"osl-{lot.pk}-r{n}")
    flow.quote(lot, flow.w.hashkey, hk_price, f"hk-{lot.pk}-r{n}")


def fail_round(flow, lot) -> Lot:
    lot.refresh_from_db()
    if lot.state != LotState.INQUIRY:
        services.inquiry_open(actor=flow.w.agency_officer, lot=lot)
        lot.refresh_from_db()
    reserve = lot.current_reserve().price
    quote_pair(flow, lot, reserve - 100, reserve - 200)
    services.inquiry_close(actor=flow.w.agency_officer, lot=lot)
    lot.refresh_from_db()
    assert lot.state == LotState.NO_DEAL
    return lot


def cut_price(lot, cut: str) -> Decimal:
    return (lot.current_reserve().price * (1 - Decimal(cut))).quantize(Decimal("0.00000001"))


def new_reserve(flow, lot, cut="0.20") -> Lot:
    services.reserve_propose(actor=flow.w.bce_officer, lot=lot, price=cut_price(lot, cut),
                             inputs={"rule": "cut after no deal", "cut": cut})
    services.reserve_approve(actor=flow.w.bce_approver, lot=lot)
    lot.refresh_from_db()
    assert lot.state == LotState.RESERVE_SET
    return lot


def nothing_is_possible(entrustment) -> bool:
    return not any(can_proceed(getattr(entrustment, name), check_conditions=False) for name in ALL_TRANSITION_NAMES)


# =========================================================================== returned, refused, cancelled


def test_a_returned_entrustment_is_corrected_and_resubmitted(flow):
    w = flow.w
    entrustment = flow.to("submitted")
    services.entrustment_return(actor=w.bce_officer, entrustment=entrustment,
                                reason="The confiscation decision number is wrong.")
    assert flow.refresh().state == S.RETURNED
    # The bureau corrects the record, which is allowed while the entrustment is returned.
    services.case_record_legal_basis(actor=w.shunyi_officer, case=flow.case, kind="confiscation",
                                     document_no="顺没〔2025〕1号之一", basis_date=BASIS_DATE, authority="顺义分局")
    services.entrustment_submit(actor=w.shunyi_approver, entrustment=entrustment, reason="Corrected.")
    assert flow.refresh().state == S.SUBMITTED
    services.entrustment_accept(actor=w.bce_approver, entrustment=entrustment)
    assert [(e.from_state, e.to_state) for e in transitions(entrustment)] == [
        ("draft", "submitted"), ("submitted", "returned"), ("returned", "submitted"), ("submitted", "accepted")]
    assert transitions(entrustment).get(to_state="returned").reason == "The confiscation decision number is wrong."


def test_the_same_approver_may_sign_the_resubmission_after_a_return_even_if_the_listed_facts_are_unchanged(flow):
    """A return for correction may concern a document outside the letter's facts (a missing scan, say).
    Approvals given before the return belong to the earlier submission; the resubmission is a new act."""
    w = flow.w
    entrustment = flow.to("submitted")
    services.entrustment_return(actor=w.bce_officer, entrustment=entrustment, reason="The seizure list scan is "
                                                                                    "illegible.")
    services.entrustment_submit(actor=w.shunyi_approver, entrustment=entrustment, reason="Scan replaced.")
    assert flow.refresh().state == S.SUBMITTED


def test_approvals_given_before_a_return_do_not_count_toward_the_resubmission_quorum(flow):
    w = flow.w
    w.policy.quorums["submit"] = 2
    w.policy.save()
    entrustment = flow.to("draft")
    services.entrustment_submit(actor=w.shunyi_approver, entrustment=entrustment)
    services.entrustment_submit(actor=w.shunyi_approver_2, entrustment=entrustment)
    services.entrustment_return(actor=w.bce_officer, entrustment=entrustment, reason="Scan illegible.")
    services.entrustment_submit(actor=w.shunyi_approver, entrustment=entrustment)
    assert flow.refresh().state == S.RETURNED
    services.entrustment_submit(actor=w.shunyi_approver_2, entrustment=entrustment)
    assert flow.refresh().state == S.SUBMITTED


def test_a_refused_entrustment_is_terminal_and_nothing_further_is_possible(flow):
    w = flow.w
    entrustment = flow.to("submitted")
    services.entrustment_refuse(actor=w.bce_approver, entrustment=entrustment, reason="No legal basis for BCE.")
    entrustment = flow.refresh()
    assert entrustment.state == S.REFUSED
    assert nothing_is_possible(entrustment)
    for attempt in (
        lambda: services.entrustment_submit(actor=w.shunyi_approver, entrustment=entrustment),
        lambda: services.entrustment_accept(actor=w.bce_approver, entrustment=entrustment),
        lambda: services.entrustment_return(actor=w.bce_officer, entrustment=entrustment, reason="x"),
        lambda: services.entrustment_cancel(actor=w.shunyi_approver, entrustment=entrustment, reason="x"),
        lambda: services.entrustment_open_dispute(actor=w.shunyi_approver, entrustment=entrustment, reason="x"),
        lambda: flow._agency_appointed(),
    ):
        with pytest.raises(DisposalError) as refused:
            attempt()
        assert label(S.REFUSED) in refused.value.message
    assert flow.refresh().state == S.REFUSED
    # The bureau may entrust the same holdings afresh, in a new entrustment.
    again = services.entrustment_create(actor=w.shunyi_officer, case=flow.case, holdings=list(flow.case.holdings.all()),
                                        bce=w.bce)
    assert again.state == S.DRAFT and again.holdings.count() == 2


@pytest.mark.parametrize("state", ["submitted", "bonded", "detected"])
def test_cancellation_before_custody_releases_the_bond_and_frees_the_holdings(flow, state):
    w = flow.w
    entrustment = flow.to(state)
    holdings = list(entrustment.holdings.all())
    services.entrustment_cancel(actor=w.shunyi_approver, entrustment=entrustment, reason="The court stayed it.")
    entrustment = flow.refresh()
    assert entrustment.state == S.CANCELLED
    assert nothing_is_possible(entrustment)
    assert not entrustment.holdings.exists()
    bond = entrustment.current_bond()
    if state == "submitted":
        assert bond is None
    else:
        assert bond.state == BondState.RELEASED
        released = Event.objects.get(entrustment=entrustment, type=EventType.BOND_RELEASED)
        assert released.actor == w.shunyi_approver and released.details["reference"] == bond.reference
    # The freed holdings go into a new entrustment.
    again = services.entrustment_create(actor=w.shunyi_officer, case=flow.case, holdings=holdings, bce=w.bce)
    assert set(again.holdings.values_list("pk", flat=True)) == {h.pk for h in holdings}


@pytest.mark.parametrize("state", ["in_custody", "reserve_set", "selling", "credited"])
def test_it_refuses_to_cancel_once_coins_have_moved(flow, state):
    entrustment = flow.to(state)
    with pytest.raises(DisposalError) as refused:
        services.entrustment_cancel(actor=flow.w.shunyi_approver, entrustment=entrustment, reason="Too late.")
    assert label(state) in refused.value.message
    entrustment = flow.refresh()
    assert entrustment.state == state
    assert entrustment.holdings.count() == 2
    assert entrustment.current_bond().state == BondState.POSTED


# =========================================================================== detection mismatch


def short_by(flow, units=5_000):
    btc = flow.entrustment.holdings.get(asset__symbol="BTC")
    return btc, btc.declared_amount - units


def test_a_detection_mismatch_is_an_exception_with_the_evidence_on_record(flow):
    entrustment = flow.to("bonded")
    btc, observed = short_by(flow)
    services.detection_record(actor=flow.w.agency_officer, entrustment=entrustment,
                              observations=flow.observations(BTC=observed), witness=flow.w.witness)
    entrustment = flow.refresh()
    assert entrustment.state == S.DETECTION_MISMATCH
    btc.refresh_from_db()
    assert btc.status == HoldingStatus.MISMATCH
    assert btc.accepted_amount == btc.declared_amount  # never a silent correction
    assert entrustment.holdings.get(asset__symbol="ETH").status == HoldingStatus.VERIFIED
    detected = Event.objects.get(entrustment=entrustment, type=EventType.DETECTION_RECORDED)
    assert detected.details["mismatches"] == [{"holding": btc.pk, "address": btc.address,
                                               "declared": str(btc.declared_amount), "observed": str(observed),
                                               "controlled": True}]
    assert transitions(entrustment).get(to_state=S.DETECTION_MISMATCH).details["mismatches"][0]["holding"] == btc.pk
    # No coin moves from a mismatch.
    with pytest.raises(DisposalError):
        services.custody_receive(actor=flow.w.agency_officer, entrustment=entrustment,
                                 transfers=flow.custody_transfers())


def test_a_mismatch_is_cleared_by_a_detection_that_matches(flow):
    entrustment = flow.to("bonded")
    _, observed = short_by(flow)
    services.detection_record(actor=flow.w.agency_officer, entrustment=entrustment,
                              observations=flow.observations(BTC=observed), witness=flow.w.witness)
    services.detection_record(actor=flow.w.agency_officer, entrustment=entrustment,
                              observations=flow.observations(), witness=flow.w.witness)
    entrustment = flow.refresh()
    assert entrustment.state == S.DETECTED
    assert set(entrustment.holdings.values_list("status", flat=True)) == {HoldingStatus.VERIFIED}
    assert [h.detections.count() for h in entrustment.holdings.all()] == [2, 2]
    assert entrustment.sla_started_at is not None
    assert flow.to("in_custody").state == S.IN_CUSTODY


def test_the_bureau_approver_accepts_the_observed_amounts_with_a_reason_and_the_difference_stays_visible(flow):
    w = flow.w
    entrustment = flow.to("bonded")
    btc, observed = short_by(flow)
    services.detection_record(actor=w.agency_officer, entrustment=entrustment,
                              observations=flow.observations(BTC=observed), witness=w.witness)
    with pytest.raises(ValidationError):
        services.detection_accept_observed(actor=w.shunyi_approver, entrustment=entrustment, reason=" ")
    with pytest.raises(NotPermitted):
        services.detection_accept_observed(actor=w.shunyi_officer, entrustment=entrustment, reason="x")
    reason = "The suspect's last transaction paid a fee after the seizure list was drawn up."
    services.detection_accept_observed(actor=w.shunyi_approver, entrustment=entrustment, reason=reason)
    entrustment = flow.refresh()
    assert entrustment.state == S.DETECTED
    btc.refresh_from_db()
    assert (btc.declared_amount, btc.accepted_amount) == (250_000_000, observed)
    assert btc.status == HoldingStatus.VERIFIED
    assert btc.history.latest("history_date").history_change_reason == reason
    event = transitions(entrustment).get(to_state=S.DETECTED)
    assert (event.actor, event.reason) == (w.shunyi_approver, reason)
    line = {c.asset.symbol: c for c in reconciliation(entrustment).coins}["BTC"]
    assert (line.declared, line.accepted) == (250_000_000, observed)
    # The sale proceeds from the accepted amount, and everything reconciles to the end.
    entrustment = flow.to("closed")
    line = {c.asset.symbol: c for c in reconciliation(entrustment).coins}["BTC"]
    assert line.sold + line.network_fees + line.still_held == observed
    assert line.declared - line.accepted == 5_000
    assert reconciliation(entrustment).problems == []


def test_an_address_whose_control_was_not_proven_cannot_be_accepted(flow):
    w = flow.w
    entrustment = flow.to("bonded")
    observations = [Observation(holding=o.holding, observed_amount=o.observed_amount, block_height=o.block_height,
                                controlled=o.holding.asset.symbol != "BTC") for o in flow.observations()]
    services.detection_record(actor=w.agency_officer, entrustment=entrustment, observations=observations,
                              witness=w.witness)
    entrustment = flow.refresh()
    assert entrustment.state == S.DETECTION_MISMATCH
    btc = entrustment.holdings.get(asset__symbol="BTC")
    assert btc.status == HoldingStatus.MISMATCH
    with pytest.raises(DisposalError, match="Control of .* was not proven"):
        services.detection_accept_observed(actor=w.shunyi_approver, entrustment=entrustment, reason="Accept it.")
    assert flow.refresh().state == S.DETECTION_MISMATCH
    # Cancelling is still possible: no coin has moved.
    services.entrustment_cancel(actor=w.shunyi_approver, entrustment=entrustment, reason="Not disposable.")
    assert flow.refresh().state == S.CANCELLED


# =========================================================================== at the platform


def test_an_aml_hold_at_the_platform_is_cleared_and_the_sale_goes_on(flow):
    w = flow.w
    entrustment = flow.to("transferring")
    services.platform_aml_hold(actor=w.agency_officer, entrustment=entrustment, reason="Travel Rule data requested.")
    entrustment = flow.refresh()
    assert entrustment.state == S.AML_HOLD
    with pytest.raises(DisposalError):
        services.inquiry_open(actor=w.agency_officer, lot=entrustment.lots.first())
    flow._at_platform()  # the platform credits the deposits once AML clears
    entrustment = flow.refresh()
    assert entrustment.state == S.AT_PLATFORM
    assert transitions(entrustment).filter(from_state=S.AML_HOLD, to_state=S.AT_PLATFORM).count() == 1
    assert flow.to("closed").state == S.CLOSED


def test_a_failed_transfer_is_instructed_again_under_a_new_reference_and_nothing_is_counted_twice(flow):
    w = flow.w
    entrustment = flow.to("transferring")
    first = set(entrustment.transfers.filter(kind=TransferKind.TO_PLATFORM).values_list("reference", flat=True))
    services.platform_transfer_fail(actor=w.agency_officer, entrustment=entrustment, reason="Wrong deposit memo.")
    entrustment = flow.refresh()
    assert entrustment.state == S.TRANSFER_FAILED
    assert set(entrustment.transfers.filter(reference__in=first).values_list("status", flat=True)) == {
        TransferStatus.FAILED}
    flow._transferring()
    entrustment = flow.refresh()
    assert entrustment.state == S.TRANSFERRING
    second = set(entrustment.transfers.filter(kind=TransferKind.TO_PLATFORM, status=TransferStatus.INSTRUCTED)
                 .values_list("reference", flat=True))
    assert len(second) == len(first) and second.isdisjoint(first)
    entrustment = flow.to("closed")
    recon = reconciliation(entrustment)
    assert recon.problems == []
    for line in recon.coins:
        assert line.sold + line.network_fees + line.still_held == line.accepted


# =========================================================================== no deal, new reserve, rounds


def test_after_no_deal_a_new_reserve_may_be_cut_by_at_most_the_policy_maximum(btc_flow):
    w = btc_flow.w
    btc_flow.to("selling")
    lot = fail_round(btc_flow, only_lot(btc_flow))
    previous = lot.current_reserve().price
    with pytest.raises(ValidationError) as refused:
        services.reserve_propose(actor=w.bce_officer, lot=lot, price=cut_price(lot, "0.25"), inputs={})
    message = " ".join(refused.value.message_dict["price"])
    assert "at most 20%" in message and str(cut_price(lot, "0.20")) in message
    lot = new_reserve(btc_flow, lot, "0.20")
    assert lot.current_reserve().price == previous * Decimal("0.8")
    assert lot.current_reserve().round_no == 2
    inquiry = services.inquiry_open(actor=w.agency_officer, lot=lot)
    assert inquiry.number == 2 and inquiry.reserve == lot.current_reserve()
    btc_flow.sell_lot(lot)
    assert btc_flow.refresh().state == S.SOLD


def test_the_policy_bounds_the_reserve_cut(btc_flow):
    w = btc_flow.w
    w.policy.max_reserve_cut = Decimal("0.1000")
    w.policy.save()
    btc_flow.to("selling")
    lot = fail_round(btc_flow, only_lot(btc_flow))
    with pytest.raises(ValidationError, match="at most 10%"):
        services.reserve_propose(actor=w.bce_officer, lot=lot, price=cut_price(lot, "0.15"), inputs={})
    new_reserve(btc_flow, lot, "0.10")


def test_the_number_of_failed_rounds_is_bounded_by_the_policy_and_then_the_lot_is_exhausted(btc_flow):
    w = btc_flow.w
    btc_flow.to("selling")
    lot = only_lot(btc_flow)
    assert w.policy.max_failed_rounds == 3
    fail_round(btc_flow, lot)
    with pytest.raises(DisposalError, match="Rounds remain"):
        services.lot_exhaust(actor=w.bce_approver, lot=lot, reason="Give up early.")
    new_reserve(btc_flow, lot)
    fail_round(btc_flow, lot)
    new_reserve(btc_flow, lot)
    lot = fail_round(btc_flow, lot)
    assert lot.failed_rounds == 3 and not lot.rounds_left()
    with pytest.raises(DisposalError, match="no further round after 3 failures"):
        services.reserve_propose(actor=w.bce_officer, lot=lot, price=cut_price(lot, "0.10"), inputs={})
    with pytest.raises(NotPermitted):
        services.lot_exhaust(actor=w.bce_officer, lot=lot, reason="Officers do not decide this.")
    services.lot_exhaust(actor=w.bce_approver, lot=lot, reason="Three rounds without a deal.")
    lot.refresh_from_db()
    assert lot.state == LotState.EXHAUSTED
    # All lots exhausted: the entrustment ends unsold.
    entrustment = btc_flow.refresh()
    assert entrustment.state == S.TERMINATED
    assert nothing_is_possible(entrustment)
    event = transitions(entrustment).get(to_state=S.TERMINATED)
    assert event.actor == w.bce_approver and event.reason == "Three rounds without a deal."


def test_an_exhausted_lot_beside_a_sold_one_ends_the_sale_as_sold(flow):
    w = flow.w
    flow.to("selling")
    btc_lot, eth_lot = flow.entrustment.lots.order_by("sequence")
    flow.sell_lot(eth_lot if eth_lot.asset.symbol == "ETH" else btc_lot)
    unsold = btc_lot if btc_lot.asset.symbol == "BTC" else eth_lot
    for n in range(3):
        fail_round(flow, unsold)
        if n < 2:
            new_reserve(flow, unsold)
    assert flow.refresh().state == S.SELLING
    services.lot_exhaust(actor=w.bce_approver, lot=unsold, reason="Three rounds without a deal.")
    assert flow.refresh().state == S.SOLD
    entrustment = flow.to("closed")
    # The unsold coins stay at the platform and show as still held; the money side reconciles.
    line = {c.asset.symbol: c for c in reconciliation(entrustment).coins}["BTC"]
    assert line.sold == 0 and line.still_held > 0
    assert line.sold + line.network_fees + line.still_held == line.accepted
    assert reconciliation(entrustment).problems == []


# =========================================================================== market suspension


def test_a_market_suspension_stops_the_round_and_inquiry_reopens_in_a_new_round(btc_flow):
    w = btc_flow.w
    btc_flow.to("selling")
    lot = only_lot(btc_flow)
    reserve = lot.current_reserve().price
    quote_pair(btc_flow, lot, reserve + 50, reserve + 10)
    services.lot_suspend(actor=w.agency_officer, lot=lot, reason="Price fell 15% in five minutes.")
    lot.refresh_from_db()
    assert lot.state == LotState.SUSPENDED and lot.failed_rounds == 0
    with pytest.raises(DisposalError):
        services.inquiry_close(actor=w.agency_officer, lot=lot)
    second = services.inquiry_open(actor=w.agency_officer, lot=lot)
    assert second.number == 2 and not second.quotes.exists()
    # Suspended again while the award awaits approval: the award cannot be approved afterwards.
    lot.refresh_from_db()
    quote_pair(btc_flow, lot, reserve + 50, reserve + 10)
    services.inquiry_close(actor=w.agency_officer, lot=lot)
    lot.refresh_from_db()
    assert lot.state == LotState.AWARD_PENDING
    services.lot_suspend(actor=w.bce_officer, lot=lot, reason="The platform halted trading.")
    lot.refresh_from_db()
    assert lot.state == LotState.SUSPENDED
    with pytest.raises(DisposalError):
        services.award_approve(actor=w.bce_approver, lot=lot)
    third = services.inquiry_open(actor=w.agency_officer, lot=lot)
    assert third.number == 3
    btc_flow.sell_lot(lot)
    lot.refresh_from_db()
    assert lot.state == LotState.EXECUTED
    assert lot.fills.get().quote.round == third
    assert btc_flow.refresh().state == S.SOLD
    suspensions = Event.objects.filter(type=EventType.LOT_TRANSITION, details__transition="suspend")
    assert [(e.from_state, e.actor) for e in suspensions] == [(LotState.INQUIRY, w.agency_officer),
                                                              (LotState.AWARD_PENDING, w.bce_officer)]


def test_a_lot_cannot_be_suspended_before_its_inquiry_opens(flow):
    flow.to("reserve_set")
    lot = flow.entrustment.lots.order_by("sequence").first()
    with pytest.raises(DisposalError):
        services.lot_suspend(actor=flow.w.agency_officer, lot=lot, reason="x")


# =========================================================================== FX rejected


def test_fx_rejected_is_resubmitted_and_then_approved(flow):
    w = flow.w
    entrustment = flow.to("proceeds_received")
    money.fx_record_rejection(actor=w.agency_officer, entrustment=entrustment, currency="USD",
                              reason="SAFE asked for the effective judgment.")
    entrustment = flow.refresh()
    assert entrustment.state == S.FX_REJECTED
    with pytest.raises(DisposalError) as refused:
        flow._fx_cleared()
    assert label(S.FX_REJECTED) in refused.value.message
    money.fx_resubmit(actor=w.agency_officer, entrustment=entrustment, reason="Judgment attached.")
    assert flow.refresh().state == S.PROCEEDS_RECEIVED
    entrustment = flow.to("closed")
    outcomes = list(entrustment.fx_conversions.order_by("id").values_list("outcome", flat=True))
    assert outcomes == ["rejected", "approved"]
    assert reconciliation(entrustment).problems == []


# =========================================================================== agency default


@pytest.mark.parametrize("state", ["bonded", "detected"])
def test_an_agency_default_forfeits_the_bond_and_a_new_agency_takes_over(flow, state):
    w = flow.w
    entrustment = flow.to(state)
    old_bond = entrustment.current_bond()
    services.entrustment_declare_agency_default(actor=w.bce_approver, entrustment=entrustment,
                                                reason="The agency lost its licence.")
    entrustment = flow.refresh()
    assert entrustment.state == S.AGENCY_DEFAULT
    old_bond.refresh_from_db()
    assert old_bond.state == BondState.FORFEITED
    forfeited = Event.objects.get(entrustment=entrustment, type=EventType.BOND_FORFEITED)
    assert forfeited.details == {"reference": old_bond.reference, "amount_cny": str(old_bond.posted_cny)}
    assert forfeited.actor == w.bce_approver and forfeited.reason == "The agency lost its licence."

    services.entrustment_reopen_after_default(actor=w.bce_approver, entrustment=entrustment,
                                              reason="Appoint another agency.")
    entrustment = flow.refresh()
    assert entrustment.state == S.ACCEPTED and entrustment.agency is None
    services.agency_appoint(actor=w.bce_officer, entrustment=entrustment, agency=w.agency_b,
                            valuation_cny=VALUATION, valuation_source="CoinMarketCap 30-day average",
                            qualification_note="licensed", capacity_note="custody HSM", conflicts_declared="none")
    services.bond_post(actor=w.bce_officer, entrustment=entrustment, posted_cny=VALUATION * Decimal("1.1"),
                       reference="BG-B-0001")
    entrustment = flow.refresh()
    assert entrustment.state == S.BONDED and entrustment.agency == w.agency_b
    assert entrustment.current_bond().reference == "BG-B-0001"
    old_bond.refresh_from_db()
    assert old_bond.state == BondState.FORFEITED  # a new bond does not revive the old one
    # The defaulted agency is out; the new one detects and receives.
    with pytest.raises(NotPermitted):
        services.detection_record(actor=w.agency_officer, entrustment=entrustment,
                                  observations=flow.observations(), witness=w.witness)
    services.detection_record(actor=w.agency_b_officer, entrustment=entrustment,
                              observations=flow.observations(), witness=w.witness)
    services.custody_receive(actor=w.agency_b_officer, entrustment=entrustment, transfers=flow.custody_transfers())
    entrustment = flow.refresh()
    assert entrustment.state == S.IN_CUSTODY
    assert reconciliation(entrustment).problems == []


def test_a_default_cannot_be_declared_before_a_bond_or_after_the_proceeds_are_handed_over(flow):
    entrustment = flow.to("agency_appointed")
    with pytest.raises(DisposalError):
        services.entrustment_declare_agency_default(actor=flow.w.bce_approver, entrustment=entrustment, reason="x")
    with pytest.raises(DisposalError):
        services.entrustment_reopen_after_default(actor=flow.w.bce_approver, entrustment=entrustment, reason="x")
    assert flow.refresh().state == S.AGENCY_APPOINTED


# =========================================================================== dispute


@pytest.mark.parametrize("state", ["submitted", "in_custody", "selling", "credited"])
def test_a_dispute_suspends_the_entrustment_and_its_resolution_returns_it_where_it_was(flow, state):
    w = flow.w
    entrustment = flow.to(state)
    services.entrustment_open_dispute(actor=w.shunyi_approver, entrustment=entrustment,
                                      reason="A civil claimant in Hong Kong contests the sale.")
    entrustment = flow.refresh()
    assert entrustment.state == S.DISPUTED and entrustment.state_before_dispute == state
    with pytest.raises(DisposalError):
        services.entrustment_open_dispute(actor=w.bce_approver, entrustment=entrustment, reason="again")
    with pytest.raises(NotPermitted):
        services.entrustment_resolve_dispute(actor=w.shunyi_approver, entrustment=entrustment, reason="x")
    services.entrustment_resolve_dispute(actor=w.bce_approver, entrustment=entrustment,
                                         reason="The claim was dismissed.")
    entrustment = flow.refresh()
    assert entrustment.state == state and entrustment.state_before_dispute == ""
    assert [(e.from_state, e.to_state) for e in transitions(entrustment)][-2:] == [
        (state, S.DISPUTED), (S.DISPUTED, state)]
    assert flow.to("closed").state == S.CLOSED


def test_nothing_moves_while_a_dispute_is_open(flow):
    w = flow.w
    entrustment = flow.to("in_custody")
    services.entrustment_open_dispute(actor=w.bce_approver, entrustment=entrustment, reason="Claim filed.")
    with pytest.raises(DisposalError) as refused:
        services.lots_plan(actor=w.bce_officer, entrustment=entrustment)
    assert label(S.DISPUTED) in refused.value.message
    with pytest.raises(DisposalError):
        services.entrustment_cancel(actor=w.shunyi_approver, entrustment=entrustment, reason="x")
    assert flow.refresh().state == S.DISPUTED


# =========================================================================== partial execution


def test_an_award_the_platform_did_not_carry_out_goes_back_to_a_new_round_under_the_same_reserve(btc_flow):
    w = btc_flow.w
    btc_flow.to("selling")
    lot = only_lot(btc_flow)
    reserve = lot.current_reserve()
    quote_pair(btc_flow, lot, reserve.price + 100, reserve.price + 50)
    services.inquiry_close(actor=w.agency_officer, lot=lot)
    services.award_approve(actor=w.bce_approver, lot=lot)
    with pytest.raises(ValidationError):
        services.execution_fail(actor=w.agency_officer, lot=lot, reason=" ")
    with pytest.raises(NotPermitted):
        services.execution_fail(actor=w.bce_officer, lot=lot, reason="The quote expired.")
    services.execution_fail(actor=w.agency_officer, lot=lot, reason="OSL refused: the quote expired.")
    lot.refresh_from_db()
    # Not a failed round: the reserve was met; the venue did not carry the order out.
    assert lot.state == LotState.RESERVE_SET and lot.failed_rounds == 0 and lot.current_reserve() == reserve
    event = Event.objects.filter(type=EventType.LOT_TRANSITION, details__transition="fail_execution").get()
    assert event.reason == "OSL refused: the quote expired." and event.details["round"] == 1
    with pytest.raises(DisposalError):
        services.execution_fail(actor=w.agency_officer, lot=lot, reason="again")
    btc_flow.sell_lot(lot)  # a new round: new quotes, a new award and its own approval
    lot.refresh_from_db()
    assert lot.state == LotState.EXECUTED and lot.rounds.count() == 2
    assert lot.rounds.get(number=1).awarded_quote is not None and not lot.fills.filter(
        quote__round__number=1).exists()
    btc_flow.refresh()
    assert reconciliation(btc_flow.to("closed")).problems == []


def test_a_partial_execution_leaves_a_remainder_lot_that_is_sold_in_its_own_round(btc_flow):
    w = btc_flow.w
    btc_flow.to("selling")
    lot = only_lot(btc_flow)
    filled = lot.quantity * 3 // 5
    btc_flow.sell_lot(lot, filled=filled)
    lot.refresh_from_db()
    assert lot.state == LotState.PARTIALLY_EXECUTED
    remainder = lot.remainders.get()
    assert remainder.state == LotState.PLANNED
    assert remainder.parent == lot and remainder.quantity == lot.quantity - filled
    assert remainder.sequence == lot.sequence + 1
    entrustment = btc_flow.refresh()
    assert entrustment.state == S.SELLING and not entrustment.sale_complete()
    with pytest.raises(DisposalError):
        services.inquiry_open(actor=w.agency_officer, lot=remainder)  # no reserve yet
    btc_flow.propose_and_approve_reserve(remainder)
    remainder.refresh_from_db()
    assert remainder.state == LotState.RESERVE_SET
    btc_flow.sell_lot(remainder)
    remainder.refresh_from_db()
    assert remainder.state == LotState.EXECUTED
    assert btc_flow.refresh().state == S.SOLD
    entrustment = btc_flow.to("closed")
    recon = reconciliation(entrustment)
    assert recon.problems == []
    assert recon.coins[0].sold == lot.quantity


def test_the_remainder_of_a_partial_execution_keeps_the_failed_round_count(btc_flow):
    w = btc_flow.w
    btc_flow.to("selling")
    lot = fail_round(btc_flow, only_lot(btc_flow))
    lot = new_reserve(btc_flow, lot)
    btc_flow.sell_lot(lot, filled=lot.quantity // 2)
    remainder = lot.remainders.get()
    assert remainder.failed_rounds == 1
    btc_flow.propose_and_approve_reserve(remainder)
    remainder.refresh_from_db()
    assert remainder.state == LotState.RESERVE_SET and remainder.current_reserve().round_no == 2
    # Two more failures use up the policy's three rounds across the parent and its remainder.
    fail_round(btc_flow, remainder)
    new_reserve(btc_flow, remainder)
    remainder = fail_round(btc_flow, remainder)
    assert not remainder.rounds_left()
    with pytest.raises(DisposalError, match="no further round"):
        services.reserve_propose(actor=w.bce_officer, lot=remainder, price=cut_price(remainder, "0.1"), inputs={})
    services.lot_exhaust(actor=w.bce_approver, lot=remainder, reason="Three rounds without a deal.")
    assert btc_flow.refresh().state == S.SOLD  # what was filled is sold; the rest stays at the platform
