"""The bank side of the workers (states 9-12): statements in, FX and treasury payment orders out.

Every function takes ids (or nothing), re-reads the state, does nothing when its step is not due, and acts
through the core's services as the responsible organisation's service account: the agency's for the offshore
receipt and the FX outcome, the bureau's for the special-account credit and the treasury receipt.

What the bank sends is matched by its EndToEndId, which is always a reference the portal issued:

* ``WT-2026-000001-L1-R1`` (a lot's client order id): the platform settled that lot's net proceeds into the
  agency's same-name offshore account → ``offshore_receipt_record``;
* ``WT-2026-000001-FX-USD`` (``-2``, ``-3`` after a rejected attempt): the FX settlement (结汇) the portal
  ordered; its foreign debit on the offshore account → ``fx_record_approval``, its CNY credit on the bureau's
  special account → ``special_account_credit_record``;
* ``WT-2026-000001-TR``: the treasury remittance; its debit on the special account → ``remittance_confirm``.

The payment orders' MsgId is the same reference and is the key of their :class:`Job`; a lost answer is resolved
with ``payment_status(MsgId)`` and a resend always reuses the MsgId, so the bank can never pay twice. A new MsgId
is made only after the bank refused the previous one for good (a rejected FX approval).

Anything the worker must not decide — an entry nobody ordered, another amount than expected, the wrong account
or currency, a reversal, an unreadable document — becomes an exception (``record_exception``, kind BANK) and
changes nothing else. The services refuse duplicates (the bank's reference, a currency already converted, a
remittance already paid), so a document delivered twice, or a daily camt.053 repeating the day's camt.054
notifications, changes nothing.

Where the bank puts the references ``fx_record_approval`` needs (see emulators/bank.py): ``SAFE=<ref>`` and
``BOP=<no>`` in the entry's AddtlNtryInf (or remittance information), the conversion slip in CcyXchg/CtrctId;
the treasury's receipt as ``RECEIPT=<ref>`` on the debit of the remittance.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from itertools import groupby

from django.core.exceptions import ValidationError
from django.db.models import Sum
from django.utils import timezone
from django.utils.translation import gettext as _

from agencies.models import Organisation
from cases.models import Entrustment, EntrustmentState, Fill, LotState
from cases.workflow import DisposalError
from counterparties.automation import claimed, finish, job, remember, service_user
from counterparties.banks import Debtor, Payment, PaymentState, build_pain001
from counterparties.banks.iso20022 import PARTY, Entry, Statement
from counterparties.banks.registry import bank_for, bank_organisation, treasury_account
from counterparties.errors import IndeterminateResult, PermanentError
from counterparties.exceptions import record_exception
from counterparties.models import ExceptionKind, Job, JobState
from settlements import services as money
from settlements.models import FxOutcome, OffshoreReceipt, TreasuryRemittance


LOT_REF = re.compile(r"^(?P<number>.+)-L(?P<lot>[0-9]+)-R(?P<round>[0-9]+)$")
FX_REF = re.compile(r"^(?P<number>.+)-FX-(?P<currency>[A-Z]{3})(?:-(?P<attempt>[0-9]+))?$")
TREASURY_REF = re.compile(r"^(?P<number>.+)-TR$")
# KEY=value tokens the bank writes into AddtlNtryInf; a value runs to the next blank.
TOKEN = re.compile(r"(?:^|\s)(SAFE|BOP|RECEIPT)=(\S+)")

FX_JOB, TREASURY_JOB, CURSOR_JOB = "fx_payment", "treasury_payment", "bank_cursor"
CREDIT_LEG_JOB, LOT_CREDIT_JOB = "fx_credit_leg", "lot_credit"


# --------------------------------------------------------------------------- references


def fx_msg_id(entrustment: Entrustment, currency: str) -> str:
    """The FX order's MsgId (and EndToEndId): a new one only after the bank refused the previous attempt."""
    rejected = entrustment.fx_conversions.filter(currency=currency, outcome=FxOutcome.REJECTED).count()
    base = f"{entrustment.number}-FX-{currency}"
    return base if rejected == 0 else f"{base}-{rejected + 1}"


