"""The forms of the entrustment page: one per action, labelled, with errors at the field.

A form only turns what a person typed into the arguments of the service it feeds
(`service_kwargs`); the service decides. Amounts typed in coin units go through
`cases.services.parse_amount`, money through `parse_money`, so the page refuses exactly
what the services refuse and says so next to the field. When the service still refuses,
`add_service_error` puts its message on the field it names, or above the form.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.template.defaultfilters import filesizeformat
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from agencies.models import Appointment, Organisation, OrgKind

from .evidence import ACCEPT, check_evidence_file
from .models import (
    Asset,
    EvidenceKind,
    LotState,
    ReserveRule,
    TransferKind,
    TransferStatus,
    WhitelistedAddress,
    WhitelistPurpose,
    WhitelistState,
)
from .services import FillRecord, Observation, TransferRecord, parse_address, parse_amount, parse_money
from .workflow import DisposalError

REASON_WIDGET = {"widget": forms.Textarea(attrs={"rows": 2, "cols": 60}), "max_length": 2000}
DATETIME_WIDGET = forms.DateTimeInput(attrs={"type": "datetime-local", "step": "1"}, format="%Y-%m-%dT%H:%M:%S")


def plain_amount(asset, base_units: int) -> str:
    """Base units as the plain decimal a person would type back ("2.49999", no grouping)."""
    whole, frac = divmod(base_units, asset.unit)
    if not asset.decimals or not frac:
        return str(whole)
    return f"{whole}.{frac:0{asset.decimals}d}".rstrip("0")


def organisations(kind):
    return Organisation.objects.filter(kind=kind, is_active=True).order_by("name")


class OrganisationChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj):
        return obj.name


# --------------------------------------------------------------------------- the base


class ActionForm(forms.Form):
    """A form bound to the record it acts on: the entrustment, and a lot or a return when it has one."""

    # Shown above the form: what the person approves or should know before acting.
    summary_template = ""
    # Service error keys that are called differently on the form.
    field_map: dict[str, str] = {}

    def __init__(self, data=None, files=None, *, entrustment, target=None, **kwargs):
        self.entrustment = entrustment
        self.target = target
        super().__init__(data, files, **kwargs)
        self.groups: list[tuple[str, list[str]]] = []
        self.build()

    def build(self):
        """Add the fields that depend on the record (one per holding, per asset, per transfer)."""

    def service_kwargs(self) -> dict:
        return {"entrustment": self.entrustment}

    # --- rendering

    def fieldsets(self):
        """[(legend or None, [bound fields])]: the ungrouped fields first, then one fieldset per group."""
        grouped = {name for _legend, names in self.groups for name in names}
        result = [(None, [self[name] for name in self.fields if name not in grouped])]
        result += [(legend, [self[name] for name in names]) for legend, names in self.groups]
        return [(legend, fields) for legend, fields in result if fields]

    # --- errors

    def add_service_error(self, exc: Exception) -> None:
        """Put a service's refusal where the person will look for it."""
        if isinstance(exc, DisposalError):
            self.add_error(self._field_for(exc.field), exc.message)
            return
        if hasattr(exc, "error_dict"):
            for key, errors in exc.message_dict.items():
                self.add_error(self._field_for(key), errors)
        else:
            self.add_error(None, exc.messages)

    def _field_for(self, key):
        key = self.field_map.get(key, key)
        return key if key in self.fields else None

    # --- parsing helpers for dynamic fields

    def units(self, name, asset, *, allow_zero=False):
        """Coin units typed into field `name`, as base units of `asset`; None (with a field error) if refused."""
        text = self.cleaned_data.get(name)
        if text in (None, ""):
            return None
        if allow_zero:
            try:
                if Decimal(str(text).strip()) == 0:
                    return 0
            except InvalidOperation:
                pass
        try:
            return parse_amount(text, asset=asset, field=name)
        except ValidationError as exc:
            self.add_error(name, exc.messages)
            return None

    def money(self, name, *, places=2, allow_zero=False):
        text = self.cleaned_data.get(name)
        if text in (None, ""):
            return None
        if allow_zero:
            try:
                if Decimal(str(text).strip()) == 0:
                    return Decimal("0")
            except InvalidOperation:
                pass
        try:
            return parse_money(text, field=name, places=places)
        except ValidationError as exc:
            self.add_error(name, exc.messages)
            return None


