"""One function per movement, called by the service that records it, in the same transaction, right after
the domain row is saved. Each posts one balanced transaction under an idempotency key derived from the
domain row (a transfer's reference, a fill's id...) and then checks the entrustment's invariants, so a
posting that would break them rolls the whole step back.

See `ledger.models` for the chart of accounts and the sign convention.
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager
from decimal import Decimal

from django.db import IntegrityError, transaction

from . import invariants
from .models import CNY, Account, AccountKind, Entry, Transaction, TransactionKind

K, T = AccountKind, TransactionKind
MINOR_PER_UNIT = 100  # every money column of the portal has two decimal places


class LedgerError(Exception):
    """A posting that must not happen: unbalanced, empty, or a key reused for different entries."""


def to_minor(amount: Decimal) -> int:
    """Decimal money → integer minor units, exactly (a fraction of a fen is an error, never rounded)."""
    minor = Decimal(amount) * MINOR_PER_UNIT
    if minor != minor.to_integral_value():
        raise LedgerError(f"{amount} is not a whole number of minor units")
    return int(minor)


def from_minor(minor: int) -> Decimal:
    return (Decimal(minor) / MINOR_PER_UNIT).quantize(Decimal("0.01"))


# --------------------------------------------------------------------------- the mechanics

_deferred = False


@contextmanager
def checks_deferred():
    """Post without checking after each posting: only for `ledger_backfill`, which replays an entrustment's
    history in order and checks once at the end (half-way through a replay the figures cannot agree)."""
    global _deferred
    before, _deferred = _deferred, True
    try:
        yield
    finally:
        _deferred = before


def _check(entrustment) -> None:
    if not _deferred:
        invariants.check(entrustment)


def _check_holding(holding) -> None:
    if not _deferred:
        invariants.check_holding(holding)



def account(kind: str, *, case, entrustment=None, asset=None, currency: str = "", address: str = "") -> Account:
    """The account, opened on first use."""
    commodity = f"a{asset.pk}" if asset is not None else f"c{currency}"
    key = f"{case.pk}/{entrustment.pk if entrustment else '-'}/{commodity}/{kind}/{address}"
    found = Account.objects.filter(key=key).first()
    if found is not None:
        return found
    try:
        with transaction.atomic():
            return Account.objects.create(key=key, case=case, entrustment=entrustment, asset=asset,
                                          currency=currency, kind=kind, address=address)
    except IntegrityError:  # opened a moment ago by a concurrent posting
        return Account.objects.get(key=key)


def existing(key: str) -> Transaction | None:
    return Transaction.objects.filter(key=key).first()


def post(*, key: str, kind: str, case, entrustment, description: str,
         entries: list[tuple[Account, int]]) -> Transaction:
    """Post one transaction, or return the one already posted under `key` if it has the same entries."""
    lines = [(acct, int(amount)) for acct, amount in entries if amount]
    if not lines:
        raise LedgerError(f"{key}: nothing to post")
    totals = defaultdict(int)
    for acct, amount in lines:
        totals[acct.commodity] += amount
    unbalanced = {c: t for c, t in totals.items() if t}
    if unbalanced:
        raise LedgerError(f"{key}: entries do not balance per commodity: {unbalanced}")
    done = existing(key)
    if done is None:
        try:
            with transaction.atomic():
                done = Transaction.objects.create(key=key, kind=kind, case=case, entrustment=entrustment,
                                                  description=description[:200])
                Entry.objects.bulk_create([Entry(transaction=done, account=a, amount=n) for a, n in lines])
                return done
        except IntegrityError:  # the same step posted concurrently: compare with what it posted
            done = Transaction.objects.get(key=key)
    posted = sorted(done.entries.values_list("account_id", "amount"))
    if posted != sorted((a.pk, n) for a, n in lines):
        raise LedgerError(f"{key} was already posted with other entries")
    return done


def balance(acct: Account) -> int:
    return sum(acct.entries.values_list("amount", flat=True), 0)


# --------------------------------------------------------------------------- coins


def _seizure(holding) -> Transaction:
    """Posted when the holding is declared; also when coins first move from a holding declared before the
    ledger existed (idempotent, so the usual case posts nothing new)."""
    case, asset = holding.case, holding.asset
    return post(key=f"seizure:{holding.pk}", kind=T.SEIZURE, case=case, entrustment=None,
                description=f"{holding.declared_amount} {asset.symbol} declared at {holding.address}",
                entries=[(account(K.SEIZED, case=case, asset=asset, address=holding.address), holding.declared_amount),
                         (account(K.SEIZURE_DECLARED, case=case, asset=asset), -holding.declared_amount)])


def post_seizure(holding) -> Transaction:
    posted = _seizure(holding)
    _check_holding(holding)
    return posted


def post_seizure_adjustment(holding, *, entrustment) -> Transaction | None:
    """The bureau accepted the detected amount: the seized account moves to it, the difference is on the
    record in its own counter-account."""
    key = f"seizure-adjustment:{holding.pk}:{entrustment.pk}"
    if done := existing(key):
        return done
    _seizure(holding)
    case, asset = holding.case, holding.asset
    seized = account(K.SEIZED, case=case, asset=asset, address=holding.address)
    adjusted_before = sum(seized.entries.filter(transaction__kind=T.SEIZURE_ADJUSTMENT)
                          .values_list("amount", flat=True), 0)
    difference = holding.accepted_amount - holding.declared_amount - adjusted_before
    posted = None
    if difference:
        posted = post(key=key, kind=T.SEIZURE_ADJUSTMENT, case=case, entrustment=entrustment,
                      description=f"{holding.address}: accepted {holding.accepted_amount} of "
                                  f"{holding.declared_amount} declared",
                      entries=[(seized, difference), (account(K.SEIZURE_ADJUSTMENT, case=case, asset=asset),
                                                      -difference)])
    # One holding at a time inside the service's loop: its own figure; the whole entrustment is checked at
    # its next step, once every holding is adjusted.
    _check_holding(holding)
    return posted


def _custody_receipt(transfer) -> Transaction:
    e, holding, asset = transfer.entrustment, transfer.holding, transfer.asset
    _seizure(holding)
    return post(key=f"custody:{transfer.reference}", kind=T.CUSTODY_RECEIPT, case=e.case, entrustment=e,
                description=f"{transfer.reference} {transfer.txid}",
                entries=[(account(K.CUSTODY, case=e.case, entrustment=e, asset=asset, address=transfer.to_address),
                          transfer.amount),
                         (account(K.NETWORK_FEES, case=e.case, entrustment=e, asset=asset), transfer.network_fee),
                         (account(K.SEIZED, case=e.case, asset=asset, address=holding.address),
                          -(transfer.amount + transfer.network_fee))])


def post_custody_receipts(entrustment) -> list[Transaction]:
    """The hand-over: every holding's coins from its seizure address into custody, less the network fee."""
    from cases.models import TransferKind, TransferStatus

    transfers = (entrustment.transfers.filter(kind=TransferKind.TO_CUSTODY, status=TransferStatus.CONFIRMED)
                 .select_related("entrustment__case", "holding__case", "asset"))
    posted = [_custody_receipt(t) for t in transfers]
    _check(entrustment)
    return posted


