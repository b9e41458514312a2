"""N-of-M approvals for every action that moves value: reserve, bond forfeiture and release, FX.

The quorum is the jurisdiction policy's, per action; the preparer never counts; the same person twice is
refused; an approval is bound to the content it approved, and a change after it voids it.
"""

import importlib
from decimal import Decimal

import pytest
from django.utils import translation
from django.apps import apps

from agencies.models import BondState, Role
from cases import services
from cases.models import (
    Approval,
    DisposalPolicy,
    EntrustmentState as S,
    Event,
    EventType,
    LotState,
    default_quorums,
)
from cases.workflow import DisposalError, NotPermitted
from settlements import services as money
from settlements.models import OffshoreReceipt

from .factories import member
from .flow import REFERENCE_PRICES


def require_quorum(world, action: str, n: int):
    world.policy.quorums[action] = n
    world.policy.save()


def transitions(entrustment, name):
    return Event.objects.filter(entrustment=entrustment, type=EventType.TRANSITION, details__transition=name)



@pytest.fixture(autouse=True)
def english():
    # The refusals are matched by their English text; the page's language would otherwise be the default.
    with translation.override("en"):
        yield

# --------------------------------------------------------------------------- policy


def test_every_value_moving_action_has_a_quorum_in_the_default_policy():
    assert {"submit", "accept", "reserve", "award", "remittance", "victim_return", "close", "fx", "bond_release",
            "bond_forfeit", "whitelist"} <= set(default_quorums())
    assert all(n == 1 for n in default_quorums().values())


def test_the_data_migration_adds_the_new_actions_and_keeps_a_jurisdictions_own_numbers(world):
    DisposalPolicy.objects.filter(pk=world.policy.pk).update(quorums={"submit": 2, "fx": 3})
    migration = importlib.import_module("cases.migrations.0011_policy_quorums_for_new_actions")
    migration.add_missing(apps, None)
    world.policy.refresh_from_db()
    assert world.policy.quorums == {"submit": 2, "fx": 3, "bond_release": 1, "bond_forfeit": 1, "whitelist": 1}


# --------------------------------------------------------------------------- reserve: 2 of 3


@pytest.fixture
def planned_lot(flow):
    w = flow.w
    w.bce_approver_3 = member("bce_approver_3", w.bce, Role.APPROVER)
    flow.to("in_custody")
    services.lots_plan(actor=w.bce_officer, entrustment=flow.entrustment,
                       fee_allowances={w.btc.pk: 1_000, w.eth.pk: 21_000 * 10**9})
    lot = flow.entrustment.lots.get(asset=w.btc)
    return lot


def propose(flow, lot, price):
    services.reserve_propose(actor=flow.w.bce_officer, lot=lot, price=price,
                             inputs={"reference_prices": REFERENCE_PRICES["BTC"], "source": "Bitstamp daily close"})


def test_two_of_three_approvers_set_the_reserve_only_on_the_second_distinct_one(flow, planned_lot):
    w, lot = flow.w, planned_lot
    require_quorum(w, "reserve", 2)
    propose(flow, lot, "62000")
    services.reserve_approve(actor=w.bce_approver, lot=lot)
    lot.refresh_from_db()
    assert lot.state == LotState.PLANNED and lot.current_reserve() is None
    with pytest.raises(DisposalError, match="already approved"):
        services.reserve_approve(actor=w.bce_approver, lot=lot)
    lot.refresh_from_db()
    assert lot.state == LotState.PLANNED
    services.reserve_approve(actor=w.bce_approver_3, lot=lot)
    lot.refresh_from_db()
    assert lot.state == LotState.RESERVE_SET and lot.current_reserve().price == Decimal("62000")
    set_by = Event.objects.get(entrustment=flow.entrustment, type=EventType.LOT_TRANSITION,
                               details__transition="set_reserve")
    assert set_by.actor == w.bce_approver_3


def test_the_preparer_never_counts_even_when_they_are_also_an_approver(flow, planned_lot):
    w, lot = flow.w, planned_lot
    require_quorum(w, "reserve", 2)
    member("bce_officer", w.bce, Role.APPROVER)  # the officer who proposes also holds an approver's role
    propose(flow, lot, "62000")
    with pytest.raises(DisposalError, match="four eyes"):
        services.reserve_approve(actor=w.bce_officer, lot=lot)
    services.reserve_approve(actor=w.bce_approver, lot=lot)
    lot.refresh_from_db()
    assert lot.state == LotState.PLANNED
    assert not Approval.objects.filter(action="reserve", approver=w.bce_officer).exists()