class ConfirmForm(ActionForm):
    """An action with nothing to type: the button is the decision."""


class NoteForm(ActionForm):
    reason = forms.CharField(label=gettext_lazy("Note (optional)"), required=False, **REASON_WIDGET)

    def service_kwargs(self):
        return {**super().service_kwargs(), "reason": self.cleaned_data["reason"]}


class ReasonForm(ActionForm):
    reason = forms.CharField(label=gettext_lazy("Reason"), help_text=gettext_lazy("Kept on the record."),
                             **REASON_WIDGET)

    def service_kwargs(self):
        return {**super().service_kwargs(), "reason": self.cleaned_data["reason"]}


# --------------------------------------------------------------------------- bureau and BCE


class SubmitForm(NoteForm):
    summary_template = "cases/partials/summary_submit.html"

    def build(self):
        self.problems = self.entrustment.case.legal_basis_problems()


class AppointAgencyForm(ActionForm):
    agency = OrganisationChoiceField(label=gettext_lazy("Service agency"), queryset=organisations(OrgKind.AGENCY))
    valuation_cny = forms.CharField(label=gettext_lazy("Valuation of the holdings (CNY)"), max_length=40,
                                    help_text=gettext_lazy("The bond is sized on this value."))
    valuation_source = forms.CharField(label=gettext_lazy("Valuation source"), max_length=200)
    qualification_note = forms.CharField(label=gettext_lazy("Qualification"), **REASON_WIDGET)
    capacity_note = forms.CharField(label=gettext_lazy("Capacity"), **REASON_WIDGET)
    conflicts_declared = forms.CharField(label=gettext_lazy("Conflicts declared"),
                                         help_text=gettext_lazy("Write “none” when there are none."),
                                         **REASON_WIDGET)

    def service_kwargs(self):
        return {**super().service_kwargs(), **self.cleaned_data}


class PostBondForm(ActionForm):
    posted_cny = forms.CharField(label=gettext_lazy("Bond posted (CNY)"), max_length=40)
    reference = forms.CharField(label=gettext_lazy("Bank guarantee or receipt reference"), max_length=100)

    def build(self):
        appointment = Appointment.objects.filter(entrustment=self.entrustment, is_current=True).first()
        if appointment is not None:
            from agencies.models import PerformanceBond

            ratio = self.entrustment.policy.bond_ratio
            required = PerformanceBond.required_for(appointment.valuation_cny, ratio)
            self.fields["posted_cny"].help_text = _(
                "At least %(req)s CNY: %(pct)s%% of the valuation %(val)s CNY.") % {
                "req": required, "pct": f"{(ratio * 100).normalize():f}", "val": appointment.valuation_cny}

    def service_kwargs(self):
        return {**super().service_kwargs(), **self.cleaned_data}


# --------------------------------------------------------------------------- detection and custody


def _holdings(entrustment):
    return list(entrustment.holdings.all())


class DetectionForm(ActionForm):
    witness = OrganisationChoiceField(label=gettext_lazy("Technical witness"), required=False,
                                      queryset=organisations(OrgKind.WITNESS))
    field_map = {"observations": None}

    def build(self):
        self.holdings = _holdings(self.entrustment)
        for h in self.holdings:
            declared = h.asset.format_amount(h.declared_amount)
            self.fields[f"h{h.pk}_observed"] = forms.CharField(
                label=_("Observed balance (%(sym)s)") % {"sym": h.asset.symbol}, max_length=100,
                help_text=_("Declared: %(amt)s %(sym)s. Type what the chain shows, in coin units.")
                % {"amt": declared, "sym": h.asset.symbol})
            self.fields[f"h{h.pk}_block_height"] = forms.IntegerField(label=_("Block height"), min_value=0)
            self.fields[f"h{h.pk}_controlled"] = forms.BooleanField(
                label=_("Control of the address proven"), required=False)
            self.groups.append((f"{h.asset.symbol} · {h.address}",
                                [f"h{h.pk}_observed", f"h{h.pk}_block_height", f"h{h.pk}_controlled"]))

    def clean(self):
        data = super().clean()
        self.observations = []
        for h in self.holdings:
            observed = self.units(f"h{h.pk}_observed", h.asset, allow_zero=True)
            height = data.get(f"h{h.pk}_block_height")
            if observed is not None and height is not None:
                self.observations.append(Observation(holding=h, observed_amount=observed, block_height=height,
                                                     controlled=bool(data.get(f"h{h.pk}_controlled"))))
        return data

    def service_kwargs(self):
        return {**super().service_kwargs(), "observations": self.observations,
                "witness": self.cleaned_data.get("witness")}


