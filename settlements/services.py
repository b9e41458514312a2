"""One function per money step: offshore receipt, FX, special-account credit, victims,
treasury remittance, and the close. Same rules as `cases/services.py`."""

from __future__ import annotations

from datetime import date
from decimal import ROUND_HALF_UP, Decimal

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone
from django.utils.translation import gettext as _

from agencies.models import Organisation, OrgKind, Role
from cases import approvals
from cases.models import Entrustment, EntrustmentState, EventType, net_proceeds_by_currency
from cases.services import parse_money
from cases.workflow import (
    DisposalError,
    emit,
    lock_entrustment,
    reason_required,
    require,
    run_transition,
    save_tracked,
    transition_with_reason,
)
from ledger import postings as ledger

from .models import (
    FxConversion,
    FxOutcome,
    OffshoreReceipt,
    SpecialAccountCredit,
    TreasuryRemittance,
    VictimReturn,
    payment_code_validator,
)

OFFICER, APPROVER = Role.OFFICER, Role.APPROVER
CENT = Decimal("0.01")


@transaction.atomic
def offshore_receipt_record(*, actor, entrustment: Entrustment, bank: Organisation, currency: str, amount,
                            bank_reference: str, value_date: date) -> OffshoreReceipt:
    """One bank credit advice. A currency may arrive in several credits (one per lot sold, whose EndToEndId is
    the lot's client order id); together they may not exceed the sale proceeds net of platform fees, and the
    proceeds count as received once every currency's credits add up to exactly that."""
    entrustment = lock_entrustment(entrustment)
    membership = require(actor, entrustment.agency, OFFICER)
    if bank.kind != OrgKind.BANK:
        raise ValidationError({"bank": _("Choose a bank.")})
    amount = parse_money(amount, field="amount")
    expected = net_proceeds_by_currency(entrustment).get(currency)
    if expected is None:
        raise ValidationError({"currency": _("Nothing was sold in %(cur)s.") % {"cur": currency}})
    # The duplicate first: a credit advice delivered twice is "already recorded", not "too much".
    if OffshoreReceipt.objects.filter(bank=bank, bank_reference=bank_reference).exists():
        raise ValidationError({"bank_reference": _("This credit advice is already recorded.")})
    before = _received(entrustment, currency)
    if before + amount > expected:
        raise ValidationError({"amount": _("The credit %(amt)s %(cur)s would bring the credits to %(sum)s %(cur)s, "
                                           "more than the proceeds net of fees %(exp)s %(cur)s; record the "
                                           "exception instead.")
                               % {"amt": amount, "cur": currency, "sum": before + amount, "exp": expected}})
    receipt = OffshoreReceipt(entrustment=entrustment, currency=currency, amount=amount, bank=bank,
                              bank_reference=bank_reference, value_date=value_date, recorded_by=actor)
    save_tracked(receipt, actor=actor, reason="offshore credit")
    ledger.post_offshore_receipt(receipt)
    emit(case=entrustment.case, entrustment=entrustment, actor=actor, membership=membership,
         type=EventType.SETTLEMENT_RECORDED,
         details={"step": "offshore_receipt", "currency": currency, "amount": str(amount),
                  "bank_reference": bank_reference})
    complete = all(_received(entrustment, cur) == net for cur, net in net_proceeds_by_currency(entrustment).items())
    if complete and entrustment.state == EntrustmentState.SOLD:
        run_transition(entrustment, "receive_proceeds", actor=actor, membership=membership)
    return receipt


def _received(entrustment: Entrustment, currency: str) -> Decimal:
    return entrustment.offshore_receipts.filter(currency=currency).aggregate(s=Sum("amount"))["s"] or Decimal("0")


def _fx_application_content(entrustment: Entrustment) -> dict:
    """What the FX approvers approve: each currency and the amount received offshore in it. A later credit (or a
    corrected one) changes it and voids earlier approvals; so does a rejection, after which the application
    that is resubmitted is a new one."""
    received = entrustment.offshore_receipts.values("currency").annotate(s=Sum("amount")).order_by("currency")
    return {"received": [[r["currency"], str(r["s"])] for r in received],
            "rejections": entrustment.fx_conversions.filter(outcome=FxOutcome.REJECTED).count()}