def treasury_msg_id(entrustment: Entrustment) -> str:
    return f"{entrustment.number}-TR"


def _entrustment(entrustment_id: int) -> Entrustment:
    return Entrustment.objects.select_related("agency", "bureau", "case").get(pk=entrustment_id)


def _received(entrustment: Entrustment, currency: str) -> Decimal | None:
    return entrustment.offshore_receipts.filter(currency=currency).aggregate(s=Sum("amount"))["s"]


def _tokens(entry: Entry) -> dict[str, str]:
    text = " ".join(t for t in (entry.additional_info, entry.remittance) if t)
    return {k: v for k, v in TOKEN.findall(text)}


def _message(exc: Exception) -> str:
    """What a service or the bank said, for the exception's text."""
    if isinstance(exc, PermanentError):
        return exc.message
    if isinstance(exc, ValidationError) and hasattr(exc, "message_dict"):
        return "; ".join(" ".join(map(str, v)) for v in exc.message_dict.values())
    if isinstance(exc, ValidationError):
        return " ".join(exc.messages)
    return str(getattr(exc, "message", None) or exc)


# --------------------------------------------------------------------------- payment orders


def _submit(bank, entrustment, msg_id: str, kind: str, order: bytes, on_rejected) -> str:
    """Hand the order over once, whatever happens to the answers; then follow its status until it is booked
    (the booking itself is read from the statements) or rejected (``on_rejected(reason)``)."""
    with claimed(msg_id, kind, entrustment) as found:
        if found is None:
            return "done or claimed elsewhere"
        status = None
        if found.result.get("sent"):
            # Sent before, answer unknown or already seen: ask, never send under a new MsgId.
            status = bank.payment_status(msg_id)
        if status is None or status.state == PaymentState.UNKNOWN:
            # Noted before the call: after a crash or a lost answer the next attempt asks first.
            remember(found, sent=True)
            try:
                status = bank.submit_payment(order, msg_id)
            except IndeterminateResult:
                raise  # the task retries; the next attempt resolves it with payment_status(msg_id)
            except PermanentError as exc:
                record_exception(entrustment=entrustment, kind=ExceptionKind.BANK, key=f"bank:{msg_id}:refused",
                                 party=exc.party, code=exc.code,
                                 message=_("The bank refused payment order %(id)s: %(why)s")
                                 % {"id": msg_id, "why": exc.message})
                finish(found, state=JobState.FAILED, error=exc.message)
                return "refused"
        remember(found, state=str(status.state), reason=status.reason, location=status.location or "")
        if status.state == PaymentState.REJECTED:
            on_rejected(status.reason or _("no reason given"))
            finish(found, state=JobState.FAILED, error=status.reason)
            return "rejected"
        return str(status.state)


def request_fx(entrustment_id: int) -> dict[str, str] | str:
    """Proceeds received offshore → order the FX settlement of each currency: a payment from the agency's
    offshore account into the bureau's special account, which the bank converts (结汇) once SAFE approves."""
    entrustment = _entrustment(entrustment_id)
    if entrustment.state != EntrustmentState.PROCEEDS_RECEIVED:
        return "not due"
    if not money.fx_application_approved(entrustment):
        return "awaiting approval of the FX application"  # nothing to the bank until the agency's approvers agree
    agency, bureau = entrustment.agency, entrustment.bureau
    if not agency.offshore_account_no:
        return "no offshore account on record: FX stays manual"
    bank = bank_for()
    if bank is None:
        return "no bank configured"
    if not bureau.special_account_no:
        record_exception(entrustment=entrustment, kind=ExceptionKind.BANK, key=f"bank:{entrustment.number}:no-special",
                         message=_("The bureau has no special case-funds account on record: the FX settlement "
                                   "cannot be ordered."))
        return "refused"
    outcomes = {}
    currencies = sorted(set(entrustment.offshore_receipts.values_list("currency", flat=True)))
    for currency in currencies:
        if entrustment.fx_conversions.filter(currency=currency, outcome=FxOutcome.APPROVED).exists():
            continue
        msg_id = fx_msg_id(entrustment, currency)
        order = build_pain001(msg_id, Debtor(agency.name, agency.offshore_account_no), [Payment(
            end_to_end_id=msg_id, amount=_received(entrustment, currency), currency=currency,
            creditor_name=bureau.name, creditor_account=bureau.special_account_no,
            remittance=f"结汇 FX SETTLEMENT {entrustment.number} {currency}")], timezone.now())

        def rejected(reason, currency=currency, msg_id=msg_id):
            try:
                money.fx_record_rejection(actor=service_user(agency), entrustment=entrustment, currency=currency,
                                          reason=_("The bank did not carry out FX settlement %(id)s: %(why)s")
                                          % {"id": msg_id, "why": reason})
            except (DisposalError, ValidationError) as exc:
                record_exception(entrustment=entrustment, kind=ExceptionKind.BANK, key=f"bank:{msg_id}:rejected",
                                 party=PARTY, message=_("FX settlement %(id)s was rejected (%(why)s) and the "
                                                        "rejection could not be recorded: %(err)s")
                                 % {"id": msg_id, "why": reason, "err": _message(exc)})
            entrustment.refresh_from_db()

        outcomes[currency] = _submit(bank, entrustment, msg_id, FX_JOB, order, rejected)
    return outcomes