class CustodyReceiveForm(ActionForm):
    """The hand-over: one transfer per holding, from the seizure address to the agency's custody."""

    field_map = {"transfers": None}

    def build(self):
        self.holdings = _holdings(self.entrustment)
        for h in self.holdings:
            sym = h.asset.symbol
            self.fields[f"h{h.pk}_to_address"] = forms.CharField(label=_("Custody address"), max_length=120)
            self.fields[f"h{h.pk}_amount"] = forms.CharField(
                label=_("Amount received (%(sym)s)") % {"sym": sym}, max_length=100,
                help_text=_("Accepted for disposal: %(amt)s %(sym)s; the amount plus the fee may not exceed it.")
                % {"amt": h.asset.format_amount(h.accepted_amount), "sym": sym})
            self.fields[f"h{h.pk}_network_fee"] = forms.CharField(
                label=_("Network fee (%(sym)s)") % {"sym": sym}, max_length=100)
            self.fields[f"h{h.pk}_txid"] = forms.CharField(label=_("Transaction id"), max_length=100)
            self.groups.append((f"{sym} · {h.address}", [f"h{h.pk}_{n}" for n in
                                                          ("to_address", "amount", "network_fee", "txid")]))

    def clean(self):
        data = super().clean()
        self.transfers = []
        for h in self.holdings:
            p = f"h{h.pk}_"
            amount = self.units(p + "amount", h.asset)
            fee = self.units(p + "network_fee", h.asset, allow_zero=True)
            address = None
            if data.get(p + "to_address"):
                try:
                    address = parse_address(data[p + "to_address"], asset=h.asset, field=p + "to_address")
                except ValidationError as exc:
                    self.add_error(p + "to_address", exc.messages)
            if None not in (amount, fee, address) and data.get(p + "txid"):
                self.transfers.append(TransferRecord(holding=h, asset=h.asset, to_address=address, amount=amount,
                                                     network_fee=fee, txid=data[p + "txid"]))
        return data

    def service_kwargs(self):
        return {**super().service_kwargs(), "transfers": self.transfers}


# --------------------------------------------------------------------------- lots and reserve


def _assets(entrustment):
    seen = {}
    for h in entrustment.holdings.all():
        seen.setdefault(h.asset_id, h.asset)
    return sorted(seen.values(), key=lambda a: a.symbol)


class LotsPlanForm(ActionForm):
    field_map = {"tranche_caps": None, "fee_allowances": None}

    def build(self):
        self.assets = _assets(self.entrustment)
        for a in self.assets:
            self.fields[f"a{a.pk}_tranche_cap"] = forms.CharField(
                label=_("Tranche cap (%(sym)s)") % {"sym": a.symbol}, required=False, max_length=100,
                help_text=_("Largest lot; leave empty to sell the asset in one lot."))
            self.fields[f"a{a.pk}_fee_allowance"] = forms.CharField(
                label=_("Network-fee allowance (%(sym)s)") % {"sym": a.symbol}, required=False, max_length=100,
                initial="0", help_text=_("Kept back in custody for the fee of the transfer to the platform."))
            self.groups.append((a.symbol, [f"a{a.pk}_tranche_cap", f"a{a.pk}_fee_allowance"]))

    def clean(self):
        data = super().clean()
        self.caps, self.allowances = {}, {}
        for a in self.assets:
            cap = self.units(f"a{a.pk}_tranche_cap", a)
            allowance = self.units(f"a{a.pk}_fee_allowance", a, allow_zero=True)
            if cap is not None:
                self.caps[a.pk] = cap
            if allowance is not None:
                self.allowances[a.pk] = allowance
        return data

    def service_kwargs(self):
        return {**super().service_kwargs(), "tranche_caps": self.caps, "fee_allowances": self.allowances}


def _split_prices(text: str) -> list[str]:
    return [p for p in text.replace(";", " ").split() if p]


