"""Reads that are more than one line: what a person may see, and whether amounts reconcile."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from django.core.exceptions import ObjectDoesNotExist
from django.db.models import Q, Sum
from django.utils.translation import gettext as _

from agencies.models import Membership, OrgKind

from .models import CoinTransfer, Entrustment, EntrustmentState, Fill, Holding, Lot, LotState, TransferKind, TransferStatus


# --------------------------------------------------------------------------- visibility


def visible_entrustments(user):
    """Entrustments `user` may read: their bureau's, BCE's, the agency's appointed ones, all for supervisors."""
    if not user.is_authenticated:
        return Entrustment.objects.none()
    if user.is_superuser:
        return Entrustment.objects.all()
    memberships = Membership.objects.filter(user=user, is_active=True, organisation__is_active=True)
    kinds = dict(memberships.values_list("organisation_id", "organisation__kind"))
    if OrgKind.SUPERVISOR in kinds.values() or OrgKind.LEGAL_CORPS in kinds.values():
        # Supervisors and the Legal Affairs Corps oversee every bureau's disposals.
        return Entrustment.objects.all()
    org_ids = list(kinds)
    # A draft is the bureau's own business until its approver signs it off to BCE.
    return Entrustment.objects.filter(
        Q(bureau_id__in=org_ids)
        | (Q(bce_id__in=org_ids) & ~Q(state=EntrustmentState.DRAFT))
        | Q(agency_id__in=org_ids)
        | Q(platform_id__in=org_ids)
    )


def visible_cases(user):
    from .models import Case

    if not user.is_authenticated:
        return Case.objects.none()
    if user.is_superuser:
        return Case.objects.all()
    memberships = Membership.objects.filter(user=user, is_active=True, organisation__is_active=True)
    if memberships.filter(organisation__kind__in=[OrgKind.SUPERVISOR, OrgKind.LEGAL_CORPS]).exists():
        return Case.objects.all()
    return Case.objects.filter(
        Q(bureau__memberships__in=memberships) | Q(entrustments__in=visible_entrustments(user))
    ).distinct()


# --------------------------------------------------------------------------- reconciliation


@dataclass
class CoinLine:
    asset: object
    declared: int = 0
    accepted: int = 0
    to_custody: int = 0
    to_platform: int = 0
    network_fees: int = 0
    sold: int = 0

    @property
    def held_at_seizure(self) -> int:
        return self.accepted - self.to_custody - self._fees_of(TransferKind.TO_CUSTODY)

    @property
    def held_in_custody(self) -> int:
        return self.to_custody - self.to_platform - self._fees_of(TransferKind.TO_PLATFORM)

    @property
    def held_at_platform(self) -> int:
        return self.to_platform - self.sold

    @property
    def still_held(self) -> int:
        return self.held_at_seizure + self.held_in_custody + self.held_at_platform

    fees_by_kind: dict = field(default_factory=dict)

    def _fees_of(self, kind) -> int:
        return self.fees_by_kind.get(kind, 0)


@dataclass
class MoneyLine:
    currency: str
    net_proceeds: Decimal = Decimal("0")
    platform_fees: Decimal = Decimal("0")
    received_offshore: Decimal = Decimal("0")
    converted_foreign: Decimal = Decimal("0")


@dataclass
class Reconciliation:
    coins: list[CoinLine]
    money: list[MoneyLine]
    converted_cny: Decimal
    credited_cny: Decimal
    remitted_cny: Decimal
    returned_cny: Decimal
    problems: list[str]