def pay_treasury(entrustment_id: int) -> str:
    """A remittance the approvers authorised → pay it from the special account to the treasury, with the
    payment code of the General Payment Form in the remittance information."""
    entrustment = _entrustment(entrustment_id)
    remittance = TreasuryRemittance.objects.filter(entrustment=entrustment).first()
    if (entrustment.state != EntrustmentState.CREDITED or remittance is None or remittance.approved_at is None
            or remittance.remitted_at is not None):
        return "not due"
    bank = bank_for()
    if bank is None:
        return "no bank configured"
    msg_id = treasury_msg_id(entrustment)
    treasury = treasury_account()
    bureau = entrustment.bureau
    if treasury is None or not bureau.special_account_no:
        record_exception(entrustment=entrustment, kind=ExceptionKind.BANK, key=f"bank:{msg_id}:no-account",
                         message=_("The remittance is authorised but cannot be paid: the treasury account "
                                   "(PORTAL_TREASURY_ACCOUNT) or the bureau's special account is not on record."))
        return "refused"
    number, name = treasury
    order = build_pain001(msg_id, Debtor(bureau.name, bureau.special_account_no), [Payment(
        end_to_end_id=msg_id, amount=remittance.amount_cny, currency="CNY", creditor_name=name,
        creditor_account=number, remittance=f"非税收入 缴款码 {remittance.payment_code}")], timezone.now())

    def rejected(reason):
        # No state of the process fits a refused remittance: a person looks at it.
        record_exception(entrustment=entrustment, kind=ExceptionKind.BANK, key=f"bank:{msg_id}:rejected",
                         party=PARTY, message=_("The bank rejected treasury payment %(id)s: %(why)s")
                         % {"id": msg_id, "why": reason})

    return _submit(bank, entrustment, msg_id, TREASURY_JOB, order, rejected)


# --------------------------------------------------------------------------- statements


@dataclass
class _Context:
    bank: Organisation
    treasury: str | None
    statement: Statement | None = None

    def exception(self, entrustment, entry: Entry, what: str, message: str) -> str:
        ref = entry.bank_ref or f"{self.statement.digest[:16]}-{self.statement.entries.index(entry)}"
        record_exception(entrustment=entrustment, kind=ExceptionKind.BANK, key=f"bank:{self.bank.code}:{ref}:{what}",
                         party=PARTY, code=what, message=message,
                         details={"account": self.statement.account, "amount": str(entry.amount),
                                  "currency": entry.currency, "credit": entry.credit,
                                  "end_to_end_id": entry.end_to_end_id or "", "bank_reference": entry.bank_ref or "",
                                  "document": self.statement.source or "", "sha256": self.statement.digest})
        return what