class ReserveProposeForm(ActionForm):
    price = forms.CharField(label=gettext_lazy("Reserve price per coin"), max_length=40)
    reference_prices = forms.CharField(
        label=gettext_lazy("Reference prices"), required=False,
        widget=forms.Textarea(attrs={"rows": 4, "cols": 30}),
        help_text=gettext_lazy("One price per line, oldest first."))
    source = forms.CharField(label=gettext_lazy("Source of the reference prices"), required=False, max_length=200)
    window = forms.CharField(label=gettext_lazy("Time window"), required=False, max_length=200,
                             help_text=gettext_lazy("e.g. the 20 trading days before the trade date."))
    field_map = {"inputs": "reference_prices"}

    def build(self):
        lot, policy = self.target, self.entrustment.policy
        self.fields["price"].label = _("Reserve price per coin (%(cur)s)") % {"cur": lot.quote_currency}
        self.first_round = lot.state == LotState.PLANNED
        if self.first_round and policy.reserve_rule == ReserveRule.REFERENCE_AVERAGE:
            self.fields["reference_prices"].help_text = _(
                "The closing prices of the %(n)s trading days before the trade date, one per line. The reserve "
                "may not be below their average.") % {"n": policy.reference_days}
        if self.first_round and policy.reserve_rule == ReserveRule.VALUATION:
            self.fields["valuation_price"] = forms.CharField(label=_("Valuation price per coin"), max_length=40)
        if self.first_round and policy.reserve_rule == ReserveRule.ISSUER_BUYBACK:
            self.fields["face_value"] = forms.CharField(label=_("Face value per token"), max_length=40)
        if self.first_round:
            self.fields["source"].required = True
        else:
            previous = max((r for r in lot.reserves.all() if r.approved_at), key=lambda r: r.round_no, default=None)
            if previous is not None:
                floor = (previous.price * (1 - policy.max_reserve_cut)).quantize(Decimal("0.00000001"))
                self.fields["price"].help_text = _(
                    "Previous reserve %(prev)s; a cut of at most %(pct)s%% allows no less than %(floor)s.") % {
                    "prev": previous.price, "pct": f"{(policy.max_reserve_cut * 100).normalize():f}",
                    "floor": floor}

    def clean_reference_prices(self):
        prices = _split_prices(self.cleaned_data["reference_prices"])
        for p in prices:
            try:
                if not Decimal(p.replace(",", "")).is_finite():
                    raise InvalidOperation
            except InvalidOperation:
                raise ValidationError(_("“%(p)s” is not a price.") % {"p": p})
        return [p.replace(",", "") for p in prices]

    def service_kwargs(self):
        data = self.cleaned_data
        inputs = {"reference_prices": data["reference_prices"], "source": data["source"].strip(),
                  "window": data["window"].strip()}
        for extra in ("valuation_price", "face_value"):
            if data.get(extra):
                inputs[extra] = data[extra].strip()
        return {"lot": self.target, "price": data["price"], "inputs": inputs}


class LotNoteForm(NoteForm):
    def service_kwargs(self):
        return {"lot": self.target, "reason": self.cleaned_data["reason"]}


class LotReasonForm(ReasonForm):
    def service_kwargs(self):
        return {"lot": self.target, "reason": self.cleaned_data["reason"]}


class LotConfirmForm(ConfirmForm):
    def service_kwargs(self):
        return {"lot": self.target}


def current_round(lot):
    return max(lot.rounds.all(), key=lambda r: r.number, default=None)


def pending_reserve(lot):
    return next((r for r in lot.reserves.all() if r.round_no == lot.failed_rounds + 1 and not r.approved_at), None)


def _average(prices) -> Decimal | None:
    try:
        values = [Decimal(str(p)) for p in prices]
    except InvalidOperation:
        return None
    return (sum(values) / len(values)).quantize(Decimal("0.01")) if values else None


class ReserveApproveForm(LotNoteForm):
    summary_template = "cases/partials/summary_reserve.html"

    def build(self):
        self.reserve = pending_reserve(self.target)
        inputs = self.reserve.inputs if self.reserve else {}
        self.reference_prices = inputs.get("reference_prices", [])
        self.average = _average(self.reference_prices)


class InquiryCloseForm(LotConfirmForm):
    summary_template = "cases/partials/summary_quotes.html"

    def build(self):
        _quote_comparison(self)


