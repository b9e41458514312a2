"""DOMAIN.md's "every coin and every yuan is accounted for", as figures the ledger must agree with.

For a case and for an entrustment, `lines()` compares each account's ledger balance with the same figure
computed from the domain rows (holdings, transfers, fills, receipts, conversions, credit, remittance,
returns), adds the process's own equalities once the state says they must hold (proceeds − platform fees =
offshore receipt; converted = credit; credit = remittance + returns), refuses a negative balance where
something is held, and checks that every transaction balances per commodity.

`check()` runs after every posting (`check_holding()` after a declaration or an accepted difference, which
touch one holding) and raises `InvariantBreach` (rolling the step back) on any difference;
`manage.py reconcile` prints the same lines for every case and entrustment.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal

from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from cases.workflow import DisposalError

from .models import CNY, HOLDING_KINDS, Account, AccountKind, Entry

K = AccountKind
log = logging.getLogger(__name__)


class InvariantBreach(DisposalError):
    """The ledger and the record disagree: the step that caused it is refused and rolled back."""

    def __init__(self, breaches: list[Line]):
        self.breaches = breaches
        super().__init__(" ".join(
            _("Ledger invariant breached on %(scope)s, %(commodity)s, %(name)s: ledger %(ledger)s, record "
              "%(domain)s (difference %(diff)s).")
            % {"scope": b.scope, "commodity": b.commodity, "name": b.name, "ledger": b.ledger_text,
               "domain": b.domain_text, "diff": b.difference_text}
            for b in breaches))


@dataclass
class Line:
    scope: str  # the entrustment or case number
    commodity: str  # "BTC", "USD", "CNY"
    name: str
    ledger: int  # base or minor units
    domain: int | None  # None: the line only requires the ledger balance not to be negative
    decimals: int = 2

    @property
    def difference(self) -> int:
        return self.ledger - (self.domain if self.domain is not None else max(self.ledger, 0))

    @property
    def ok(self) -> bool:
        return self.difference == 0

    # For templates, which cannot call format() with an argument.
    @property
    def ledger_text(self) -> str:
        return self.format(self.ledger)

    @property
    def domain_text(self) -> str:
        return self.format(self.domain) if self.domain is not None else "≥ 0"

    @property
    def difference_text(self) -> str:
        return self.format(self.difference)

    def format(self, units: int) -> str:
        if not self.decimals:
            return f"{units:,}"
        sign = "-" if units < 0 else ""
        whole, frac = divmod(abs(units), 10**self.decimals)
        return f"{sign}{whole:,}.{frac:0{self.decimals}d}"


# Names of the figures, as people read them in the reconcile table and the entrustment page.
SEIZED = gettext_lazy("at seizure address %(address)s")
DECLARED = gettext_lazy("declared seizure")
ADJUSTMENT = gettext_lazy("accepted detection difference")
ALL_COINS = gettext_lazy("seized = at seizure addresses + custody + in transit + platform + sold + network fees")
NOT_NEGATIVE = gettext_lazy("%(account)s is not negative")
PROCEEDS_RECEIVED = gettext_lazy("proceeds − platform fees = offshore receipt")
OFFSHORE_CONVERTED = gettext_lazy("offshore receipt = amount converted")
CONVERTED_CREDITED = gettext_lazy("CNY converted = special-account credit")
CREDIT_ALLOCATED = gettext_lazy("special-account credit = treasury remittance + returns to victims")
BALANCED = gettext_lazy("transaction %(key)s balances")

_AFTER = ["sold", "proceeds_received", "fx_rejected", "fx_cleared", "credited", "remitted", "closed"]


def _reached(entrustment, state: str) -> bool:
    """Whether the entrustment is at or past `state` on the money path (a dispute keeps its place)."""
    current = entrustment.state_before_dispute if entrustment.state == "disputed" else entrustment.state
    return current in _AFTER and _AFTER.index(current) >= _AFTER.index(state)


def _minor(amount) -> int:
    from .postings import to_minor

    return to_minor(amount or Decimal("0"))


def _balances(accounts) -> dict[int, int]:
    totals = defaultdict(int)
    for account_id, amount in Entry.objects.filter(account__in=accounts).values_list("account_id", "amount"):
        totals[account_id] += amount
    return totals


# --------------------------------------------------------------------------- a case: the seizure side


def case_lines(case) -> list[Line]:
    from cases.models import CoinTransfer, TransferKind, TransferStatus

    accounts = list(Account.objects.filter(case=case, entrustment=None).select_related("asset"))
    bal = _balances(accounts)
    by = {(a.kind, a.asset_id, a.address): bal[a.pk] for a in accounts}
    out: list[Line] = []
    moved = defaultdict(int)
    for holding_id, amount, fee in CoinTransfer.objects.filter(
            holding__case=case, kind=TransferKind.TO_CUSTODY).exclude(status=TransferStatus.FAILED).values_list(
            "holding_id", "amount", "network_fee"):
        moved[holding_id] += amount + fee
    declared, adjusted, assets = defaultdict(int), defaultdict(int), {}
    for h in case.holdings.select_related("asset").order_by("asset__symbol", "id"):
        assets[h.asset_id] = h.asset
        declared[h.asset_id] += h.declared_amount
        adjusted[h.asset_id] += h.accepted_amount - h.declared_amount
        out.append(Line(case.case_number, h.asset.symbol, SEIZED % {"address": h.address},
                        by.get((K.SEIZED, h.asset_id, h.address), 0), h.accepted_amount - moved[h.pk],
                        h.asset.decimals))
    for asset_id, asset in assets.items():
        out.append(Line(case.case_number, asset.symbol, str(DECLARED), by.get((K.SEIZURE_DECLARED, asset_id, ""), 0),
                        -declared[asset_id], asset.decimals))
        out.append(Line(case.case_number, asset.symbol, str(ADJUSTMENT),
                        by.get((K.SEIZURE_ADJUSTMENT, asset_id, ""), 0), -adjusted[asset_id], asset.decimals))
    out += _not_negative(case.case_number, accounts, bal)
    return out


def _not_negative(scope: str, accounts, bal) -> list[Line]:
    """Only the breaches: a line per account would drown the table."""
    return [Line(scope, a.commodity_label, NOT_NEGATIVE % {"account": a}, bal[a.pk], None,
                 a.asset.decimals if a.asset_id else 2)
            for a in accounts if a.kind in HOLDING_KINDS and bal[a.pk] < 0]


# --------------------------------------------------------------------------- an entrustment


def entrustment_lines(entrustment) -> list[Line]:
    accounts = list(Account.objects.filter(entrustment=entrustment).select_related("asset"))
    bal = _balances(accounts)
    ledger = defaultdict(int)  # (kind, asset id or currency) → balance over addresses
    for a in accounts:
        ledger[(a.kind, a.asset_id or a.currency)] += bal[a.pk]
    scope = entrustment.number
    out = _coin_lines(entrustment, ledger) + _money_lines(entrustment, ledger)
    out += _not_negative(scope, accounts, bal)
    out += _unbalanced(scope, Entry.objects.filter(transaction__entrustment=entrustment))
    return out


def _coin_lines(entrustment, ledger) -> list[Line]:
    from cases.models import CoinTransfer, Fill, TransferKind, TransferStatus

    scope, out = entrustment.number, []
    holdings = list(entrustment.holdings.select_related("asset"))
    seized_accounts = Account.objects.filter(case=entrustment.case_id, entrustment=None, kind=K.SEIZED)
    seized_bal = _balances(seized_accounts)
    seized_by_address = {(a.asset_id, a.address): seized_bal[a.pk] for a in seized_accounts}
    d = defaultdict(int)  # (figure, asset id) → domain amount
    for h in holdings:
        d[("accepted", h.asset_id)] += h.accepted_amount
        d[("seized", h.asset_id)] += seized_by_address.get((h.asset_id, h.address), 0)
    transfers = CoinTransfer.objects.filter(entrustment=entrustment).values_list("asset_id", "kind", "status",
                                                                                  "amount", "network_fee")
    for asset_id, kind, status, amount, fee in transfers:
        if kind == TransferKind.TO_CUSTODY and status == TransferStatus.CONFIRMED:
            d[(K.CUSTODY, asset_id)] += amount
            d[(K.NETWORK_FEES, asset_id)] += fee
        elif kind == TransferKind.TO_PLATFORM and status != TransferStatus.FAILED:
            d[(K.CUSTODY, asset_id)] -= amount + fee
            if status == TransferStatus.INSTRUCTED:
                d[(K.IN_TRANSIT, asset_id)] += amount + fee
            else:
                d[(K.AT_PLATFORM, asset_id)] += amount
                d[(K.NETWORK_FEES, asset_id)] += fee
    for asset_id, quantity in Fill.objects.filter(lot__entrustment=entrustment).values_list("lot__asset_id",
                                                                                          "quantity"):
        d[(K.SOLD, asset_id)] += quantity
        d[(K.AT_PLATFORM, asset_id)] -= quantity
    assets = {h.asset_id: h.asset for h in holdings}
    for asset_id, asset in sorted(assets.items(), key=lambda item: item[1].symbol):
        line = lambda name, led, dom: Line(scope, asset.symbol, str(name), led, dom, asset.decimals)  # noqa: E731
        for kind in (K.CUSTODY, K.IN_TRANSIT, K.AT_PLATFORM, K.SOLD, K.NETWORK_FEES):
            out.append(line(K(kind).label, ledger[(kind, asset_id)], d[(kind, asset_id)]))
        held = d[("seized", asset_id)] + sum(ledger[(k, asset_id)] for k in (
            K.CUSTODY, K.IN_TRANSIT, K.AT_PLATFORM, K.SOLD, K.NETWORK_FEES))
        out.append(line(ALL_COINS, held, d[("accepted", asset_id)]))
    return out


def _money_lines(entrustment, ledger) -> list[Line]:
    from cases.models import Fill
    from settlements.models import FxConversion, FxOutcome, OffshoreReceipt

    scope = entrustment.number
    d = defaultdict(int)
    currencies = set()
    for cur, gross, fee in Fill.objects.filter(lot__entrustment=entrustment).values_list("currency", "gross", "fee"):
        currencies.add(cur)
        d[(K.SALE_PROCEEDS, cur)] -= _minor(gross)
        d[(K.PLATFORM_FEES, cur)] += _minor(fee)
        d[(K.PROCEEDS_AT_PLATFORM, cur)] += _minor(gross) - _minor(fee)
    for cur, amount in OffshoreReceipt.objects.filter(entrustment=entrustment).values_list("currency", "amount"):
        currencies.add(cur)
        d[(K.OFFSHORE, cur)] += _minor(amount)
        d[(K.PROCEEDS_AT_PLATFORM, cur)] -= _minor(amount)
    approved = FxConversion.objects.filter(entrustment=entrustment, outcome=FxOutcome.APPROVED)
    for cur, foreign, cny in approved.values_list("currency", "amount_foreign", "amount_cny"):
        currencies.add(cur)
        d[(K.OFFSHORE, cur)] -= _minor(foreign)
        d[(K.FX_EXCHANGE, cur)] += _minor(foreign)
        d[(K.FX_EXCHANGE, CNY)] -= _minor(cny)
        d[(K.CONVERTED, CNY)] += _minor(cny)
    credit = entrustment.credit if _has(entrustment, "credit") else None
    remittance = entrustment.remittance if _has(entrustment, "remittance") else None
    if credit is not None:
        d[(K.CONVERTED, CNY)] -= _minor(credit.amount_cny)
        d[(K.SPECIAL_ACCOUNT, CNY)] += _minor(credit.amount_cny)
    for amount in entrustment.victim_returns.filter(approved_at__isnull=False).values_list("amount_cny", flat=True):
        d[(K.SPECIAL_ACCOUNT, CNY)] -= _minor(amount)
        d[(K.VICTIMS, CNY)] += _minor(amount)
    if remittance is not None and remittance.remitted_at:
        d[(K.SPECIAL_ACCOUNT, CNY)] -= _minor(remittance.amount_cny)
        d[(K.TREASURY, CNY)] += _minor(remittance.amount_cny)

    out = []
    foreign_kinds = (K.SALE_PROCEEDS, K.PLATFORM_FEES, K.PROCEEDS_AT_PLATFORM, K.OFFSHORE, K.FX_EXCHANGE)
    for cur in sorted(currencies - {CNY}):
        for kind in foreign_kinds:
            out.append(Line(scope, cur, str(K(kind).label), ledger[(kind, cur)], d[(kind, cur)]))
        if _reached(entrustment, "proceeds_received"):
            out.append(Line(scope, cur, str(PROCEEDS_RECEIVED), ledger[(K.PROCEEDS_AT_PLATFORM, cur)], 0))
        if _reached(entrustment, "fx_cleared"):
            out.append(Line(scope, cur, str(OFFSHORE_CONVERTED), ledger[(K.OFFSHORE, cur)], 0))
    if currencies or any(ledger[(k, CNY)] for k in (K.CONVERTED, K.SPECIAL_ACCOUNT)):
        cny_kinds = (*(foreign_kinds if CNY in currencies else (K.FX_EXCHANGE,)), K.CONVERTED, K.SPECIAL_ACCOUNT,
                     K.TREASURY, K.VICTIMS)
        for kind in cny_kinds:
            out.append(Line(scope, CNY, str(K(kind).label), ledger[(kind, CNY)], d[(kind, CNY)]))
        if _reached(entrustment, "credited"):
            out.append(Line(scope, CNY, str(CONVERTED_CREDITED), ledger[(K.CONVERTED, CNY)], 0))
        if _reached(entrustment, "remitted"):
            out.append(Line(scope, CNY, str(CREDIT_ALLOCATED), ledger[(K.SPECIAL_ACCOUNT, CNY)], 0))
    return out


def _has(obj, related_name: str) -> bool:
    from django.core.exceptions import ObjectDoesNotExist

    try:
        getattr(obj, related_name)
        return True
    except ObjectDoesNotExist:
        return False


def _unbalanced(scope: str, entries) -> list[Line]:
    """A line for each transaction whose entries do not sum to zero in some commodity (only the failures)."""
    totals = defaultdict(int)
    labels = {}
    rows = entries.values_list("transaction__key", "account__asset_id", "account__asset__symbol",
                               "account__asset__decimals", "account__currency", "amount")
    for key, asset_id, symbol, decimals, currency, amount in rows:
        commodity = (key, asset_id or currency)
        totals[commodity] += amount
        labels[commodity] = (symbol or currency, decimals if asset_id else 2)
    return [Line(scope, labels[c][0], str(BALANCED % {"key": c[0]}), total, 0, labels[c][1])
            for c, total in totals.items() if total]


# --------------------------------------------------------------------------- checks


def holding_lines(holding) -> list[Line]:
    """The one holding's seizure account against the record. What a declaration can break; the case's totals
    are checked at the entrustment's next step and by reconcile (summing every holding of a 5,000-row import
    at each row would make the import quadratic)."""
    from cases.models import TransferKind, TransferStatus

    asset = holding.asset
    seized = Account.objects.filter(case=holding.case_id, entrustment=None, kind=K.SEIZED, asset=asset,
                                    address=holding.address)
    moved = holding.transfers.filter(kind=TransferKind.TO_CUSTODY).exclude(status=TransferStatus.FAILED)
    out = sum(amount + fee for amount, fee in moved.values_list("amount", "network_fee"))
    return [Line(holding.case.case_number, asset.symbol, str(SEIZED % {"address": holding.address}),
                 sum(_balances(seized).values(), 0), holding.accepted_amount - out, asset.decimals)]


def check_holding(holding) -> None:
    _raise_if_any(holding_lines(holding))


def _raise_if_any(lines: list[Line]) -> None:
    breaches = [line for line in lines if not line.ok]
    if breaches:
        log.error("ledger invariant breached: %s", breaches)
        raise InvariantBreach(breaches)


def check(entrustment) -> None:
    """Raise InvariantBreach if the ledger and the record disagree anywhere in this entrustment or its case."""
    from cases.models import Entrustment

    # Fresh: the caller's instance may hold cached relations from before the step it is taking.
    entrustment = Entrustment.objects.select_related("case").get(pk=entrustment.pk)
    _raise_if_any(case_lines(entrustment.case) + entrustment_lines(entrustment))