def _custody_sources(entrustment, asset, needed: int, from_address: str) -> list[tuple[Account, int]]:
    """Which custody addresses a deposit leaves from: the one it names if it is ours, then the others in the
    order they received coins. A shortfall is taken anyway, so the invariants refuse it by name."""
    accounts = list(Account.objects.filter(entrustment=entrustment, asset=asset, kind=K.CUSTODY).order_by("id"))
    accounts.sort(key=lambda a: a.address != from_address)
    if not accounts:
        accounts = [account(K.CUSTODY, case=entrustment.case, entrustment=entrustment, asset=asset,
                            address=from_address)]
    taken = []
    for acct in accounts:
        take = min(max(balance(acct), 0), needed)
        if take:
            taken.append((acct, take))
            needed -= take
    if needed:
        taken.append((accounts[-1], needed))
    return taken


def post_platform_transfer(transfer) -> Transaction:
    """Custody instructed to deposit at the platform: amount and fee leave custody, in transit."""
    key = f"transfer:{transfer.reference}"
    if done := existing(key):
        return done
    e, asset = transfer.entrustment, transfer.asset
    total = transfer.amount + transfer.network_fee
    sources = _custody_sources(e, asset, total, transfer.from_address)
    posted = post(key=key, kind=T.PLATFORM_TRANSFER, case=e.case, entrustment=e,
                  description=f"{transfer.reference} → {transfer.to_address}",
                  entries=[(account(K.IN_TRANSIT, case=e.case, entrustment=e, asset=asset), total),
                           *((acct, -amount) for acct, amount in sources)])
    _check(e)
    return posted