def reconciliation(entrustment: Entrustment) -> Reconciliation:
    """Per asset: seized = transferred + network fees + still held, with nothing negative;
    per currency: proceeds − platform fees = offshore receipt = amount converted;
    in CNY: converted = special-account credit = treasury remittance + returns to victims."""
    from settlements.models import FxConversion, FxOutcome, OffshoreReceipt

    problems: list[str] = []
    lines: dict[int, CoinLine] = {}
    for h in Holding.objects.filter(entrustment=entrustment).select_related("asset"):
        line = lines.setdefault(h.asset_id, CoinLine(asset=h.asset))
        line.declared += h.declared_amount
        line.accepted += h.accepted_amount
    confirmed = CoinTransfer.objects.filter(entrustment=entrustment, status=TransferStatus.CONFIRMED)
    for asset_id, kind, amount, fee in confirmed.values_list("asset_id", "kind", "amount", "network_fee"):
        line = lines.get(asset_id)
        if line is None:
            problems.append(_("A transfer of an asset that is not among the holdings."))
            continue
        if kind == TransferKind.TO_CUSTODY:
            line.to_custody += amount
        else:
            line.to_platform += amount
        line.network_fees += fee
        line.fees_by_kind[kind] = line.fees_by_kind.get(kind, 0) + fee
    for asset_id, quantity in Fill.objects.filter(lot__entrustment=entrustment).values_list("lot__asset_id",
                                                                                          "quantity"):
        if asset_id in lines:
            lines[asset_id].sold += quantity
    for line in lines.values():
        symbol = line.asset.symbol
        for label, value in (
            (_("at the seizure addresses"), line.held_at_seizure),
            (_("in custody"), line.held_in_custody),
            (_("at the platform"), line.held_at_platform),
        ):
            if value < 0:
                problems.append(_("%(asset)s: more left %(where)s than was there (%(amount)s).")
                                % {"asset": symbol, "where": label, "amount": line.asset.format_amount(value)})
    _check_lots(entrustment, problems)

    money: dict[str, MoneyLine] = {}
    for row in Fill.objects.filter(lot__entrustment=entrustment).values("currency").annotate(
        gross=Sum("gross"), fee=Sum("fee")
    ):
        money[row["currency"]] = MoneyLine(row["currency"], row["gross"] - row["fee"], row["fee"])
    for row in OffshoreReceipt.objects.filter(entrustment=entrustment).values("currency").annotate(a=Sum("amount")):
        money.setdefault(row["currency"], MoneyLine(row["currency"])).received_offshore = row["a"]
    approved = FxConversion.objects.filter(entrustment=entrustment, outcome=FxOutcome.APPROVED)
    for row in approved.values("currency").annotate(a=Sum("amount_foreign")):
        money.setdefault(row["currency"], MoneyLine(row["currency"])).converted_foreign = row["a"]
    for m in money.values():
        if not (m.net_proceeds == m.received_offshore == m.converted_foreign):
            problems.append(
                _("%(cur)s: proceeds net of fees %(net)s, received offshore %(rcv)s, converted %(conv)s differ.")
                % {"cur": m.currency, "net": m.net_proceeds, "rcv": m.received_offshore, "conv": m.converted_foreign}
            )
    zero = Decimal("0.00")
    converted = approved.aggregate(s=Sum("amount_cny"))["s"] or zero
    credit = entrustment.credit if _has(entrustment, "credit") else None
    remittance = entrustment.remittance if _has(entrustment, "remittance") else None
    credited = credit.amount_cny if credit else zero
    remitted = remittance.amount_cny if remittance and remittance.remitted_at else zero
    returned = entrustment.victim_returns.filter(approved_at__isnull=False).aggregate(s=Sum("amount_cny"))["s"] or zero
    if converted != credited:
        problems.append(_("CNY converted %(a)s differs from the special-account credit %(b)s.")
                        % {"a": converted, "b": credited})
    if credited != remitted + returned:
        problems.append(_("The credit %(a)s is not fully accounted for: remitted %(b)s + returned %(c)s.")
                        % {"a": credited, "b": remitted, "c": returned})
    return Reconciliation(list(lines.values()), list(money.values()), converted, credited, remitted, returned,
                          problems)


def _has(obj, related_name: str) -> bool:
    try:
        getattr(obj, related_name)
        return True
    except ObjectDoesNotExist:
        return False


def _check_lots(entrustment, problems: list[str]) -> None:
    """An executed lot's fills add up to the lot; a partial one's fills plus its remainder do."""
    for lot in Lot.objects.filter(entrustment=entrustment).prefetch_related("fills", "remainders"):
        filled = sum(f.quantity for f in lot.fills.all())
        if lot.state == LotState.EXECUTED and filled != lot.quantity:
            problems.append(_("Lot %(n)s is executed but its fills add up to %(f)s of %(q)s.")
                            % {"n": lot.sequence, "f": filled, "q": lot.quantity})
        if lot.state == LotState.PARTIALLY_EXECUTED:
            remainder = sum(r.quantity for r in lot.remainders.all())
            if filled + remainder != lot.quantity:
                problems.append(_("Lot %(n)s: fills %(f)s and remainder %(r)s do not make up %(q)s.")
                                % {"n": lot.sequence, "f": filled, "r": remainder, "q": lot.quantity})
