"""The bank side of the workers against the emulated bank on 127.0.0.1: the platform's credits per lot, the FX
settlement (结汇) into the special account, and the treasury payment, each recorded through the services with
exact amounts; and what the bank can get wrong (wrong amounts, repeats, outages, lost answers, refusals,
unreadable documents)."""

from decimal import ROUND_HALF_UP, Decimal

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone, translation

from cases.models import EntrustmentState as S
from cases.models import net_proceeds_by_currency
from cases.workflow import DisposalError
from counterparties import bank_tasks, settling
from counterparties.errors import IndeterminateResult, TransientError
from counterparties.models import ExceptionKind, Job, JobState, OperationalException
from emulators.bank import start_bank_emulator
from settlements import services as money
from settlements.models import FxOutcome

OFFSHORE = "HK-012-345678-838"
SPECIAL = "110100000000009999"
TREASURY = "270001040000000001"
RATE = Decimal("7.1234")
TOKEN = "bank-worker-token"


@pytest.fixture(autouse=True)
def english():
    """The messages are asserted in English (the source strings), whatever the portal's language."""
    with translation.override("en"):
        yield


@pytest.fixture
def bank(world, monkeypatch):
    """The emulated bank, holding the agency's offshore USD account, the bureau's special account and the
    treasury's, and the portal configured to reach it."""
    world.agency.offshore_account_no = OFFSHORE
    world.agency.save()
    world.shunyi.special_account_no = SPECIAL
    world.shunyi.save()
    base_url, emulator = start_bank_emulator(token=TOKEN)
    emulator.open_account(OFFSHORE, "USD", world.agency.name)
    emulator.open_account(SPECIAL, "CNY", world.shunyi.name)
    emulator.open_treasury_account(TREASURY, "国家金库北京市分库")
    emulator.set_fx_rate("USD", RATE)
    for name in ("PORTAL_BANK_DROP_DIR", "PORTAL_SECRETS_FILE", "PORTAL_BANK_ORG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PORTAL_BANK_URL", base_url)
    monkeypatch.setenv("PORTAL_BANK_TOKEN", TOKEN)
    monkeypatch.setenv("PORTAL_BANK_TIMEOUT", "0.5")
    monkeypatch.setenv("PORTAL_TREASURY_ACCOUNT", TREASURY)
    yield emulator
    emulator.stop()


def lot_net(lot) -> Decimal:
    return sum((f.gross - f.fee for f in lot.fills.all()), Decimal("0"))


def settle_lots(flow, emulator, lots=None):
    """The platform settles each sold lot's net proceeds, under the lot's client order id."""
    for lot in lots or flow.entrustment.lots.order_by("sequence"):
        emulator.credit(OFFSHORE, lot_net(lot), "USD",
                        end_to_end_id=f"{flow.entrustment.number}-L{lot.sequence}-R{lot.current_round().number}",
                        remittance="SETTLEMENT")


def bank_exceptions(entrustment=None):
    rows = OperationalException.objects.filter(kind=ExceptionKind.BANK, resolved_at__isnull=True)
    return rows.filter(entrustment=entrustment) if entrustment is not None else rows


def cursor():
    found = Job.objects.filter(key="bank-cursor:hk-bank").first()
    return found.result.get("cursor") if found else None


def to_proceeds_received(flow, emulator):
    flow.to("sold")
    settle_lots(flow, emulator)
    settling.poll_bank_statements()
    return flow.refresh()


def to_credited(flow, emulator):
    entrustment = to_proceeds_received(flow, emulator)
    flow.approve_fx()
    settling.request_fx(entrustment.pk)
    emulator.book_payments()
    settling.poll_bank_statements()
    return flow.refresh()


# =========================================================================== the offshore receipt, in several credits


def test_several_credits_of_one_currency_add_up_to_the_proceeds_and_an_excess_is_refused(flow):
    w = flow.w
    entrustment = flow.to("sold")
    net = net_proceeds_by_currency(entrustment)["USD"]
    first = (net / 3).quantize(Decimal("0.01"))

    def credit(amount, ref):
        return money.offshore_receipt_record(actor=w.agency_officer, entrustment=entrustment, bank=w.hk_bank,
                                             currency="USD", amount=amount, bank_reference=ref,
                                             value_date=timezone.localdate())

    credit(first, "HKB-1")
    assert flow.refresh().state == S.SOLD
    with pytest.raises(ValidationError, match="more than the proceeds net of fees"):
        credit(net - first + Decimal("0.01"), "HKB-2")
    with pytest.raises(ValidationError, match="already recorded"):
        credit(first, "HKB-1")
    credit(net - first, "HKB-3")
    entrustment = flow.refresh()
    assert entrustment.state == S.PROCEEDS_RECEIVED
    assert sorted(r.amount for r in entrustment.offshore_receipts.all()) == sorted([first, net - first])