def poll_bank_statements() -> dict:
    """Read what the bank delivered since the stored cursor and hand each booked entry to its service.

    The cursor (in the ``bank-cursor:<bank>`` job's result) moves past a document only once every entry in it
    is recorded or set aside as an exception; a transient failure leaves it where it was, so nothing is lost.
    """
    bank, organisation = bank_for(), bank_organisation()
    if bank is None or organisation is None:
        return {"status": "no bank configured"}
    with claimed(f"bank-cursor:{organisation.code}", CURSOR_JOB) as found:
        if found is None:
            return {"status": "claimed elsewhere"}
        cursor = found.result.get("cursor")
        batch = bank.statements_since(cursor)  # a TransientError propagates: the task retries
        treasury = treasury_account()
        context = _Context(bank=organisation, treasury=treasury[0] if treasury else None)
        for rejected in batch.rejected:
            record_exception(entrustment=None, kind=ExceptionKind.BANK,
                             key=f"bank:{organisation.code}:document:{rejected.source}"[:200],
                             party=PARTY, code=rejected.error.code,
                             message=_("A document from the bank cannot be read and was set aside: %(why)s")
                             % {"why": rejected.error.message}, details={"document": rejected.source})
        outcomes: dict[str, int] = {}
        for source, statements in groupby(batch.statements, key=lambda s: s.source):
            try:
                for statement in statements:
                    context.statement = statement
                    for entry in statement.entries:
                        outcome = _handle(context, entry)
                        outcomes[outcome] = outcomes.get(outcome, 0) + 1
            except _NotYet as early:
                # The cursor stays before this document; what in it was recorded is refused as a duplicate
                # (by bank reference) when it is read again.
                return {"status": "waiting for the sale to be recorded", "entry": str(early), **outcomes}
            if source:
                remember(found, cursor=source)
        if batch.cursor != cursor:
            remember(found, cursor=batch.cursor)
        return {"status": "read", "cursor": batch.cursor, "rejected": len(batch.rejected), **outcomes}


class _NotYet(Exception):
    """A credit for an order whose fills the portal has not recorded yet."""


def _handle(ctx: _Context, entry: Entry) -> str:
    """One entry of one document: find what the portal ordered or expects under its EndToEndId."""
    if not entry.booked:
        return "not booked"  # pending or information only: the booked entry follows
    account = ctx.statement.account
    e2e = entry.end_to_end_id or ""
    kind = None
    for name, pattern in (("lot", LOT_REF), ("fx", FX_REF), ("treasury", TREASURY_REF)):
        if match := pattern.fullmatch(e2e):
            kind = name
            break
    entrustment = (Entrustment.objects.select_related("agency", "bureau", "case")
                   .filter(number=match.group("number")).first() if kind else None)
    if entry.reversal:
        return ctx.exception(entrustment, entry, "reversal", _(
            "The bank reversed entry %(ref)s (%(amt)s %(cur)s on %(acct)s); nothing was recorded, a person must "
            "look at it.") % {"ref": entry.bank_ref, "amt": entry.amount, "cur": entry.currency, "acct": account})
    if treasury_side(ctx, kind, entrustment, account, entry):
        return "treasury side"
    if entry.bank_ref is None:
        return ctx.exception(entrustment, entry, "no-reference", _(
            "An entry of %(amt)s %(cur)s on %(acct)s carries no bank reference, so it cannot be recorded once "
            "and only once.") % {"amt": entry.amount, "cur": entry.currency, "acct": account})
    if entrustment is None:
        return ctx.exception(None, entry, "unmatched", _(
            "The bank booked %(dir)s of %(amt)s %(cur)s on account %(acct)s with reference %(e2e)s, which matches "
            "nothing the portal ordered or expects.") % {
            "dir": _("a credit") if entry.credit else _("a debit"), "amt": entry.amount, "cur": entry.currency,
            "acct": account, "e2e": e2e or _("(none)")})
    offshore, special = entrustment.agency.offshore_account_no, entrustment.bureau.special_account_no
    expected = {("lot", True): offshore, ("fx", False): offshore, ("fx", True): special,
                ("treasury", False): special}.get((kind, entry.credit))
    if not expected or account != expected:
        return ctx.exception(entrustment, entry, "wrong-account", _(
            "The bank booked %(dir)s of %(amt)s %(cur)s for %(e2e)s on account %(acct)s; it belongs on %(want)s.")
            % {"dir": _("a credit") if entry.credit else _("a debit"), "amt": entry.amount, "cur": entry.currency,
               "e2e": e2e, "acct": account, "want": expected or _("no account (the direction is wrong)")})
    try:
        if kind == "lot":
            return _lot_credit(ctx, entrustment, entry, int(match.group("lot")))
        if kind == "fx" and not entry.credit:
            return _fx_debit(ctx, entrustment, entry, match.group("currency"))
        if kind == "fx":
            return _fx_credit(ctx, entrustment, entry, match.group("currency"))
        return _treasury_debit(ctx, entrustment, entry)
    except (DisposalError, ValidationError) as exc:
        return ctx.exception(entrustment, entry, "refused", _(
            "The bank's entry %(ref)s (%(e2e)s, %(amt)s %(cur)s) was not recorded: %(why)s")
            % {"ref": entry.bank_ref, "e2e": e2e, "amt": entry.amount, "cur": entry.currency, "why": _message(exc)})