def fx_application_approved(entrustment: Entrustment) -> bool:
    """The agency's approvers have reached the "fx" quorum on what is received offshore now: the FX payment
    order (结汇申请) may go to the bank."""
    content = _fx_application_content(entrustment)
    return bool(content["received"]) and approvals.reached(
        action="fx", subject=f"fx:{entrustment.pk}", content=content, policy=entrustment.policy)


@transaction.atomic
def fx_application_approve(*, actor, entrustment: Entrustment, reason: str = "") -> Entrustment:
    """One approval of the agency's FX application, bound to the currencies and amounts received offshore.

    Nothing changes state here: on the quorum's last approval the approval is recorded as a settlement step,
    and the worker submits the payment order only while `fx_application_approved` holds.
    """
    entrustment = lock_entrustment(entrustment)
    membership = require(actor, entrustment.agency, APPROVER)
    if entrustment.state != EntrustmentState.PROCEEDS_RECEIVED:
        raise DisposalError.wrong_state(entrustment, _("The FX application is approved once the proceeds are "
                                                       "received offshore."))
    content = _fx_application_content(entrustment)
    if not content["received"]:
        raise DisposalError(_("Nothing is received offshore yet."))
    if fx_application_approved(entrustment):
        raise DisposalError(_("The FX application is already approved."))
    if approvals.approve(entrustment=entrustment, action="fx", subject=f"fx:{entrustment.pk}", content=content,
                         actor=actor, membership=membership, preparer=None, reason=reason):
        emit(case=entrustment.case, entrustment=entrustment, actor=actor, membership=membership,
             type=EventType.SETTLEMENT_RECORDED, reason=reason,
             details={"step": "fx_application_approved", **content})
    return entrustment


@transaction.atomic
def fx_record_approval(*, actor, entrustment: Entrustment, currency: str, approval_reference: str,
                       bop_declaration_no: str, rate, amount_cny, slip_reference: str) -> FxConversion:
    """SAFE approved and the bank converted: the slip's rate and CNY amount are recorded as given,
    after checking that they agree to the fen."""
    entrustment = lock_entrustment(entrustment)
    membership = require(actor, entrustment.agency, OFFICER)
    if entrustment.state != EntrustmentState.PROCEEDS_RECEIVED:
        raise DisposalError.wrong_state(entrustment, _("FX is cleared after the proceeds are received offshore."))
    if not fx_application_approved(entrustment):
        # The conversion is recorded only for an application the agency's approvers approved as it stands now.
        raise DisposalError(_("The FX application is not approved yet: the agency's approvers must approve it "
                              "(for the amounts received offshore now) before FX is recorded."))
    errors = {name: _("This field is required.") for name, value in (
        ("approval_reference", approval_reference), ("bop_declaration_no", bop_declaration_no),
        ("slip_reference", slip_reference)) if not (value or "").strip()}
    if errors:
        raise ValidationError(errors)
    rate = parse_money(rate, field="rate", places=6, max_digits=16)
    amount_cny = parse_money(amount_cny, field="amount_cny")
    foreign = entrustment.offshore_receipts.filter(currency=currency).aggregate(s=Sum("amount"))["s"]
    if foreign is None:
        raise ValidationError({"currency": _("No %(cur)s was received offshore.") % {"cur": currency}})
    if FxConversion.objects.filter(entrustment=entrustment, currency=currency,
                                   outcome=FxOutcome.APPROVED).exists():
        raise DisposalError(_("This currency is already converted."))
    expected = (foreign * rate).quantize(CENT, rounding=ROUND_HALF_UP)
    if abs(expected - amount_cny) > CENT:
        raise ValidationError({"amount_cny": _("%(f)s %(cur)s at %(r)s gives %(e)s CNY, not %(a)s.")
                               % {"f": foreign, "cur": currency, "r": rate, "e": expected, "a": amount_cny}})
    fx = FxConversion(entrustment=entrustment, outcome=FxOutcome.APPROVED, approval_reference=approval_reference,
                      bop_declaration_no=bop_declaration_no, currency=currency, amount_foreign=foreign, rate=rate,
                      amount_cny=amount_cny, slip_reference=slip_reference, recorded_by=actor)
    save_tracked(fx, actor=actor, reason="FX approved and converted")
    ledger.post_conversion(fx)
    emit(case=entrustment.case, entrustment=entrustment, actor=actor, membership=membership,
         type=EventType.SETTLEMENT_RECORDED,
         details={"step": "fx", "currency": currency, "foreign": str(foreign), "rate": str(rate),
                  "cny": str(amount_cny), "approval": approval_reference, "bop": bop_declaration_no})
    converted = set(entrustment.fx_conversions.filter(outcome=FxOutcome.APPROVED).values_list("currency", flat=True))
    if converted >= set(entrustment.offshore_receipts.values_list("currency", flat=True)):
        run_transition(entrustment, "clear_fx", actor=actor, membership=membership)
    return fx