def test_each_lots_credit_is_recorded_and_the_last_one_brings_the_proceeds_in(flow, bank):
    entrustment = flow.to("sold")
    lots = list(entrustment.lots.order_by("sequence"))
    assert len(lots) == 2

    settle_lots(flow, bank, lots[:1])
    assert settling.poll_bank_statements()["offshore receipt"] == 1
    assert flow.refresh().state == S.SOLD

    settle_lots(flow, bank, lots[1:])
    settling.poll_bank_statements()
    entrustment = flow.refresh()
    assert entrustment.state == S.PROCEEDS_RECEIVED
    receipts = entrustment.offshore_receipts.order_by("pk")
    assert [r.amount for r in receipts] == [lot_net(lot) for lot in lots]
    assert sum(r.amount for r in receipts) == net_proceeds_by_currency(entrustment)["USD"]
    assert {r.bank.code for r in receipts} == {"hk-bank"} and all(r.bank_reference for r in receipts)
    assert receipts[0].recorded_by.username == f"svc-{flow.w.agency.code}"
    assert not bank_exceptions().exists()


# =========================================================================== FX and the special account


def test_the_fx_settlement_is_ordered_converted_at_the_banks_rate_and_credited_to_the_special_account(flow, bank):
    entrustment = to_proceeds_received(flow, bank)
    usd = net_proceeds_by_currency(entrustment)["USD"]
    # Nothing goes to the bank before the agency's approvers approve the FX application: the entrustment waits.
    assert entrustment.pk not in settling.due_entrustments()[0]
    assert settling.request_fx(entrustment.pk) == "awaiting approval of the FX application"
    assert not bank.orders and not Job.objects.filter(kind=settling.FX_JOB).exists()

    flow.approve_fx()
    assert entrustment.pk in settling.due_entrustments()[0]
    assert settling.request_fx(entrustment.pk) == {"USD": "accepted"}
    assert settling.request_fx(entrustment.pk) == {"USD": "accepted"}  # asking again only asks
    (order,) = bank.orders.values()
    assert order.order.msg_id == f"{entrustment.number}-FX-USD"
    assert (order.order.payments[0].amount, order.order.payments[0].creditor_account) == (usd, SPECIAL)
    assert flow.refresh().state == S.PROCEEDS_RECEIVED  # nothing moves before the bank books it

    bank.book_payments()
    settling.poll_bank_statements()
    entrustment = flow.refresh()
    cny = (usd * RATE).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    fx = entrustment.fx_conversions.get()
    assert (fx.outcome, fx.currency, fx.amount_foreign, fx.rate, fx.amount_cny) == (
        FxOutcome.APPROVED, "USD", usd, RATE, cny)
    assert fx.approval_reference.startswith("SAFE-") and fx.bop_declaration_no.startswith("BOP")
    assert fx.slip_reference.startswith("FX")
    assert entrustment.state == S.CREDITED
    assert (entrustment.credit.amount_cny, entrustment.credit.account_no) == (cny, SPECIAL)
    assert bank.balance(SPECIAL) == cny and bank.balance(OFFSHORE) == Decimal("0.00")
    assert Job.objects.get(key=f"{entrustment.number}-FX-USD").state == JobState.DONE
    assert not bank_exceptions().exists()


def test_an_authorised_remittance_is_paid_by_the_bank_and_recorded_with_the_treasury_receipt(flow, bank):
    w = flow.w
    entrustment = to_credited(flow, bank)
    cny = entrustment.credit.amount_cny
    money.remittance_prepare(actor=w.shunyi_officer, entrustment=entrustment, payment_code=f"{entrustment.pk:020d}")
    assert settling.pay_treasury(entrustment.pk) == "not due"  # not before the approvers' quorum

    remittance = money.remittance_approve(actor=w.shunyi_approver, entrustment=entrustment, treasury_receipt="")
    assert remittance.approved_at is not None and remittance.remitted_at is None
    assert flow.refresh().state == S.CREDITED
    with pytest.raises(DisposalError, match="already authorised"):
        money.remittance_approve(actor=w.shunyi_approver_2, entrustment=entrustment, treasury_receipt="TR-X")

    assert settling.pay_treasury(entrustment.pk) == "accepted"
    payment = bank.orders[f"{entrustment.number}-TR"].order.payments[0]
    assert (payment.amount, payment.creditor_account) == (cny, TREASURY)
    assert f"{entrustment.pk:020d}" in payment.remittance
    bank.book_payments()
    settling.poll_bank_statements()

    entrustment = flow.refresh()
    assert entrustment.state == S.REMITTED
    assert entrustment.remittance.treasury_receipt.startswith("GK")
    assert bank.balance(TREASURY) == cny and bank.balance(SPECIAL) == Decimal("0.00")
    assert not bank_exceptions().exists()
    # Every yuan reconciles: the case closes.
    money.entrustment_close(actor=w.bce_approver, entrustment=entrustment)
    assert flow.refresh().state == S.CLOSED