class AwardApproveForm(LotNoteForm):
    """The BCE approver sees what they approve: every quote of the round against the reserve."""

    summary_template = "cases/partials/summary_quotes.html"

    def build(self):
        _quote_comparison(self)


def _quote_comparison(form):
    form.round = current_round(form.target)
    form.reserve = form.round.reserve if form.round else None
    form.quotes = sorted(form.round.quotes.all(), key=lambda q: (-q.price, q.quoted_at)) if form.round else []
    form.best = form.quotes[0] if form.quotes else None
    inputs = form.reserve.inputs if form.reserve else {}
    form.reference_prices = inputs.get("reference_prices", [])
    form.average = _average(form.reference_prices)
    form.min_quotes = form.entrustment.policy.min_quotes
    for q in form.quotes:
        q.quantity_display = form.target.asset.format_amount(q.quantity)
        q.vs_reserve = q.price - form.reserve.price if form.reserve else None
        q.at_or_above = form.reserve is not None and q.price >= form.reserve.price


class QuoteForm(ActionForm):
    platform = OrganisationChoiceField(label=gettext_lazy("Platform"), queryset=organisations(OrgKind.PLATFORM))
    reference = forms.CharField(label=gettext_lazy("Platform's quote reference"), max_length=100)
    price = forms.CharField(label=gettext_lazy("Price per coin"), max_length=40)
    quantity = forms.CharField(label=gettext_lazy("Quantity"), max_length=100)
    quoted_at = forms.DateTimeField(label=gettext_lazy("Quoted at"), widget=DATETIME_WIDGET)
    expires_at = forms.DateTimeField(label=gettext_lazy("Expires at"), widget=DATETIME_WIDGET)

    def build(self):
        lot = self.target
        self.fields["price"].label = _("Price per coin (%(cur)s)") % {"cur": lot.quote_currency}
        self.fields["quantity"].label = _("Quantity (%(sym)s)") % {"sym": lot.asset.symbol}
        self.fields["quantity"].initial = plain_amount(lot.asset, lot.quantity)

    def clean(self):
        data = super().clean()
        self.quantity_units = self.units("quantity", self.target.asset)
        return data

    def service_kwargs(self):
        data = self.cleaned_data
        return {"lot": self.target, "platform": data["platform"], "reference": data["reference"].strip(),
                "price": data["price"], "quantity": self.quantity_units, "quoted_at": data["quoted_at"],
                "expires_at": data["expires_at"]}


FILL_ROWS = 3
FILL_FIELDS = ("trade_id", "quantity", "price", "gross", "fee", "executed_at")


class ExecutionForm(ActionForm):
    """The platform's trade confirmation, one row per fill; empty rows are ignored."""

    field_map = {"fills": None}

    def build(self):
        lot = self.target
        sym, cur = lot.asset.symbol, lot.quote_currency
        for n in range(1, FILL_ROWS + 1):
            required = n == 1
            p = f"f{n}_"
            self.fields[p + "trade_id"] = forms.CharField(label=_("Trade id"), max_length=100, required=required)
            self.fields[p + "quantity"] = forms.CharField(label=_("Quantity (%(sym)s)") % {"sym": sym},
                                                          max_length=100, required=required)
            self.fields[p + "price"] = forms.CharField(label=_("Price (%(cur)s)") % {"cur": cur}, max_length=40,
                                                       required=required)
            self.fields[p + "gross"] = forms.CharField(label=_("Gross proceeds (%(cur)s)") % {"cur": cur},
                                                       max_length=40, required=required)
            self.fields[p + "fee"] = forms.CharField(label=_("Platform fee (%(cur)s)") % {"cur": cur},
                                                     max_length=40, required=required)
            self.fields[p + "executed_at"] = forms.DateTimeField(label=_("Executed at"), widget=DATETIME_WIDGET,
                                                                 required=required)
            self.groups.append((_("Fill %(n)s") % {"n": n}, [p + f for f in FILL_FIELDS]))
        if self.target:
            self.fields["f1_quantity"].initial = plain_amount(lot.asset, lot.quantity)

    def clean(self):
        data = super().clean()
        self.fills = []
        for n in range(1, FILL_ROWS + 1):
            p = f"f{n}_"
            if n > 1 and not any(data.get(p + f) for f in FILL_FIELDS) and not any(
                    self.has_error(p + f) for f in FILL_FIELDS):
                continue
            for f in FILL_FIELDS:
                if n > 1 and not data.get(p + f) and not self.has_error(p + f):
                    self.add_error(p + f, _("This field is required."))
            quantity = self.units(p + "quantity", self.target.asset)
            price = self.money(p + "price", places=8)
            gross = self.money(p + "gross")
            fee = self.money(p + "fee", allow_zero=True)
            if None not in (quantity, price, gross, fee) and data.get(p + "trade_id") and data.get(p + "executed_at"):
                self.fills.append(FillRecord(trade_id=data[p + "trade_id"].strip(), quantity=quantity, price=price,
                                             gross=gross, fee=fee, executed_at=data[p + "executed_at"]))
        return data

    def service_kwargs(self):
        return {"lot": self.target, "fills": self.fills}