def treasury_side(ctx: _Context, kind, entrustment, account: str, entry: Entry) -> bool:
    """The treasury's credit for our own remittance, seen because the bank reports both ends: not ours to record."""
    return bool(ctx.treasury and account == ctx.treasury and kind == "treasury" and entry.credit)


def _lot_credit(ctx: _Context, entrustment: Entrustment, entry: Entry, sequence: int) -> str:
    if OffshoreReceipt.objects.filter(bank=ctx.bank, bank_reference=entry.bank_ref).exists():
        return "already recorded"
    lot = entrustment.lots.filter(sequence=sequence).first()
    if lot is None:
        return ctx.exception(entrustment, entry, "no-lot", _("The credit %(e2e)s names lot %(n)s, which %(no)s does "
                                                              "not have.") % {"e2e": entry.end_to_end_id, "n": sequence,
                                                                              "no": entrustment.number})
    if entry.currency != lot.quote_currency:
        return ctx.exception(entrustment, entry, "currency", _(
            "Lot %(n)s was sold for %(want)s, but the bank credited %(amt)s %(cur)s for it.")
            % {"n": sequence, "want": lot.quote_currency, "amt": entry.amount, "cur": entry.currency})
    sums = Fill.objects.filter(lot=lot, currency=entry.currency).aggregate(gross=Sum("gross"), fee=Sum("fee"))
    if sums["gross"] is None and lot.state == LotState.EXECUTING:
        # The platform settled before our worker recorded the fills (a restarted worker, a slow poll): read
        # this document again next time rather than call a normal race an exception.
        raise _NotYet(entry.end_to_end_id)
    if sums["gross"] is None:
        return ctx.exception(entrustment, entry, "not-sold", _(
            "The bank credited %(amt)s %(cur)s for lot %(n)s, which has no recorded sale.")
            % {"amt": entry.amount, "cur": entry.currency, "n": sequence})
    net = sums["gross"] - sums["fee"]
    if entry.amount != net:
        return ctx.exception(entrustment, entry, "amount", _(
            "The bank credited %(amt)s %(cur)s for lot %(n)s; its proceeds net of platform fees are %(net)s %(cur)s.")
            % {"amt": entry.amount, "cur": entry.currency, "n": sequence, "net": net})
    seen = Job.objects.filter(key=f"credit:{entry.end_to_end_id}").first()
    if seen is not None and seen.result.get("bank_reference") != entry.bank_ref:
        return ctx.exception(entrustment, entry, "second-credit", _(
            "Lot %(n)s was credited again (%(ref)s) after credit %(first)s; only one settlement per sale is expected.")
            % {"n": sequence, "ref": entry.bank_ref, "first": seen.result.get("bank_reference")})
    money.offshore_receipt_record(actor=service_user(entrustment.agency), entrustment=entrustment, bank=ctx.bank,
                                  currency=entry.currency, amount=entry.amount, bank_reference=entry.bank_ref,
                                  value_date=entry.value_date or entry.booking_date or timezone.localdate())
    done = job(f"credit:{entry.end_to_end_id}", LOT_CREDIT_JOB, entrustment)
    remember(done, bank_reference=entry.bank_ref, amount=str(entry.amount), currency=entry.currency)
    finish(done)
    return "offshore receipt"