@transaction.atomic
def fx_record_rejection(*, actor, entrustment: Entrustment, currency: str, reason: str) -> FxConversion:
    reason = reason_required(reason)
    entrustment = lock_entrustment(entrustment)
    membership = require(actor, entrustment.agency, OFFICER)
    foreign = entrustment.offshore_receipts.filter(currency=currency).aggregate(s=Sum("amount"))["s"]
    if foreign is None:
        raise ValidationError({"currency": _("No %(cur)s was received offshore.") % {"cur": currency}})
    fx = FxConversion(entrustment=entrustment, outcome=FxOutcome.REJECTED, currency=currency,
                      amount_foreign=foreign, reason=reason, recorded_by=actor)
    save_tracked(fx, actor=actor, reason=reason)
    run_transition(entrustment, "reject_fx", actor=actor, membership=membership, reason=reason,
                   details={"currency": currency})
    return fx


@transaction.atomic
def fx_resubmit(*, actor, entrustment: Entrustment, reason: str) -> Entrustment:
    return transition_with_reason(entrustment, "resubmit_fx", actor=actor, party="agency", roles=(OFFICER,),
                                  reason=reason)


@transaction.atomic
def special_account_credit_record(*, actor, entrustment: Entrustment, amount_cny, slip_reference: str
                                  ) -> SpecialAccountCredit:
    """Bureau finance records the credit slip into the special case-funds account."""
    entrustment = lock_entrustment(entrustment)
    membership = require(actor, entrustment.bureau, OFFICER)
    if entrustment.state != EntrustmentState.FX_CLEARED:
        raise DisposalError.wrong_state(entrustment, _("The special account is credited after FX is cleared."))
    amount = parse_money(amount_cny, field="amount_cny")
    converted = entrustment.fx_conversions.filter(outcome=FxOutcome.APPROVED).aggregate(s=Sum("amount_cny"))["s"]
    if amount != converted:
        raise ValidationError({"amount_cny": _("The credit must equal the CNY converted, %(c)s.") % {"c": converted}})
    if not entrustment.bureau.special_account_no:
        raise DisposalError(_("The bureau has no special case-funds account on record."))
    if not (slip_reference or "").strip():
        raise ValidationError({"slip_reference": _("This field is required.")})
    credit = SpecialAccountCredit(entrustment=entrustment, account_no=entrustment.bureau.special_account_no,
                                  amount_cny=amount, slip_reference=slip_reference.strip(), recorded_by=actor)
    save_tracked(credit, actor=actor, reason="special account credited")
    ledger.post_special_account_credit(credit)
    run_transition(entrustment, "credit_special_account", actor=actor, membership=membership,
                   details={"amount_cny": str(amount), "account": credit.account_no, "slip": credit.slip_reference})
    return credit


def _unallocated(entrustment: Entrustment) -> Decimal:
    returned = entrustment.victim_returns.aggregate(s=Sum("amount_cny"))["s"] or Decimal("0")
    # A prepared remittance takes all that was unallocated: nothing is left to return to victims.
    remitted = entrustment.remittance.amount_cny if hasattr(entrustment, "remittance") else Decimal("0")
    return entrustment.credit.amount_cny - returned - remitted


@transaction.atomic
def victim_return_prepare(*, actor, entrustment: Entrustment, recipient: str, recipient_account: str, amount_cny,
                          basis: str) -> VictimReturn:
    entrustment = lock_entrustment(entrustment)
    membership = require(actor, entrustment.bureau, OFFICER)
    if entrustment.state != EntrustmentState.CREDITED:
        raise DisposalError.wrong_state(entrustment, _("Returns to victims are paid from the credited special account."))
    amount = parse_money(amount_cny, field="amount_cny")
    errors = {name: _("This field is required.") for name, value in (
        ("recipient", recipient), ("recipient_account", recipient_account), ("basis", basis))
        if not (value or "").strip()}
    if errors:
        raise ValidationError(errors)
    if amount > _unallocated(entrustment):
        raise ValidationError({"amount_cny": _("More than what remains unallocated (%(r)s CNY).")
                               % {"r": _unallocated(entrustment)}})
    victim_return = VictimReturn(entrustment=entrustment, recipient=recipient, recipient_account=recipient_account,
                                 amount_cny=amount, basis=basis, prepared_by=actor)
    save_tracked(victim_return, actor=actor, reason="return prepared")
    emit(case=entrustment.case, entrustment=entrustment, actor=actor, membership=membership,
         type=EventType.SETTLEMENT_RECORDED,
         details={"step": "victim_return_prepared", "recipient": recipient, "amount_cny": str(amount),
                  "basis": basis})
    return victim_return