def post_platform_deposit(transfer) -> Transaction:
    """The platform credited the deposit: the coins are there; the fee is spent."""
    e, asset = transfer.entrustment, transfer.asset
    posted = post(key=f"deposit:{transfer.reference}", kind=T.PLATFORM_DEPOSIT, case=e.case, entrustment=e,
                  description=f"{transfer.reference} {transfer.txid}",
                  entries=[(account(K.AT_PLATFORM, case=e.case, entrustment=e, asset=asset), transfer.amount),
                           (account(K.NETWORK_FEES, case=e.case, entrustment=e, asset=asset), transfer.network_fee),
                           (account(K.IN_TRANSIT, case=e.case, entrustment=e, asset=asset),
                            -(transfer.amount + transfer.network_fee))])
    _check(e)
    return posted


def post_transfer_failed(transfer) -> Transaction | None:
    """The deposit failed: what left custody goes back to the addresses it left, fee included (the
    portal's record treats a failed transfer as one that moved nothing)."""
    # The instruction and, when custody reported it later, the fee (post_platform_transfer_fee).
    left = Entry.objects.filter(transaction__key__in=[f"transfer:{transfer.reference}",
                                                      f"transfer-fee:{transfer.reference}"]).select_related("account")
    if not left:
        return None
    e = transfer.entrustment
    posted = post(key=f"transfer-failed:{transfer.reference}", kind=T.TRANSFER_FAILED, case=e.case, entrustment=e,
                  description=f"{transfer.reference} failed",
                  entries=[(entry.account, -entry.amount) for entry in left])
    _check(e)
    return posted


# --------------------------------------------------------------------------- sale


def _fill(fill, lot) -> Transaction:
    e, asset, cur = lot.entrustment, lot.asset, fill.currency
    at = dict(case=e.case, entrustment=e)
    proceeds = account(K.PROCEEDS_AT_PLATFORM, currency=cur, **at)
    gross, fee = to_minor(fill.gross), to_minor(fill.fee)
    return post(key=f"fill:{fill.pk}", kind=T.FILL, case=e.case, entrustment=e,
                description=f"lot {lot.sequence} trade {fill.trade_id}",
                entries=[(account(K.SOLD, asset=asset, **at), fill.quantity),
                         (account(K.AT_PLATFORM, asset=asset, **at), -fill.quantity),
                         (proceeds, gross), (account(K.SALE_PROCEEDS, currency=cur, **at), -gross),
                         (account(K.PLATFORM_FEES, currency=cur, **at), fee), (proceeds, -fee)])


def post_fills(lot) -> list[Transaction]:
    """The trade confirmation: coins delivered, gross proceeds earned, the platform's fee taken."""
    posted = [_fill(fill, lot) for fill in lot.fills.order_by("id")]
    _check(lot.entrustment)
    return posted


# --------------------------------------------------------------------------- money


def post_offshore_receipt(receipt) -> Transaction:
    e, cur, amount = receipt.entrustment, receipt.currency, to_minor(receipt.amount)
    at = dict(case=e.case, entrustment=e, currency=cur)
    posted = post(key=f"offshore:{receipt.pk}", kind=T.OFFSHORE_RECEIPT, case=e.case, entrustment=e,
                  description=f"{receipt.bank_reference} {receipt.amount} {cur}",
                  entries=[(account(K.OFFSHORE, **at), amount), (account(K.PROCEEDS_AT_PLATFORM, **at), -amount)])
    _check(e)
    return posted


