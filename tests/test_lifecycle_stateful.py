"""Random sequences of actions by random people keep every invariant of the lifecycle.

A hypothesis state machine drives one entrustment through the real services (not HTTP). It starts
from a random point of the happy path (driven there by `Flow`) and then takes random steps: a random
action by a random persona, with the right parameters about half of the time and wrong ones otherwise.
Every step either succeeds or is refused with DisposalError/ValidationError (NotPermitted is a
DisposalError); anything else fails the test. After every step the invariants below are checked.

Each example runs in a savepoint of the test's transaction, rolled back at its end.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from agencies.models import Appointment, Membership, PerformanceBond, Role
from cases import services
from cases.demo import demo_address
from cases.models import (Approval, CoinTransfer, Detection, Entrustment, EntrustmentState, Event, EventType, Fill,
                          InquiryRound, Lot, LotState, Quote, ReservePrice, TransferKind, TransferStatus)
from cases.selectors import reconciliation
from cases.services import FillRecord, TransferRecord, custody_balance
from cases.workflow import DisposalError
from settlements import services as money
from settlements.models import (FxConversion, FxOutcome, OffshoreReceipt, SpecialAccountCredit, TreasuryRemittance,
                                VictimReturn)

from .factories import VALUATION, member
from .flow import FEE, Flow

PEOPLE = ["shunyi_officer", "shunyi_approver", "shunyi_dual", "chaoyang_officer", "bce_officer", "bce_approver",
          "bce_dual", "agency_officer", "agency_approver", "agency_b_officer", "supervisor", "stranger"]
STARTS = ["draft", "submitted", "accepted", "bonded", "detected", "in_custody", "reserve_set", "transferring",
          "at_platform", "selling", "sold", "proceeds_received", "fx_cleared", "credited", "remitted"]
REASONS = st.sampled_from(["市场剧烈波动", "", "   ", "x" * 300, "原因\x00"])


def snapshot(e: Entrustment) -> tuple:
    """Everything a step could change, as comparable values."""
    e = Entrustment.objects.get(pk=e.pk)
    return (
        e.state, e.agency_id, e.platform_id, e.history.count(),
        Event.objects.count(), Approval.objects.count(), Detection.objects.count(),
        tuple(Lot.objects.filter(entrustment=e).order_by("pk").values_list("pk", "state", "quantity", "failed_rounds")),
        tuple(ReservePrice.objects.order_by("pk").values_list("pk", "price", "approved_at")),
        tuple(InquiryRound.objects.order_by("pk").values_list("pk", "closed_at", "awarded_quote_id")),
        Quote.objects.count(), Fill.objects.count(),
        tuple(CoinTransfer.objects.order_by("pk").values_list("pk", "status", "amount", "network_fee", "txid")),
        tuple(Appointment.objects.order_by("pk").values_list("pk", "is_current")),
        tuple(PerformanceBond.objects.order_by("pk").values_list("pk", "posted_cny")),
        OffshoreReceipt.objects.count(), tuple(FxConversion.objects.order_by("pk").values_list("pk", "outcome")),
        SpecialAccountCredit.objects.count(),
        tuple(TreasuryRemittance.objects.order_by("pk").values_list("pk", "approved_at", "remitted_at")),
        tuple(VictimReturn.objects.order_by("pk").values_list("pk", "approved_at")),
    )


def collapse(states):
    out = []
    for s in states:
        if not out or out[-1] != s:
            out.append(s)
    return out


class Lifecycle(RuleBasedStateMachine):
    world = None  # set by the test: the personas, built once

    def __init__(self):
        super().__init__()
        self.atomic = transaction.atomic()
        self.atomic.__enter__()
        self.w = self.world
        self.people = {name: self.w.__dict__.get(name) for name in PEOPLE}
        self.people["shunyi_dual"], self.people["bce_dual"] = self.world.shunyi_dual, self.world.bce_dual
        self.flow = None
        self.events_seen: list[tuple] = []
        self.steps = {"ok": 0, "refused": 0}

    def teardown(self):
        transaction.set_rollback(True)
        self.atomic.__exit__(None, None, None)

    # ----------------------------------------------------------------- helpers

    @property
    def e(self) -> Entrustment:
        return self.flow.refresh()

    def person(self, data, right: str):
        """The person whose job it is, about half of the time; anybody otherwise."""
        name = data.draw(st.one_of(st.just(right), st.sampled_from(PEOPLE)), label="actor")
        return self.people[name]

    @staticmethod
    def choose(data, right, *wrong, label="value"):
        return data.draw(st.one_of(st.just(right), st.sampled_from(list(wrong))) if wrong else st.just(right),
                         label=label)

    def lot(self, data):
        lots = list(Lot.objects.filter(entrustment=self.flow.entrustment).select_related("asset").order_by("pk"))
        return data.draw(st.sampled_from(lots), label="lot") if lots else None

    def attempt(self, call):
        before = snapshot(self.flow.entrustment)
        try:
            call()
        except (DisposalError, ValidationError):
            self.steps["refused"] += 1
            assert snapshot(self.flow.entrustment) == before, "a refused step changed something"
        else:
            self.steps["ok"] += 1

    # ----------------------------------------------------------------- the start

    @initialize(start=st.sampled_from(STARTS))
    def start(self, start):
        self.flow = Flow(self.w)
        self.flow.to(start)
        self.events_seen = list(Event.objects.order_by("id").values_list("id", "type", "to_state", "reason",
                                                                         "created_at"))

    # ----------------------------------------------------------------- the steps

    @rule(data=st.data(), action=st.sampled_from([
        "submit", "return", "accept", "refuse", "appoint", "bond", "detect", "accept_observed", "custody",
        "plan_lots", "propose_reserve", "approve_reserve", "transfer", "deposit_confirm", "transfer_fail",
        "aml_hold", "inquiry_open", "quote", "inquiry_close", "award_approve", "execute", "exhaust", "suspend",
        "offshore_receipt", "fx_application_approve", "fx_approve", "fx_reject", "fx_resubmit", "credit",
        "victim_return_prepare", "victim_return_approve", "remittance_prepare", "remittance_approve", "close",
        "cancel", "default", "reopen", "dispute_open", "dispute_resolve"]))
    def act(self, data, action):
        self.attempt(lambda: getattr(self, f"do_{action}")(data))

    def do_submit(self, d):
        services.entrustment_submit(actor=self.person(d, "shunyi_approver"), entrustment=self.e)

    def do_return(self, d):
        services.entrustment_return(actor=self.person(d, "bce_officer"), entrustment=self.e, reason=d.draw(REASONS))

    def do_accept(self, d):
        services.entrustment_accept(actor=self.person(d, "bce_approver"), entrustment=self.e)

    def do_refuse(self, d):
        services.entrustment_refuse(actor=self.person(d, "bce_approver"), entrustment=self.e, reason=d.draw(REASONS))

    def do_appoint(self, d):
        agency = self.choose(d, self.w.agency, self.w.agency_b, self.w.hk_bank, self.w.shunyi, label="agency")
        services.agency_appoint(actor=self.person(d, "bce_officer"), entrustment=self.e, agency=agency,
                                valuation_cny=self.choose(d, VALUATION, Decimal("-1"), Decimal("0"), "NaN", "1e9"),
                                valuation_source=self.choose(d, "CMC", ""), qualification_note="licensed",
                                capacity_note="HSM", conflicts_declared="none")

    def do_bond(self, d):
        posted = self.choose(d, VALUATION * Decimal("1.1"), VALUATION, Decimal("-5"), "abc", VALUATION * 10)
        services.bond_post(actor=self.person(d, "bce_officer"), entrustment=self.e, posted_cny=posted,
                           reference=self.choose(d, "BG-1", ""))

    def do_detect(self, d):
        e = self.e
        overrides = {}
        for h in e.holdings.select_related("asset"):
            overrides[h.asset.symbol] = self.choose(d, h.declared_amount, h.declared_amount - 1, h.declared_amount + 7,
                                                    0, -1, label="observed")
        observations = self.flow.observations(**overrides)
        if d.draw(st.booleans(), label="uncontrolled"):
            observations[0] = dataclasses.replace(observations[0], controlled=False)
        services.detection_record(actor=self.person(d, "agency_officer"), entrustment=e, observations=observations,
                                  witness=self.choose(d, self.w.witness, self.w.osl))

    def do_accept_observed(self, d):
        services.detection_accept_observed(actor=self.person(d, "shunyi_approver"), entrustment=self.e,
                                           reason=d.draw(REASONS))

    def do_custody(self, d):
        transfers = self.flow.custody_transfers() if self.e.holdings.filter(accepted_amount__gt=0).exists() else []
        transfers = [dataclasses.replace(
            t, amount=self.choose(d, t.amount, t.amount + FEE[t.asset.symbol] + 1, 0, -5, label="amount"),
            txid=self.choose(d, t.txid, "", label="txid")) for t in transfers]
        services.custody_receive(actor=self.person(d, "agency_officer"), entrustment=self.e, transfers=transfers)

    def do_plan_lots(self, d):
        e = self.e
        assets = {h.asset for h in e.holdings.select_related("asset")}
        fees = {a.pk: self.choose(d, FEE[a.symbol], -1, 10**30, label="fee") for a in assets}
        caps = d.draw(st.sampled_from([None, "half", "zero"]), label="caps")
        tranche = None
        if caps:
            tranche = {a.pk: (custody_balance(e, a) // 2 if caps == "half" else 0) or 1 for a in assets}
            if caps == "zero":
                tranche = {a.pk: 0 for a in assets}
        services.lots_plan(actor=self.person(d, "bce_officer"), entrustment=e, fee_allowances=fees,
                           tranche_caps=tranche)

    def do_propose_reserve(self, d):
        lot = self.lot(d)
        if lot is None:
            return
        prices = ["60000", "61000", "62000"] if lot.asset.symbol == "BTC" else ["3000", "3100", "3200"]
        last = lot.reserves.exclude(approved_at=None).order_by("-round_no").first()
        good = max(Decimal(p) for p in prices) if last is None else (last.price * Decimal("0.85")).quantize(
            Decimal("0.01"))
        price = self.choose(d, good, Decimal("1"), Decimal("-3"), good * 100, "NaN", label="price")
        inputs = self.choose(d, {"reference_prices": prices, "source": "Bitstamp"}, {}, {"reference_prices": ["x"]},
                             label="inputs")
        services.reserve_propose(actor=self.person(d, "bce_officer"), lot=lot, price=price, inputs=inputs)

    def do_approve_reserve(self, d):
        lot = self.lot(d)
        if lot is not None:
            services.reserve_approve(actor=self.person(d, "bce_approver"), lot=lot)

    def do_transfer(self, d):
        e = self.e
        deposits = []
        for asset in {h.asset for h in e.holdings.select_related("asset")}:
            fee = FEE[asset.symbol]
            amount = custody_balance(e, asset) - fee
            deposits.append(TransferRecord(holding=None, asset=asset,
                                           to_address=demo_address(asset.address_format, f"osl-{asset.symbol}"),
                                           amount=self.choose(d, amount, amount + fee + 1, 1, -1, label="deposit"),
                                           network_fee=self.choose(d, fee, -1, label="fee"), txid="",
                                           from_address="custody"))
        services.platform_transfer_instruct(actor=self.person(d, "agency_officer"), entrustment=e,
                                            platform=self.choose(d, self.w.osl, self.w.hk_bank, label="platform"),
                                            deposits=deposits)

    def do_deposit_confirm(self, d):
        e = self.e
        txids = {t.reference: self.choose(d, f"tx-{t.reference}", "", label="txid")
                 for t in e.transfers.filter(kind=TransferKind.TO_PLATFORM)}
        services.platform_deposit_confirm(actor=self.person(d, "agency_officer"), entrustment=e, txids=txids)

    def do_transfer_fail(self, d):
        services.platform_transfer_fail(actor=self.person(d, "agency_officer"), entrustment=self.e,
                                        reason=d.draw(REASONS))

    def do_aml_hold(self, d):
        services.platform_aml_hold(actor=self.person(d, "agency_officer"), entrustment=self.e, reason=d.draw(REASONS))

    def do_inquiry_open(self, d):
        lot = self.lot(d)
        if lot is not None:
            services.inquiry_open(actor=self.person(d, "agency_officer"), lot=lot)

    def do_quote(self, d):
        lot = self.lot(d)
        if lot is None:
            return
        reserve = lot.current_reserve()
        base = reserve.price if reserve else Decimal("60000")
        now = timezone.now()
        price = self.choose(d, base + 100, base - 1, Decimal("-1"), Decimal("0"), label="quote price")
        services.quote_record(actor=self.person(d, "agency_officer"), lot=lot,
                              platform=self.choose(d, self.w.osl, self.w.hashkey, self.w.hk_bank, label="platform"),
                              reference=f"q-{d.draw(st.integers(0, 5), label='ref')}", price=price,
                              quantity=self.choose(d, lot.quantity, 0, -1, label="quantity"), quoted_at=now,
                              expires_at=now + timedelta(seconds=self.choose(d, 30, -30, label="expiry")))

    def do_inquiry_close(self, d):
        lot = self.lot(d)
        if lot is not None:
            services.inquiry_close(actor=self.person(d, "agency_officer"), lot=lot)

    def do_award_approve(self, d):
        lot = self.lot(d)
        if lot is not None:
            services.award_approve(actor=self.person(d, "bce_approver"), lot=lot)

    def do_execute(self, d):
        lot = self.lot(d)
        if lot is None:
            return
        reserve = lot.current_reserve()
        price = (reserve.price if reserve else Decimal("60000")) + self.choose(d, Decimal("100"), Decimal("-1"),
                                                                              label="premium")
        quantity = self.choose(d, lot.quantity, lot.quantity // 2 or 1, lot.quantity + 1, 0, label="filled")
        gross = (Decimal(quantity) / lot.asset.unit * price).quantize(Decimal("0.01"))
        fee = self.choose(d, (gross * Decimal("0.001")).quantize(Decimal("0.01")), Decimal("-1"), label="fee")
        services.execution_record(actor=self.person(d, "agency_officer"), lot=lot, fills=[FillRecord(
            trade_id=f"T{lot.pk}-{d.draw(st.integers(0, 3), label='trade')}", quantity=quantity, price=price,
            gross=gross, fee=fee, executed_at=timezone.now())])

    def do_exhaust(self, d):
        lot = self.lot(d)
        if lot is not None:
            services.lot_exhaust(actor=self.person(d, "bce_approver"), lot=lot, reason=d.draw(REASONS))

    def do_suspend(self, d):
        lot = self.lot(d)
        if lot is not None:
            services.lot_suspend(actor=self.person(d, "agency_officer"), lot=lot, reason=d.draw(REASONS))

    def do_offshore_receipt(self, d):
        from cases.models import net_proceeds_by_currency

        e = self.e
        owed = net_proceeds_by_currency(e) or {"USD": Decimal("100.00")}
        currency, amount = d.draw(st.sampled_from(sorted(owed.items())), label="receipt")
        money.offshore_receipt_record(
            actor=self.person(d, "agency_officer"), entrustment=e, bank=self.choose(d, self.w.hk_bank, self.w.osl),
            currency=self.choose(d, currency, "EUR", "", label="currency"),
            amount=self.choose(d, amount, amount + Decimal("0.01"), Decimal("-1"), "1e5", label="amount"),
            bank_reference=self.choose(d, f"HKB-{e.pk}-{currency}", "", label="ref"), value_date=timezone.localdate())

    def do_fx_application_approve(self, d):
        money.fx_application_approve(actor=self.person(d, "agency_approver"), entrustment=self.e)

    def do_fx_approve(self, d):
        e = self.e
        receipts = list(e.offshore_receipts.all())
        receipt = d.draw(st.sampled_from(receipts), label="receipt") if receipts else None
        currency, amount = (receipt.currency, receipt.amount) if receipt else ("USD", Decimal("1"))
        rate = self.choose(d, Flow.RATE, Decimal("0"), Decimal("-7"), label="rate")
        cny = (amount * Flow.RATE).quantize(Decimal("0.01"))
        money.fx_record_approval(actor=self.person(d, "agency_officer"), entrustment=e, currency=currency,
                                 approval_reference="SAFE-1", bop_declaration_no="BOP-1", rate=rate,
                                 amount_cny=self.choose(d, cny, cny + 1, Decimal("-1"), label="cny"),
                                 slip_reference="FX-SLIP-1")

    def do_fx_reject(self, d):
        money.fx_record_rejection(actor=self.person(d, "agency_officer"), entrustment=self.e,
                                  currency=self.choose(d, "USD", "XXX"), reason=d.draw(REASONS))

    def do_fx_resubmit(self, d):
        money.fx_resubmit(actor=self.person(d, "agency_officer"), entrustment=self.e, reason=d.draw(REASONS))

    def do_credit(self, d):
        cny = self.flow.cny() if self.e.fx_conversions.filter(outcome="approved").exists() else Decimal("1")
        money.special_account_credit_record(actor=self.person(d, "shunyi_officer"), entrustment=self.e,
                                            amount_cny=self.choose(d, cny, cny + 1, Decimal("-1"), label="cny"),
                                            slip_reference=self.choose(d, "CR-1", "", label="slip"))

    def do_victim_return_prepare(self, d):
        money.victim_return_prepare(actor=self.person(d, "shunyi_officer"), entrustment=self.e, recipient="受害人",
                                    recipient_account="6222", basis=self.choose(d, "判决", "", label="basis"),
                                    amount_cny=self.choose(d, Decimal("100.00"), Decimal("-1"), Decimal("1e12"),
                                                           label="amount"))

    def do_victim_return_approve(self, d):
        returns = list(VictimReturn.objects.filter(entrustment=self.flow.entrustment))
        if returns:
            money.victim_return_approve(actor=self.person(d, "shunyi_approver"),
                                        victim_return=d.draw(st.sampled_from(returns), label="return"))

    def do_remittance_prepare(self, d):
        e = self.e
        money.remittance_prepare(actor=self.person(d, "shunyi_officer"), entrustment=e,
                                 payment_code=self.choose(d, f"{e.pk:020d}", "123", "a" * 20, "１" * 20))

    def do_remittance_approve(self, d):
        money.remittance_approve(actor=self.person(d, "shunyi_approver"), entrustment=self.e,
                                 treasury_receipt=self.choose(d, "TR-1", ""))

    def do_close(self, d):
        money.entrustment_close(actor=self.person(d, "bce_approver"), entrustment=self.e)

    def do_cancel(self, d):
        services.entrustment_cancel(actor=self.person(d, "shunyi_approver"), entrustment=self.e, reason=d.draw(REASONS))

    def do_default(self, d):
        services.entrustment_declare_agency_default(actor=self.person(d, "bce_approver"), entrustment=self.e,
                                                    reason=d.draw(REASONS))

    def do_reopen(self, d):
        services.entrustment_reopen_after_default(actor=self.person(d, "bce_approver"), entrustment=self.e,
                                                  reason=d.draw(REASONS))

    def do_dispute_open(self, d):
        services.entrustment_open_dispute(actor=self.person(d, "shunyi_approver"), entrustment=self.e,
                                          reason=d.draw(REASONS))

    def do_dispute_resolve(self, d):
        services.entrustment_resolve_dispute(actor=self.person(d, "bce_approver"), entrustment=self.e,
                                             reason=d.draw(REASONS))

    # ----------------------------------------------------------------- the invariants

    @invariant()
    def states_are_the_machines(self):
        if self.flow is None:
            return
        e = self.e
        assert e.state in EntrustmentState.values
        assert set(Lot.objects.filter(entrustment=e).values_list("state", flat=True)) <= set(LotState.values)

    @invariant()
    def every_state_change_has_its_history_row_and_event(self):
        if self.flow is None:
            return
        e = self.e
        history = collapse(e.history.order_by("history_id").values_list("state", flat=True))
        transitions = list(Event.objects.filter(entrustment=e, type=EventType.TRANSITION).order_by("id")
                           .values_list("from_state", "to_state"))
        for (_, previous_to), (next_from, _) in zip(transitions, transitions[1:]):
            assert next_from == previous_to, transitions
        assert history == collapse([EntrustmentState.DRAFT] + [to for _, to in transitions]), (history, transitions)
        assert history[-1] == e.state

    @invariant()
    def events_are_append_only_and_ordered(self):
        if self.flow is None:
            return
        now = list(Event.objects.order_by("id").values_list("id", "type", "to_state", "reason", "created_at"))
        assert now[:len(self.events_seen)] == self.events_seen, "an event was changed or deleted"
        times = [row[4] for row in now]
        assert times == sorted(times)
        self.events_seen = now

    @invariant()
    def coins_are_conserved(self):
        if self.flow is None:
            return
        e = self.e
        recon = reconciliation(e)
        for line in recon.coins:
            assert line.held_at_seizure >= 0 and line.held_in_custody >= 0 and line.held_at_platform >= 0, line
            assert custody_balance(e, line.asset) >= 0
            lots = Lot.objects.filter(entrustment=e, asset=line.asset)
            planned = lots.filter(parent=None).aggregate(s=Sum("quantity"))["s"] or 0
            custody_fees = sum(CoinTransfer.objects.filter(entrustment=e, asset=line.asset, kind=TransferKind.TO_CUSTODY,
                                                           status=TransferStatus.CONFIRMED)
                               .values_list("network_fee", flat=True))
            assert planned <= line.to_custody, (planned, line.to_custody, custody_fees)
            for lot in lots:
                filled = sum(lot.fills.values_list("quantity", flat=True))
                assert 0 <= filled <= lot.quantity, (lot.pk, filled, lot.quantity)
            assert line.sold <= line.to_platform

    @invariant()
    def money_is_never_negative_and_reconciliation_agrees(self):
        if self.flow is None:
            return
        e = self.e
        zero = Decimal("0")
        for gross, fee in Fill.objects.filter(lot__entrustment=e).values_list("gross", "fee"):
            assert gross > zero and fee >= zero and fee <= gross
        for model, field in ((OffshoreReceipt, "amount"), (FxConversion, "amount_foreign"),
                             (SpecialAccountCredit, "amount_cny"), (TreasuryRemittance, "amount_cny"),
                             (VictimReturn, "amount_cny")):
            assert all(v is None or v >= zero for v in model.objects.filter(entrustment=e).values_list(field, flat=True))
        recon = reconciliation(e)
        converted = sum(FxConversion.objects.filter(entrustment=e, outcome=FxOutcome.APPROVED)
                        .values_list("amount_cny", flat=True), zero)
        credited = sum(SpecialAccountCredit.objects.filter(entrustment=e).values_list("amount_cny", flat=True), zero)
        remitted = sum(TreasuryRemittance.objects.filter(entrustment=e, remitted_at__isnull=False)
                       .values_list("amount_cny", flat=True), zero)
        returned = sum(VictimReturn.objects.filter(entrustment=e, approved_at__isnull=False)
                       .values_list("amount_cny", flat=True), zero)
        assert (recon.converted_cny, recon.credited_cny, recon.remitted_cny, recon.returned_cny) == (
            converted, credited, remitted, returned)
        assert credited <= converted and remitted + returned <= credited
        for line in recon.money:
            fills = Fill.objects.filter(lot__entrustment=e, currency=line.currency)
            assert line.net_proceeds == sum((f.gross - f.fee for f in fills), zero)
        if e.state == EntrustmentState.CLOSED:
            assert recon.problems == []

    @invariant()
    def the_preparer_never_counts_as_an_approver(self):
        if self.flow is None:
            return
        e = self.flow.entrustment
        preparers = {"submit": lambda pk: Entrustment.objects.get(pk=pk).prepared_by_id,
                     "reserve": lambda pk: ReservePrice.objects.get(pk=pk).proposed_by_id,
                     "award": lambda pk: InquiryRound.objects.get(pk=pk).award_prepared_by_id,
                     "victim_return": lambda pk: VictimReturn.objects.get(pk=pk).prepared_by_id,
                     "remittance": lambda pk: TreasuryRemittance.objects.get(pk=pk).prepared_by_id}
        for action, subject, approver in Approval.objects.filter(entrustment=e).values_list("action", "subject",
                                                                                           "approver_id"):
            if action in preparers:
                assert preparers[action](int(subject.split(":")[1])) != approver, (action, subject)
        for r in VictimReturn.objects.filter(entrustment=e, approved_at__isnull=False):
            assert Approval.objects.filter(action="victim_return", subject=f"return:{r.pk}").exclude(
                approver_id=r.prepared_by_id).exists()
        for r in TreasuryRemittance.objects.filter(entrustment=e, approved_at__isnull=False):
            assert Approval.objects.filter(action="remittance", subject=f"remittance:{r.pk}").exclude(
                approver_id=r.prepared_by_id).exists()


def test_random_actions_by_random_people_keep_every_invariant(world):
    world.shunyi_dual = member("shunyi_dual", world.shunyi, Role.OFFICER)
    Membership.objects.create(user=world.shunyi_dual, organisation=world.shunyi, role=Role.APPROVER)
    world.bce_dual = member("bce_dual", world.bce, Role.OFFICER)
    Membership.objects.create(user=world.bce_dual, organisation=world.bce, role=Role.APPROVER)
    Lifecycle.world = world
    run_state_machine_as_test(Lifecycle, settings=settings(
        max_examples=40, stateful_step_count=30, deadline=None, derandomize=True, database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]))