def test_the_treasury_receipt_is_recorded_only_for_an_authorised_remittance(flow):
    w = flow.w
    entrustment = flow.to("credited")
    money.remittance_prepare(actor=w.shunyi_officer, entrustment=entrustment, payment_code=f"{entrustment.pk:020d}")
    with pytest.raises(DisposalError, match="not authorised yet"):
        money.remittance_confirm(actor=w.shunyi_officer, entrustment=entrustment, treasury_receipt="GK-1")
    money.remittance_approve(actor=w.shunyi_approver, entrustment=entrustment, treasury_receipt="")
    with pytest.raises(ValidationError):
        money.remittance_confirm(actor=w.shunyi_officer, entrustment=entrustment, treasury_receipt=" ")
    money.remittance_confirm(actor=w.shunyi_officer, entrustment=entrustment, treasury_receipt="GK-1")
    assert flow.refresh().state == S.REMITTED
    with pytest.raises(DisposalError, match="already recorded as paid"):
        money.remittance_confirm(actor=w.shunyi_officer, entrustment=entrustment, treasury_receipt="GK-1")


def test_on_the_page_an_approval_without_receipt_authorises_and_the_officer_can_record_the_receipt(flow, client):
    from .test_portal_actions import act, offered

    w = flow.w
    entrustment = flow.to("credited")
    act(client, w.shunyi_officer, entrustment, "remittance_prepare", {"payment_code": f"{entrustment.pk:020d}"})
    act(client, w.shunyi_approver, entrustment, "remittance_approve", {"treasury_receipt": ""})
    entrustment = flow.refresh()
    assert entrustment.state == S.CREDITED and entrustment.remittance.approved_at is not None
    assert "remittance_approve" not in offered(client, w.shunyi_approver_2, entrustment)  # nothing left to approve
    act(client, w.shunyi_officer, entrustment, "remittance_confirm", {"treasury_receipt": "GK-2026-1"})
    entrustment = flow.refresh()
    assert (entrustment.state, entrustment.remittance.treasury_receipt) == (S.REMITTED, "GK-2026-1")


# =========================================================================== faults


@pytest.mark.faults
def test_a_credit_of_another_amount_is_an_exception_and_changes_nothing(flow, bank):
    entrustment = flow.to("sold")
    lot = entrustment.lots.order_by("sequence").first()
    bank.credit(OFFSHORE, lot_net(lot) - Decimal("0.01"), "USD",
                end_to_end_id=f"{entrustment.number}-L{lot.sequence}-R{lot.current_round().number}")

    settling.poll_bank_statements()
    entrustment = flow.refresh()
    assert entrustment.state == S.SOLD and not entrustment.offshore_receipts.exists()
    (exception,) = bank_exceptions(entrustment)
    assert exception.code == "amount" and str(lot_net(lot)) in exception.message
    assert cursor() is not None  # set aside, not blocking what comes after


@pytest.mark.faults
def test_a_credit_nobody_ordered_and_one_on_the_wrong_account_are_exceptions(flow, bank):
    entrustment = flow.to("sold")
    lot = entrustment.lots.order_by("sequence").first()
    bank.credit(OFFSHORE, Decimal("5.00"), "USD", end_to_end_id="SOMEONE-ELSE-1")
    bank.credit("HK-999", lot_net(lot), "USD",
                end_to_end_id=f"{entrustment.number}-L{lot.sequence}-R{lot.current_round().number}")
    settling.poll_bank_statements()
    assert sorted(e.code for e in bank_exceptions()) == ["unmatched", "wrong-account"]
    assert flow.refresh().state == S.SOLD and not entrustment.offshore_receipts.exists()


@pytest.mark.faults
def test_the_same_documents_delivered_again_change_nothing(flow, bank):
    entrustment = to_credited(flow, bank)
    bank.issue_statements()  # the day's camt.053 repeats every notification's entry
    settling.poll_bank_statements()
    Job.objects.filter(key="bank-cursor:hk-bank").update(result={})  # and everything from the start again
    outcome = settling.poll_bank_statements()

    assert outcome["already recorded"] >= 4
    entrustment = flow.refresh()
    assert entrustment.state == S.CREDITED
    assert entrustment.offshore_receipts.count() == 2 and entrustment.fx_conversions.count() == 1
    assert not bank_exceptions().exists()