def test_a_reserve_re_proposed_at_another_price_voids_the_approval_given_before(flow, planned_lot):
    w, lot = flow.w, planned_lot
    require_quorum(w, "reserve", 2)
    propose(flow, lot, "62000")
    services.reserve_approve(actor=w.bce_approver, lot=lot)
    propose(flow, lot, "62500")  # the same unapproved reserve, changed after one approval
    services.reserve_approve(actor=w.bce_approver_2, lot=lot)
    lot.refresh_from_db()
    assert lot.state == LotState.PLANNED  # the first approval was of 62000, not of what is proposed now
    services.reserve_approve(actor=w.bce_approver, lot=lot)  # approving the new content is a new approval
    lot.refresh_from_db()
    assert lot.state == LotState.RESERVE_SET and lot.current_reserve().price == Decimal("62500")


# --------------------------------------------------------------------------- bond forfeiture


def test_the_bond_is_forfeited_only_when_the_quorum_of_bce_approvers_declares_the_default(flow):
    w = flow.w
    require_quorum(w, "bond_forfeit", 2)
    entrustment = flow.to("detected")
    bond = entrustment.current_bond()
    services.entrustment_declare_agency_default(actor=w.bce_approver, entrustment=entrustment,
                                                reason="The agency stopped answering.")
    entrustment = flow.refresh()
    bond.refresh_from_db()
    assert entrustment.state == S.DETECTED and bond.state == BondState.POSTED
    given = Event.objects.get(entrustment=entrustment, type=EventType.APPROVAL_GIVEN,
                              details__action="bond_forfeit")
    assert given.actor == w.bce_approver and given.reason == "The agency stopped answering."
    with pytest.raises(DisposalError, match="already approved"):
        services.entrustment_declare_agency_default(actor=w.bce_approver, entrustment=entrustment, reason="again")
    with pytest.raises(NotPermitted):
        services.entrustment_declare_agency_default(actor=w.bce_officer, entrustment=entrustment, reason="x")
    services.entrustment_declare_agency_default(actor=w.bce_approver_2, entrustment=entrustment,
                                                reason="Confirmed: no answer for two days.")
    entrustment = flow.refresh()
    bond.refresh_from_db()
    assert entrustment.state == S.AGENCY_DEFAULT and bond.state == BondState.FORFEITED
    forfeited = Event.objects.get(entrustment=entrustment, type=EventType.BOND_FORFEITED)
    assert forfeited.actor == w.bce_approver_2


def test_an_approval_to_forfeit_given_before_the_file_moved_on_no_longer_counts(flow):
    w = flow.w
    require_quorum(w, "bond_forfeit", 2)
    entrustment = flow.to("bonded")
    services.entrustment_declare_agency_default(actor=w.bce_approver, entrustment=entrustment, reason="Late.")
    flow.to("detected")  # the agency acted after all: what was approved (a default while bonded) is gone
    services.entrustment_declare_agency_default(actor=w.bce_approver_2, entrustment=flow.entrustment,
                                                reason="Late.")
    assert flow.refresh().state == S.DETECTED
    assert flow.entrustment.current_bond().state == BondState.POSTED


def test_no_approval_is_recorded_where_no_default_can_be_declared(flow):
    entrustment = flow.to("agency_appointed")
    with pytest.raises(DisposalError):
        services.entrustment_declare_agency_default(actor=flow.w.bce_approver, entrustment=entrustment, reason="x")
    assert not Approval.objects.filter(action="bond_forfeit").exists()


# --------------------------------------------------------------------------- bond release on cancellation


def test_a_cancelled_entrustments_bond_is_released_on_the_bond_release_quorum(flow):
    w = flow.w
    require_quorum(w, "bond_release", 2)
    entrustment = flow.to("bonded")
    services.entrustment_cancel(actor=w.shunyi_approver, entrustment=entrustment, reason="The court stayed it.")
    entrustment = flow.refresh()
    assert entrustment.state == S.CANCELLED
    assert entrustment.current_bond().state == BondState.POSTED
    assert not Event.objects.filter(entrustment=entrustment, type=EventType.BOND_RELEASED).exists()
    with pytest.raises(DisposalError, match="already approved"):
        services.bond_release_approve(actor=w.shunyi_approver, entrustment=entrustment)
    with pytest.raises(NotPermitted):
        services.bond_release_approve(actor=w.bce_approver, entrustment=entrustment)
    services.bond_release_approve(actor=w.shunyi_approver_2, entrustment=entrustment, reason="Agreed.")
    entrustment = flow.refresh()
    assert entrustment.current_bond().state == BondState.RELEASED
    assert Event.objects.get(entrustment=entrustment, type=EventType.BOND_RELEASED).actor == w.shunyi_approver_2
    with pytest.raises(DisposalError):
        services.bond_release_approve(actor=w.shunyi_approver_2, entrustment=entrustment)