# --------------------------------------------------------------------------- transfer to the platform


class InstructTransferForm(ActionForm):
    platform = OrganisationChoiceField(label=gettext_lazy("Licensed platform"),
                                       queryset=organisations(OrgKind.PLATFORM))
    field_map = {"deposits": None}

    def build(self):
        planned = {}
        for lot in self.entrustment.lots.all():
            if lot.parent_id is None:
                asset, total = planned.get(lot.asset_id, (lot.asset, 0))
                planned[lot.asset_id] = (asset, total + lot.quantity)
        self.assets = sorted((a for a, _t in planned.values()), key=lambda a: a.symbol)
        for asset, total in planned.values():
            sym, p = asset.symbol, f"a{asset.pk}_"
            self.fields[p + "to_address"] = forms.CharField(label=_("Platform deposit address (%(sym)s)")
                                                            % {"sym": sym}, max_length=120)
            self.fields[p + "amount"] = forms.CharField(
                label=_("Amount (%(sym)s)") % {"sym": sym}, max_length=100, initial=plain_amount(asset, total),
                help_text=_("At least the %(amt)s %(sym)s planned for sale.")
                % {"amt": asset.format_amount(total), "sym": sym})
            self.fields[p + "network_fee"] = forms.CharField(label=_("Network fee (%(sym)s)") % {"sym": sym},
                                                             max_length=100)
            self.groups.append((sym, [p + "to_address", p + "amount", p + "network_fee"]))

    def clean(self):
        data = super().clean()
        self.deposits = []
        for asset in self.assets:
            p = f"a{asset.pk}_"
            amount = self.units(p + "amount", asset)
            fee = self.units(p + "network_fee", asset, allow_zero=True)
            address = None
            if data.get(p + "to_address"):
                try:
                    address = parse_address(data[p + "to_address"], asset=asset, field=p + "to_address")
                except ValidationError as exc:
                    self.add_error(p + "to_address", exc.messages)
            if None not in (amount, fee, address):
                self.deposits.append(TransferRecord(holding=None, asset=asset, to_address=address, amount=amount,
                                                    network_fee=fee, txid="", from_address="custody"))
        return data

    def service_kwargs(self):
        return {**super().service_kwargs(), "platform": self.cleaned_data["platform"], "deposits": self.deposits}


class ConfirmDepositForm(ActionForm):
    field_map = {"txids": None}

    def build(self):
        self.pending = [t for t in self.entrustment.transfers.all()
                        if t.kind == TransferKind.TO_PLATFORM and t.status == TransferStatus.INSTRUCTED]
        for t in self.pending:
            self.fields[f"t{t.pk}_txid"] = forms.CharField(
                label=_("Transaction id of %(ref)s") % {"ref": t.reference}, max_length=100, initial=t.txid,
                help_text=_("%(amt)s %(sym)s to %(addr)s") % {"amt": t.asset.format_amount(t.amount),
                                                              "sym": t.asset.symbol, "addr": t.to_address})

    def service_kwargs(self):
        return {**super().service_kwargs(),
                "txids": {t.reference: self.cleaned_data[f"t{t.pk}_txid"].strip() for t in self.pending}}


# --------------------------------------------------------------------------- money


def _sold_currencies(entrustment):
    currencies = set()
    for lot in entrustment.lots.all():
        currencies.update(f.currency for f in lot.fills.all())
    return sorted(currencies)