def post_conversion(fx) -> Transaction | None:
    """The bank converted: the foreign currency leaves the offshore account, CNY arrives. A rejection
    moves nothing and posts nothing."""
    from settlements.models import FxOutcome

    if fx.outcome != FxOutcome.APPROVED:
        return None
    e = fx.entrustment
    at = dict(case=e.case, entrustment=e)
    foreign, cny = to_minor(fx.amount_foreign), to_minor(fx.amount_cny)
    posted = post(key=f"fx:{fx.pk}", kind=T.CONVERSION, case=e.case, entrustment=e,
                  description=f"{fx.slip_reference} {fx.amount_foreign} {fx.currency} @ {fx.rate}",
                  entries=[(account(K.FX_EXCHANGE, currency=fx.currency, **at), foreign),
                           (account(K.OFFSHORE, currency=fx.currency, **at), -foreign),
                           (account(K.CONVERTED, currency=CNY, **at), cny),
                           (account(K.FX_EXCHANGE, currency=CNY, **at), -cny)])
    _check(e)
    return posted


def _cny_move(*, key: str, kind: str, entrustment, description: str, to: str, source: str, amount) -> Transaction:
    at = dict(case=entrustment.case, entrustment=entrustment, currency=CNY)
    minor = to_minor(amount)
    posted = post(key=key, kind=kind, case=entrustment.case, entrustment=entrustment, description=description,
                  entries=[(account(to, **at), minor), (account(source, **at), -minor)])
    _check(entrustment)
    return posted


def post_special_account_credit(credit) -> Transaction:
    return _cny_move(key=f"credit:{credit.pk}", kind=T.SPECIAL_ACCOUNT_CREDIT, entrustment=credit.entrustment,
                     description=f"{credit.slip_reference} → {credit.account_no}", to=K.SPECIAL_ACCOUNT,
                     source=K.CONVERTED, amount=credit.amount_cny)


def post_victim_return(victim_return) -> Transaction | None:
    """Posted once the return is approved (a quorum may need more than one approver)."""
    if not victim_return.approved_at:
        return None
    return _cny_move(key=f"victim-return:{victim_return.pk}", kind=T.VICTIM_RETURN,
                     entrustment=victim_return.entrustment, description=f"{victim_return.basis}"[:200],
                     to=K.VICTIMS, source=K.SPECIAL_ACCOUNT, amount=victim_return.amount_cny)


def post_remittance(remittance) -> Transaction | None:
    """Posted once the treasury receipt is recorded (the approval quorum is met)."""
    if not remittance.remitted_at:
        return None
    return _cny_move(key=f"remittance:{remittance.pk}", kind=T.REMITTANCE, entrustment=remittance.entrustment,
                     description=f"{remittance.payment_code} {remittance.treasury_receipt}", to=K.TREASURY,
                     source=K.SPECIAL_ACCOUNT, amount=remittance.amount_cny)


def post_platform_transfer_fee(transfer) -> Transaction | None:
    """Custody broadcast the deposit and the fee it paid is now known: it too leaves custody, in transit.

    A deposit is instructed before custody builds the transaction; its fee is posted here, once, when the
    broadcast is recorded (``cases.services.transfer_record_broadcast``).
    """
    if not transfer.network_fee:
        return None
    key = f"transfer-fee:{transfer.reference}"
    if done := existing(key):
        return done
    e, asset = transfer.entrustment, transfer.asset
    sources = _custody_sources(e, asset, transfer.network_fee, transfer.from_address)
    posted = post(key=key, kind=T.PLATFORM_TRANSFER, case=e.case, entrustment=e,
                  description=f"{transfer.reference} network fee",
                  entries=[(account(K.IN_TRANSIT, case=e.case, entrustment=e, asset=asset), transfer.network_fee),
                           *((acct, -amount) for acct, amount in sources)])
    _check(e)
    return posted