def test_no_bond_is_released_outside_a_cancellation(flow):
    entrustment = flow.to("bonded")
    with pytest.raises(DisposalError):
        services.bond_release_approve(actor=flow.w.shunyi_approver, entrustment=entrustment)
    assert flow.refresh().current_bond().state == BondState.POSTED


# --------------------------------------------------------------------------- FX application


@pytest.fixture
def agency_approvers(world):
    return [member(f"agency_approver_{n}", world.agency, Role.APPROVER) for n in (1, 2, 3)]


def test_the_fx_application_is_approved_on_the_second_distinct_agency_approver(flow, agency_approvers):
    w = flow.w
    first, second, _third = agency_approvers
    require_quorum(w, "fx", 2)
    entrustment = flow.to("proceeds_received")
    assert not money.fx_application_approved(entrustment)
    with pytest.raises(NotPermitted):
        money.fx_application_approve(actor=w.agency_officer, entrustment=entrustment)
    money.fx_application_approve(actor=first, entrustment=entrustment)
    assert not money.fx_application_approved(entrustment)
    with pytest.raises(DisposalError, match="already approved"):
        money.fx_application_approve(actor=first, entrustment=entrustment)
    money.fx_application_approve(actor=second, entrustment=entrustment)
    assert money.fx_application_approved(flow.refresh())
    step = Event.objects.get(entrustment=entrustment, type=EventType.SETTLEMENT_RECORDED,
                             details__step="fx_application_approved")
    assert step.actor == second
    assert step.details["received"] == [[r.currency, str(r.amount)] for r in entrustment.offshore_receipts.all()]
    with pytest.raises(DisposalError, match="already approved"):
        money.fx_application_approve(actor=_third, entrustment=entrustment)
    assert flow.refresh().state == S.PROCEEDS_RECEIVED  # approving changes no state: the bank's answer does


def test_a_change_of_the_offshore_amounts_after_approval_voids_it(flow, agency_approvers):
    entrustment = flow.to("proceeds_received")
    money.fx_application_approve(actor=agency_approvers[0], entrustment=entrustment)
    assert money.fx_application_approved(entrustment)
    receipt = entrustment.offshore_receipts.first()
    # Whatever way the amount came to differ, the approval was of the old one.
    OffshoreReceipt.objects.filter(pk=receipt.pk).update(amount=receipt.amount - Decimal("0.01"))
    assert not money.fx_application_approved(flow.refresh())


def test_a_rejected_fx_application_needs_a_fresh_approval_when_resubmitted(flow, agency_approvers):
    w = flow.w
    entrustment = flow.to("proceeds_received")
    money.fx_application_approve(actor=agency_approvers[0], entrustment=entrustment)
    currency = entrustment.offshore_receipts.first().currency
    money.fx_record_rejection(actor=w.agency_officer, entrustment=entrustment, currency=currency,
                              reason="SAFE asked for the judgment.")
    money.fx_resubmit(actor=w.agency_officer, entrustment=entrustment, reason="Judgment attached.")
    entrustment = flow.refresh()
    assert entrustment.state == S.PROCEEDS_RECEIVED and not money.fx_application_approved(entrustment)
    money.fx_application_approve(actor=agency_approvers[0], entrustment=entrustment)  # the new application
    assert money.fx_application_approved(entrustment)


def test_fx_is_recorded_only_once_the_fx_application_holds_its_quorum(flow, agency_approvers):
    w = flow.w
    require_quorum(w, "fx", 2)
    entrustment = flow.to("proceeds_received")
    receipt = entrustment.offshore_receipts.first()

    def record():
        return money.fx_record_approval(actor=w.agency_officer, entrustment=entrustment, currency=receipt.currency,
                                        approval_reference="SAFE-1", bop_declaration_no="BOP-1", rate=flow.RATE,
                                        amount_cny=(receipt.amount * flow.RATE).quantize(Decimal("0.01")),
                                        slip_reference="FX-SLIP-1")

    with pytest.raises(DisposalError, match="FX application is not approved"):
        record()
    money.fx_application_approve(actor=agency_approvers[0], entrustment=entrustment)
    with pytest.raises(DisposalError, match="FX application is not approved"):
        record()  # one of two
    assert not entrustment.fx_conversions.exists()
    money.fx_application_approve(actor=agency_approvers[1], entrustment=entrustment)
    record()
    assert flow.refresh().state == S.FX_CLEARED


def test_fx_is_approved_only_once_the_proceeds_are_received(flow, agency_approvers):
    entrustment = flow.to("sold")
    with pytest.raises(DisposalError):
        money.fx_application_approve(actor=agency_approvers[0], entrustment=entrustment)
    assert not Approval.objects.filter(action="fx").exists()