class OffshoreReceiptForm(ActionForm):
    bank = OrganisationChoiceField(label=gettext_lazy("Bank"), queryset=organisations(OrgKind.BANK))
    currency = forms.ChoiceField(label=gettext_lazy("Currency"))
    amount = forms.CharField(label=gettext_lazy("Amount credited"), max_length=40)
    bank_reference = forms.CharField(label=gettext_lazy("Bank reference (credit advice)"), max_length=100)
    value_date = forms.DateField(label=gettext_lazy("Value date"), widget=forms.DateInput(attrs={"type": "date"}))

    def build(self):
        from .models import net_proceeds_by_currency

        net = net_proceeds_by_currency(self.entrustment)
        self.fields["currency"].choices = [(c, c) for c in _sold_currencies(self.entrustment)] or [
            (c, c) for c in sorted(net)]
        self.fields["amount"].help_text = "; ".join(
            _("expected %(amt)s %(cur)s (proceeds net of platform fees)") % {"amt": amt, "cur": cur}
            for cur, amt in sorted(net.items()))

    def service_kwargs(self):
        return {**super().service_kwargs(), **self.cleaned_data}


def _received_currencies(entrustment):
    return sorted({r.currency for r in entrustment.offshore_receipts.all()})


class FxApprovalForm(ActionForm):
    currency = forms.ChoiceField(label=gettext_lazy("Currency"))
    approval_reference = forms.CharField(label=gettext_lazy("SAFE approval reference"), max_length=100)
    bop_declaration_no = forms.CharField(label=gettext_lazy("Balance-of-payments declaration number"),
                                         max_length=100)
    rate = forms.CharField(label=gettext_lazy("Rate (CNY per unit)"), max_length=30)
    amount_cny = forms.CharField(label=gettext_lazy("CNY amount on the conversion slip"), max_length=40)
    slip_reference = forms.CharField(label=gettext_lazy("Conversion slip reference"), max_length=100)

    def build(self):
        self.fields["currency"].choices = [(c, c) for c in _received_currencies(self.entrustment)]

    def service_kwargs(self):
        return {**super().service_kwargs(), **self.cleaned_data}


class FxRejectionForm(ReasonForm):
    currency = forms.ChoiceField(label=gettext_lazy("Currency"))
    field_order = ["currency", "reason"]

    def build(self):
        self.fields["currency"].choices = [(c, c) for c in _received_currencies(self.entrustment)]

    def service_kwargs(self):
        return {**super().service_kwargs(), "currency": self.cleaned_data["currency"]}


# --------------------------------------------------------------------------- address whitelist


class AssetChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj):
        return str(obj)


class WhitelistProposeForm(ActionForm):
    """The agency names one of its addresses: its custody vault, or its deposit address at a platform."""

    asset = AssetChoiceField(label=gettext_lazy("Asset"), queryset=Asset.objects.none())
    address = forms.CharField(label=gettext_lazy("Address"), max_length=120)
    purpose = forms.ChoiceField(label=gettext_lazy("Purpose"), choices=WhitelistPurpose.choices)
    platform = OrganisationChoiceField(label=gettext_lazy("Platform (for a deposit address)"), required=False,
                                       queryset=organisations(OrgKind.PLATFORM))

    def build(self):
        # The assets this entrustment moves: the address is proposed from here because these coins need it.
        self.fields["asset"].queryset = Asset.objects.filter(pk__in=self.entrustment.holdings.values("asset"))

    def service_kwargs(self):
        data = self.cleaned_data
        return {**super().service_kwargs(), "organisation": self.entrustment.agency, "asset": data["asset"],
                "address": data["address"], "purpose": data["purpose"],
                "platform": data["platform"] if data["purpose"] == WhitelistPurpose.PLATFORM_DEPOSIT else None}


def pending_whitelist_entries(entrustment):
    if entrustment.agency_id is None:
        return WhitelistedAddress.objects.none()
    return (WhitelistedAddress.objects.filter(organisation_id=entrustment.agency_id, state=WhitelistState.PROPOSED)
            .select_related("asset", "platform").order_by("proposed_at", "pk"))


class WhitelistEntryChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj):
        where = f" · {obj.platform.name}" if obj.platform_id else ""
        return f"{obj.asset.symbol} {obj.address} · {obj.get_purpose_display()}{where}"