@transaction.atomic
def victim_return_approve(*, actor, victim_return: VictimReturn) -> VictimReturn:
    entrustment = lock_entrustment(victim_return.entrustment)
    membership = require(actor, entrustment.bureau, APPROVER)
    victim_return = VictimReturn.objects.select_for_update(of=("self",)).get(pk=victim_return.pk)
    if victim_return.approved_at:
        raise DisposalError(_("This return is already approved."))
    content = {"recipient": victim_return.recipient, "account": victim_return.recipient_account,
               "amount": str(victim_return.amount_cny), "basis": victim_return.basis}
    if approvals.approve(entrustment=entrustment, action="victim_return", subject=f"return:{victim_return.pk}",
                         content=content, actor=actor, membership=membership, preparer=victim_return.prepared_by):
        victim_return.approved_at = timezone.now()
        save_tracked(victim_return, actor=actor, reason="return approved")
        ledger.post_victim_return(victim_return)
        emit(case=entrustment.case, entrustment=entrustment, actor=actor, membership=membership,
             type=EventType.SETTLEMENT_RECORDED, details={"step": "victim_return_approved", **content})
    return victim_return


@transaction.atomic
def remittance_prepare(*, actor, entrustment: Entrustment, payment_code: str) -> TreasuryRemittance:
    """The General Payment Form for Non-tax Revenue: all that is not returned to victims."""
    entrustment = lock_entrustment(entrustment)
    membership = require(actor, entrustment.bureau, OFFICER)
    if entrustment.state != EntrustmentState.CREDITED:
        raise DisposalError.wrong_state(entrustment, _("Remittance follows the special-account credit."))
    payment_code = (payment_code or "").strip()
    try:
        payment_code_validator(payment_code)
    except ValidationError as exc:
        raise ValidationError({"payment_code": exc.messages})
    if entrustment.victim_returns.filter(approved_at__isnull=True).exists():
        raise DisposalError(_("Approve or withdraw the pending returns to victims first."))
    if TreasuryRemittance.objects.filter(payment_code=payment_code).exists():
        raise ValidationError({"payment_code": _("This payment code is already used.")})
    if hasattr(entrustment, "remittance"):
        raise DisposalError(_("A remittance is already prepared."))
    amount = _unallocated(entrustment)
    remittance = TreasuryRemittance(entrustment=entrustment, payment_code=payment_code, amount_cny=amount,
                                    prepared_by=actor)
    save_tracked(remittance, actor=actor, reason="remittance prepared")
    emit(case=entrustment.case, entrustment=entrustment, actor=actor, membership=membership,
         type=EventType.SETTLEMENT_RECORDED,
         details={"step": "remittance_prepared", "payment_code": payment_code, "amount_cny": str(amount)})
    return remittance