@pytest.mark.faults
def test_a_bank_down_or_too_slow_is_retried_and_nothing_is_lost(flow, bank):
    flow.to("sold")
    settle_lots(flow, bank)
    bank.fail_next("timeout", on="GET /statements", delay=1.0)
    with pytest.raises(TransientError):
        settling.poll_bank_statements()
    assert cursor() is None and flow.refresh().state == S.SOLD

    bank.fail_next("500", on="GET /statements")
    result = bank_tasks.poll_bank_statements.apply()  # the task retries (at once, in eager mode)
    assert result.get()["offshore receipt"] == 2
    assert flow.refresh().state == S.PROCEEDS_RECEIVED


@pytest.mark.faults
def test_a_bank_down_for_good_becomes_an_outage_after_the_bounded_retries(flow, bank, monkeypatch):
    monkeypatch.setattr(bank_tasks, "MAX_RETRIES", 2)
    bank.stop()
    assert bank_tasks.poll_bank_statements.apply().get() == "outage recorded"
    assert OperationalException.objects.filter(kind=ExceptionKind.OUTAGE, party="bank").count() == 1


@pytest.mark.faults
def test_a_lost_answer_to_the_fx_order_is_resolved_by_its_status_and_pays_once(flow, bank):
    entrustment = to_proceeds_received(flow, bank)
    flow.approve_fx()
    bank.fail_next("lost_response", on="POST /payments")
    with pytest.raises(IndeterminateResult):
        settling.request_fx(entrustment.pk)

    assert settling.request_fx(entrustment.pk) == {"USD": "accepted"}
    assert bank.requests.count(("POST", "/payments")) == 1  # asked, not sent again
    assert list(bank.orders) == [f"{entrustment.number}-FX-USD"]
    bank.book_payments()
    settling.poll_bank_statements()
    entrustment = flow.refresh()
    assert entrustment.state == S.CREDITED and entrustment.fx_conversions.count() == 1
    assert bank.balance(OFFSHORE) == Decimal("0.00")


@pytest.mark.faults
def test_a_lost_answer_to_the_treasury_payment_never_pays_twice(flow, bank):
    w = flow.w
    entrustment = to_credited(flow, bank)
    money.remittance_prepare(actor=w.shunyi_officer, entrustment=entrustment, payment_code=f"{entrustment.pk:020d}")
    money.remittance_approve(actor=w.shunyi_approver, entrustment=entrustment, treasury_receipt="")
    bank.fail_next("lost_response", on="POST /payments")
    result = bank_tasks.pay_treasury.apply(args=[entrustment.pk])  # retried by the task, resolved by status
    assert result.get() == "accepted"
    bank.book_payments()
    settling.poll_bank_statements()
    assert flow.refresh().state == S.REMITTED
    assert list(bank.orders).count(f"{entrustment.number}-TR") == 1
    assert bank.balance(TREASURY) == entrustment.credit.amount_cny


@pytest.mark.faults
def test_a_refused_fx_approval_is_recorded_and_a_resubmission_goes_through_under_a_new_order(flow, bank):
    w = flow.w
    entrustment = to_proceeds_received(flow, bank)
    flow.approve_fx()
    bank.fail_next("fx_reject", reason="外汇局退回：缺少判决书")
    settling.request_fx(entrustment.pk)
    bank.book_payments()

    assert settling.request_fx(entrustment.pk) == {"USD": "rejected"}
    entrustment = flow.refresh()
    assert entrustment.state == S.FX_REJECTED
    rejection = entrustment.fx_conversions.get()
    assert rejection.outcome == FxOutcome.REJECTED and "缺少判决书" in rejection.reason
    assert bank.balance(OFFSHORE) == net_proceeds_by_currency(entrustment)["USD"]  # nothing left the account

    money.fx_resubmit(actor=w.agency_officer, entrustment=entrustment, reason="判决书已补充")
    # The resubmitted application is a new one: it waits for its own approval.
    assert settling.request_fx(entrustment.pk) == "awaiting approval of the FX application"
    flow.approve_fx()
    assert settling.request_fx(entrustment.pk) == {"USD": "accepted"}
    assert list(bank.orders) == [f"{entrustment.number}-FX-USD", f"{entrustment.number}-FX-USD-2"]
    bank.book_payments()
    settling.poll_bank_statements()
    assert flow.refresh().state == S.CREDITED


@pytest.mark.faults
def test_an_unreadable_document_is_an_exception_and_the_cursor_moves_past_it(flow, bank):
    entrustment = flow.to("sold")
    first, second = entrustment.lots.order_by("sequence")
    settle_lots(flow, bank, [first])
    bad = bank.inject_document(b"<Document>")
    settle_lots(flow, bank, [second])

    settling.poll_bank_statements()
    (exception,) = bank_exceptions()
    assert exception.entrustment is None and bad.id in exception.key
    assert "cannot be read" in exception.message
    assert flow.refresh().state == S.PROCEEDS_RECEIVED  # the credits on either side are recorded
    assert cursor() == bank.documents[-1].id
    settling.poll_bank_statements()
    assert bank_exceptions().get().occurrences == 1  # read once: the cursor is past it