def _fx_debit(ctx: _Context, entrustment: Entrustment, entry: Entry, currency: str) -> str:
    """The foreign leg of the conversion: SAFE approved and the bank converted."""
    fx = entry.fx
    slip = (fx.contract_id if fx else None) or entry.bank_ref
    if entrustment.fx_conversions.filter(currency=currency, outcome=FxOutcome.APPROVED, slip_reference=slip).exists():
        return "already recorded"
    if fx is None or fx.target_amount is None or fx.target_currency != "CNY":
        return ctx.exception(entrustment, entry, "fx-details", _(
            "The debit for FX settlement %(e2e)s carries no conversion into CNY (CcyXchg with the CNY amount).")
            % {"e2e": entry.end_to_end_id})
    if entry.currency != currency or fx.source_currency != currency or fx.unit_currency not in (None, currency):
        return ctx.exception(entrustment, entry, "currency", _(
            "FX settlement %(e2e)s was ordered in %(want)s; the bank converted %(src)s (rate per %(unit)s).")
            % {"e2e": entry.end_to_end_id, "want": currency, "src": fx.source_currency,
               "unit": fx.unit_currency or fx.source_currency})
    received = _received(entrustment, currency)
    if entry.amount != received:
        return ctx.exception(entrustment, entry, "amount", _(
            "The bank converted %(amt)s %(cur)s for %(e2e)s; %(want)s %(cur)s was received and ordered.")
            % {"amt": entry.amount, "cur": currency, "e2e": entry.end_to_end_id, "want": received})
    tokens = _tokens(entry)
    if not tokens.get("SAFE") or not tokens.get("BOP"):
        return ctx.exception(entrustment, entry, "fx-references", _(
            "The bank converted %(e2e)s but its entry does not give the SAFE approval and the balance-of-payments "
            "declaration (SAFE=, BOP=).") % {"e2e": entry.end_to_end_id})
    money.fx_record_approval(actor=service_user(entrustment.agency), entrustment=entrustment, currency=currency,
                             approval_reference=tokens["SAFE"], bop_declaration_no=tokens["BOP"], rate=fx.rate,
                             amount_cny=fx.target_amount, slip_reference=slip)
    _finish_order(entry.end_to_end_id, slip=slip)
    _credit_special_account(ctx, entrustment)
    return "fx approved"


def _fx_credit(ctx: _Context, entrustment: Entrustment, entry: Entry, currency: str) -> str:
    """The CNY leg of the conversion, on the bureau's special account: kept until every currency's leg is in
    and FX is cleared, then recorded as the one special-account credit."""
    if entry.currency != "CNY":
        return ctx.exception(entrustment, entry, "currency", _(
            "The special account was credited %(amt)s %(cur)s for %(e2e)s; it holds CNY only.")
            % {"amt": entry.amount, "cur": entry.currency, "e2e": entry.end_to_end_id})
    leg = job(f"cny-leg:{entry.end_to_end_id}", CREDIT_LEG_JOB, entrustment)
    if leg.result.get("bank_reference") not in (None, entry.bank_ref):
        return ctx.exception(entrustment, entry, "second-credit", _(
            "FX settlement %(e2e)s credited the special account twice (%(first)s, %(ref)s).")
            % {"e2e": entry.end_to_end_id, "first": leg.result["bank_reference"], "ref": entry.bank_ref})
    if leg.state == JobState.DONE:
        return "already recorded"
    remember(leg, bank_reference=entry.bank_ref, amount_cny=str(entry.amount), currency=currency)
    finish(leg)
    return _credit_special_account(ctx, entrustment) or "cny leg kept"