@transaction.atomic
def remittance_approve(*, actor, entrustment: Entrustment, treasury_receipt: str = "") -> TreasuryRemittance:
    """The approvers' quorum. With the treasury receipt (paid outside the portal) the remittance is recorded at
    once. Without it the quorum authorises the bank to pay (``approved_at``) and nothing moves yet: the state
    changes when the bank has booked the payment and ``remittance_confirm`` records its receipt."""
    entrustment = lock_entrustment(entrustment)
    membership = require(actor, entrustment.bureau, APPROVER)
    remittance = TreasuryRemittance.objects.select_for_update(of=("self",)).filter(entrustment=entrustment).first()
    if remittance is None:
        raise DisposalError(_("No remittance is prepared."))
    if remittance.approved_at or remittance.remitted_at:
        raise DisposalError(_("This remittance is already authorised."))
    _check_receipt(treasury_receipt, required=False)
    content = {"payment_code": remittance.payment_code, "amount": str(remittance.amount_cny)}
    if approvals.approve(entrustment=entrustment, action="remittance", subject=f"remittance:{remittance.pk}",
                         content=content, actor=actor, membership=membership, preparer=remittance.prepared_by):
        remittance.approved_at = timezone.now()
        if not (treasury_receipt or "").strip():
            save_tracked(remittance, actor=actor, reason="remittance authorised for payment by the bank")
            emit(case=entrustment.case, entrustment=entrustment, actor=actor, membership=membership,
                 type=EventType.SETTLEMENT_RECORDED, details={"step": "remittance_authorised", **content})
            return remittance
        remittance.treasury_receipt, remittance.remitted_at = treasury_receipt.strip(), timezone.now()
        save_tracked(remittance, actor=actor, reason="remitted")
        ledger.post_remittance(remittance)
        run_transition(entrustment, "remit", actor=actor, membership=membership,
                       details={**content, "treasury_receipt": remittance.treasury_receipt})
    return remittance


@transaction.atomic
def remittance_confirm(*, actor, entrustment: Entrustment, treasury_receipt: str) -> TreasuryRemittance:
    """The bank booked the authorised payment to the treasury: its receipt is recorded and the entrustment is
    remitted. The bureau's officer records it (in practice its service account, from the bank's booking); the
    approvers already decided when they authorised the payment."""
    entrustment = lock_entrustment(entrustment)
    membership = require(actor, entrustment.bureau, OFFICER)
    remittance = TreasuryRemittance.objects.select_for_update(of=("self",)).filter(entrustment=entrustment).first()
    if remittance is None:
        raise DisposalError(_("No remittance is prepared."))
    if remittance.remitted_at:
        raise DisposalError(_("This remittance is already recorded as paid."))
    if remittance.approved_at is None:
        raise DisposalError(_("The remittance is not authorised yet: the approvers' quorum comes first."))
    if entrustment.state != EntrustmentState.CREDITED:
        raise DisposalError.wrong_state(entrustment, _("Remittance follows the special-account credit."))
    receipt = _check_receipt(treasury_receipt, required=True)
    remittance.treasury_receipt, remittance.remitted_at = receipt, timezone.now()
    save_tracked(remittance, actor=actor, reason="remitted")
    ledger.post_remittance(remittance)
    run_transition(entrustment, "remit", actor=actor, membership=membership,
                   details={"payment_code": remittance.payment_code, "amount": str(remittance.amount_cny),
                            "treasury_receipt": receipt})
    return remittance


def _check_receipt(treasury_receipt: str, *, required: bool) -> str:
    receipt = (treasury_receipt or "").strip()
    if required and not receipt:
        raise ValidationError({"treasury_receipt": _("This field is required.")})
    if len(receipt) > TreasuryRemittance._meta.get_field("treasury_receipt").max_length:
        raise ValidationError({"treasury_receipt": _("The treasury receipt reference is too long.")})
    return receipt


@transaction.atomic
def entrustment_close(*, actor, entrustment: Entrustment, reason: str = "") -> Entrustment:
    """BCE archives the file once every coin and yuan reconciles; the bond is released."""
    entrustment = lock_entrustment(entrustment)
    membership = require(actor, entrustment.bce, APPROVER)
    if entrustment.state != EntrustmentState.REMITTED:
        raise DisposalError.wrong_state(entrustment, _("An entrustment is closed after remittance."))
    from cases.selectors import reconciliation

    recon = reconciliation(entrustment)
    if recon.problems:
        raise DisposalError(" ".join(recon.problems))
    ledger.invariants.check(entrustment)
    if approvals.approve(entrustment=entrustment, action="close", subject=f"entrustment:{entrustment.pk}",
                         content={"credited": str(recon.credited_cny), "remitted": str(recon.remitted_cny),
                                  "returned": str(recon.returned_cny)},
                         actor=actor, membership=membership, preparer=None):
        run_transition(entrustment, "close", actor=actor, membership=membership, reason=reason)
        bond = entrustment.current_bond()
        if bond is not None and bond.state == "posted":
            bond.release()
            save_tracked(bond, actor=actor, reason="entrustment closed")
            emit(case=entrustment.case, entrustment=entrustment, actor=actor, membership=membership,
                 type=EventType.BOND_RELEASED, details={"reference": bond.reference})
    return entrustment