class WhitelistApproveForm(ActionForm):
    """A BCE approver approves one of the agency's proposed addresses (usable after the cooling period)."""

    entry = WhitelistEntryChoiceField(
        label=gettext_lazy("Address awaiting approval"), queryset=WhitelistedAddress.objects.none(),
        help_text=gettext_lazy("Coins may go to it once the policy's quorum has approved it and its cooling period "
                               "has passed."))

    def build(self):
        self.fields["entry"].queryset = pending_whitelist_entries(self.entrustment)

    def service_kwargs(self):
        return {**super().service_kwargs(), "entry": self.cleaned_data["entry"]}


class CreditForm(ActionForm):
    amount_cny = forms.CharField(label=gettext_lazy("CNY credited"), max_length=40)
    slip_reference = forms.CharField(label=gettext_lazy("Credit slip reference"), max_length=100)

    def build(self):
        converted = sum((f.amount_cny for f in self.entrustment.fx_conversions.all() if f.amount_cny), Decimal(0))
        self.fields["amount_cny"].help_text = _("The CNY converted: %(c)s. Account %(acct)s.") % {
            "c": converted, "acct": self.entrustment.bureau.special_account_no or "—"}

    def service_kwargs(self):
        return {**super().service_kwargs(), **self.cleaned_data}


class VictimReturnPrepareForm(ActionForm):
    recipient = forms.CharField(label=gettext_lazy("Recipient"), max_length=200)
    recipient_account = forms.CharField(label=gettext_lazy("Recipient account"), max_length=60)
    amount_cny = forms.CharField(label=gettext_lazy("Amount (CNY)"), max_length=40)
    basis = forms.CharField(label=gettext_lazy("Basis (judgment item)"), max_length=200)

    def service_kwargs(self):
        return {**super().service_kwargs(), **self.cleaned_data}


class VictimReturnApproveForm(ActionForm):
    summary_template = "cases/partials/summary_return.html"

    def service_kwargs(self):
        return {"victim_return": self.target}


class RemittancePrepareForm(ActionForm):
    payment_code = forms.CharField(label=gettext_lazy("Payment code (20 digits)"), max_length=40,
                                   help_text=gettext_lazy("From the General Payment Form for Non-tax Revenue."))

    def service_kwargs(self):
        return {**super().service_kwargs(), **self.cleaned_data}


class RemittanceApproveForm(ActionForm):
    treasury_receipt = forms.CharField(
        label=gettext_lazy("Treasury receipt"), max_length=100, required=False,
        help_text=gettext_lazy("Enter the receipt if the remittance was paid outside the portal: it is then recorded "
                               "as remitted. Leave it empty to authorise the bank to pay it: the entrustment becomes "
                               "remitted once the bank has booked the payment and its receipt is recorded."))
    summary_template = "cases/partials/summary_remittance.html"

    def build(self):
        from settlements.models import TreasuryRemittance

        self.remittance = TreasuryRemittance.objects.filter(entrustment=self.entrustment).select_related(
            "prepared_by").first()

    def service_kwargs(self):
        return {**super().service_kwargs(), **self.cleaned_data}


class RemittanceConfirmForm(ActionForm):
    treasury_receipt = forms.CharField(
        label=gettext_lazy("Treasury receipt"), max_length=100,
        help_text=gettext_lazy("The receipt of the bank's payment to the treasury, from the bank's booking. The "
                               "workers record it themselves when the bank reports it."))

    def service_kwargs(self):
        return {**super().service_kwargs(), **self.cleaned_data}


class CloseForm(NoteForm):
    summary_template = "cases/partials/summary_close.html"


# --------------------------------------------------------------------------- evidence


class EvidenceForm(ActionForm):
    kind = forms.ChoiceField(label=gettext_lazy("Kind"), choices=EvidenceKind.choices)
    description = forms.CharField(label=gettext_lazy("Description"), required=False, max_length=200)
    file = forms.FileField(label=gettext_lazy("File"))

    def build(self):
        self.fields["file"].help_text = _("PDF, JPEG, PNG, MP4, MP3 or ZIP; at most %(size)s.") % {
            "size": filesizeformat(settings.EVIDENCE_MAX_BYTES)}
        self.fields["file"].widget.attrs["accept"] = ACCEPT

    def clean_file(self):
        return check_evidence_file(self.cleaned_data["file"])

    def service_kwargs(self):
        data = self.cleaned_data
        return {"case": self.entrustment.case, "entrustment": self.entrustment, "kind": data["kind"],
                "upload": data["file"], "description": data["description"].strip()}