def _credit_special_account(ctx: _Context, entrustment: Entrustment) -> str | None:
    """Once FX is cleared and the CNY leg of every conversion is in, record the special account's credit."""
    entrustment.refresh_from_db()
    if entrustment.state != EntrustmentState.FX_CLEARED:
        return None
    legs, total = [], Decimal("0")
    seen = list(Job.objects.filter(kind=CREDIT_LEG_JOB, entrustment=entrustment, state=JobState.DONE))
    for fx in entrustment.fx_conversions.filter(outcome=FxOutcome.APPROVED).order_by("currency"):
        found = [j for j in seen if j.result.get("currency") == fx.currency]
        if not found:
            return None  # that currency's CNY leg has not been read yet
        if len(found) > 1:
            record_exception(entrustment=entrustment, kind=ExceptionKind.BANK,
                             key=f"bank:{entrustment.number}:{fx.currency}:cny-legs", party=PARTY,
                             message=_("The special account received %(n)s CNY credits for the %(cur)s conversion "
                                       "(%(refs)s); one was expected.")
                             % {"n": len(found), "cur": fx.currency,
                                "refs": ", ".join(j.result["bank_reference"] for j in found)})
            return "cny legs differ"
        leg = found[0]
        amount = Decimal(leg.result["amount_cny"])
        if amount != fx.amount_cny:
            record_exception(entrustment=entrustment, kind=ExceptionKind.BANK,
                             key=f"bank:{ctx.bank.code}:{leg.result['bank_reference']}:cny-amount", party=PARTY,
                             message=_("The special account was credited %(amt)s CNY for the %(cur)s conversion, "
                                       "whose slip says %(want)s CNY.")
                             % {"amt": amount, "cur": fx.currency, "want": fx.amount_cny})
            return "cny amount differs"
        legs.append(leg.result["bank_reference"])
        total += amount
    money.special_account_credit_record(actor=service_user(entrustment.bureau), entrustment=entrustment,
                                        amount_cny=total, slip_reference=" ".join(legs)[:100])
    return "special account credited"


def _treasury_debit(ctx: _Context, entrustment: Entrustment, entry: Entry) -> str:
    remittance = TreasuryRemittance.objects.filter(entrustment=entrustment).first()
    tokens = _tokens(entry)
    if remittance is not None and remittance.remitted_at is not None:
        if remittance.treasury_receipt == tokens.get("RECEIPT"):
            return "already recorded"
        return ctx.exception(entrustment, entry, "paid-twice", _(
            "The bank booked treasury payment %(e2e)s again (%(ref)s) after the remittance was recorded as paid.")
            % {"e2e": entry.end_to_end_id, "ref": entry.bank_ref})
    if remittance is None:
        return ctx.exception(entrustment, entry, "no-remittance", _(
            "The bank paid %(e2e)s to the treasury, but no remittance is prepared.") % {"e2e": entry.end_to_end_id})
    if entry.currency != "CNY" or entry.amount != remittance.amount_cny:
        return ctx.exception(entrustment, entry, "amount", _(
            "The bank paid %(amt)s %(cur)s to the treasury for %(e2e)s; the remittance is %(want)s CNY.")
            % {"amt": entry.amount, "cur": entry.currency, "e2e": entry.end_to_end_id, "want": remittance.amount_cny})
    if not tokens.get("RECEIPT"):
        return ctx.exception(entrustment, entry, "no-receipt", _(
            "The bank booked treasury payment %(e2e)s without the treasury's receipt (RECEIPT=).")
            % {"e2e": entry.end_to_end_id})
    money.remittance_confirm(actor=service_user(entrustment.bureau), entrustment=entrustment,
                             treasury_receipt=tokens["RECEIPT"])
    _finish_order(entry.end_to_end_id, receipt=tokens["RECEIPT"])
    return "remitted"


def _finish_order(msg_id: str, **result) -> None:
    """The order's booking is recorded: its job is done (it was pending, following the status)."""
    found = Job.objects.filter(key=msg_id).first()
    if found is not None:
        remember(found, booked=True, **result)
        if found.state == JobState.PENDING:
            finish(found)


def due_entrustments():
    """(entrustment ids waiting for an FX order, those waiting for the treasury payment). An FX order is due only
    once the FX application is approved; until then the entrustment waits for the agency's approvers."""
    fx = [e for e in Entrustment.objects.filter(state=EntrustmentState.PROCEEDS_RECEIVED)
          .exclude(agency__offshore_account_no="").select_related("policy")
          if money.fx_application_approved(e)]
    treasury = Entrustment.objects.filter(state=EntrustmentState.CREDITED, remittance__approved_at__isnull=False,
                                          remittance__remitted_at__isnull=True)
    return [e.pk for e in fx], list(treasury.values_list("pk", flat=True))

