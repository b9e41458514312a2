"""Cases, holdings and the entrustment lifecycle.

State fields are `FSMField(protected=True)`: only the `@transition` methods below change
them, and only the service functions in `cases/services.py` and `settlements/services.py`
call those methods. Transitions hold the guards that depend on the record itself; the
services check who acts, lock the row, write the business event and schedule side effects.
"""

import hashlib
from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import Sum
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django_fsm import RETURN_VALUE, ConcurrentTransitionMixin, FSMField, FSMModelMixin, transition
from simple_history.models import HistoricalRecords

from .addresses import ADDRESS_FORMATS
from .fields import BaseUnitsField

FSM_HISTORY_BASES = [FSMModelMixin, models.Model]


# --------------------------------------------------------------------------- policy


class ReserveRule(models.TextChoices):
    REFERENCE_AVERAGE = "reference_average", _("Not below the average of N trading days (Shanghai courts 2025)")
    VALUATION = "valuation", _("First reserve = valuation; bounded cut per failed round (auction rules by analogy)")
    ISSUER_BUYBACK = "issuer_buyback", _("Issuer buy-back, not below a share of face value (Shandong 2023)")


class Jurisdiction(models.Model):
    code = models.SlugField(max_length=40, unique=True)
    name = models.CharField(_("name"), max_length=100)
    history = HistoricalRecords()

    def __str__(self):
        return self.name


def default_quorums():
    return {
        "submit": 1,
        "accept": 1,
        "reserve": 1,
        "award": 1,
        "remittance": 1,
        "victim_return": 1,
        "close": 1,
        "fx": 1,
        "bond_release": 1,
        "bond_forfeit": 1,
        "whitelist": 1,
    }


class DisposalPolicy(models.Model):
    """Everything the process leaves to a jurisdiction. Nothing here is a constant in code."""

    jurisdiction = models.ForeignKey(Jurisdiction, on_delete=models.PROTECT, related_name="policies")
    name = models.CharField(_("name"), max_length=100)
    is_current = models.BooleanField(default=True)
    bond_ratio = models.DecimalField(_("bond ratio"), max_digits=6, decimal_places=4, default=Decimal("1.1000"))
    reserve_rule = models.CharField(
        _("reserve rule"), max_length=30, choices=ReserveRule.choices, default=ReserveRule.REFERENCE_AVERAGE
    )
    reference_days = models.PositiveSmallIntegerField(_("reference trading days"), default=20)
    buyback_floor_ratio = models.DecimalField(
        _("buy-back floor (share of face value)"), max_digits=5, decimal_places=4, default=Decimal("0.8000")
    )
    max_reserve_cut = models.DecimalField(
        _("maximum reserve cut per failed round"), max_digits=5, decimal_places=4, default=Decimal("0.2000")
    )
    max_failed_rounds = models.PositiveSmallIntegerField(_("failed rounds before stopping"), default=3)
    min_quotes = models.PositiveSmallIntegerField(_("minimum quotes per round"), default=2)
    # A round whose best price moves more than this fraction while it is open is suspended, not awarded.
    max_market_move = models.DecimalField(_("market move that suspends a round"), max_digits=6, decimal_places=4,
                                          default=Decimal("0.0500"))
    sla_hours = models.PositiveSmallIntegerField(_("SLA hours (detection to credit)"), default=24)
    sla_warn_hours = models.PositiveSmallIntegerField(_("warn this many hours before breach"), default=4)
    quorums = models.JSONField(_("approvals required per action"), default=default_quorums)
    # A newly approved custody or deposit address waits this long before coins may go to it, so that a
    # wrongly approved (or fraudulently proposed) address can still be revoked before anything is sent.
    whitelist_cooling_hours = models.PositiveSmallIntegerField(_("whitelist cooling period (hours)"), default=24)
    history = HistoricalRecords()

    class Meta:
        verbose_name_plural = "disposal policies"
        constraints = [
            models.UniqueConstraint(
                fields=["jurisdiction"], condition=models.Q(is_current=True), name="one_current_policy"
            ),
            models.CheckConstraint(condition=models.Q(bond_ratio__gt=0), name="bond_ratio_positive"),
            models.CheckConstraint(
                condition=models.Q(max_reserve_cut__gte=0, max_reserve_cut__lt=1), name="reserve_cut_fraction"
            ),
        ]

    def __str__(self):
        return f"{self.jurisdiction} · {self.name}"

    def quorum(self, action: str) -> int:
        return max(1, int(self.quorums.get(action, 1)))


# --------------------------------------------------------------------------- numbering


class Sequence(models.Model):
    """The last number issued per series and year (entrustments, each document type).

    Numbers are taken under a row lock inside the issuing transaction, so they are unique
    and gap-free per series; a rolled-back transaction gives its number back.
    """

    series = models.CharField(max_length=40)
    year = models.PositiveSmallIntegerField()
    last = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["series", "year"], name="one_sequence_per_series_year")]

    @classmethod
    def next_number(cls, series: str, prefix: str, year: int) -> str:
        sequence, _ = cls.objects.select_for_update().get_or_create(series=series, year=year)
        sequence.last += 1
        sequence.save(update_fields=["last"])
        return f"{prefix}-{year}-{sequence.last:06d}"


# --------------------------------------------------------------------------- assets


class Asset(models.Model):
    symbol = models.CharField(_("symbol"), max_length=20)
    name = models.CharField(_("name"), max_length=60)
    chain = models.CharField(_("chain"), max_length=20)
    token_contract = models.CharField(_("token contract"), max_length=80, blank=True)
    decimals = models.PositiveSmallIntegerField(_("decimals"))
    address_format = models.CharField(_("address format"), max_length=10, choices=ADDRESS_FORMATS)
    confirmations_required = models.PositiveSmallIntegerField(_("confirmations required"))
    # An upper bound for sanity checks on declared amounts, in base units.
    supply_cap = BaseUnitsField(_("supply cap (base units)"))
    is_active = models.BooleanField(default=True)
    history = HistoricalRecords()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["symbol", "chain"], name="unique_asset_per_chain")]
        ordering = ["symbol", "chain"]

    def __str__(self):
        return f"{self.symbol} ({self.chain})"

    @property
    def unit(self) -> int:
        return 10**self.decimals

    def format_amount(self, base_units: int) -> str:
        sign = "-" if base_units < 0 else ""
        whole, frac = divmod(abs(base_units), self.unit)
        return f"{sign}{whole:,}.{frac:0{self.decimals}d}" if self.decimals else f"{sign}{whole:,}"


# --------------------------------------------------------------------------- cases


class LegalBasisKind(models.TextChoices):
    JUDGMENT = "judgment", _("Effective judgment")
    CONFISCATION = "confiscation", _("Confiscation decision")
    PRE_JUDGMENT = "pre_judgment", _("Pre-judgment disposal (owner consent and approval)")


class ApprovalLevel(models.TextChoices):
    COUNTY = "county", _("County level")
    CITY = "city", _("City level")
    PROVINCE = "province", _("Province level")
    NATIONAL = "national", _("National level")


class Case(models.Model):
    bureau = models.ForeignKey("agencies.Organisation", on_delete=models.PROTECT, related_name="cases")
    case_number = models.CharField(_("case number"), max_length=60)
    title = models.CharField(_("title"), max_length=200)
    seized_at = models.DateTimeField(_("seized at"))
    seizure_decision_no = models.CharField(_("seizure decision number"), max_length=80)
    custodian = models.CharField(_("custodian (apart from the case team)"), max_length=120)
    legal_basis = models.CharField(_("legal basis"), max_length=20, choices=LegalBasisKind.choices, blank=True)
    basis_document_no = models.CharField(_("basis document number"), max_length=80, blank=True)
    basis_date = models.DateField(_("basis date"), null=True, blank=True)
    basis_authority = models.CharField(_("issuing authority"), max_length=120, blank=True)
    owner_consent = models.BooleanField(_("owner consent obtained"), default=False)
    approval_level = models.CharField(_("approval level"), max_length=20, choices=ApprovalLevel.choices, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    history = HistoricalRecords()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["bureau", "case_number"], name="unique_case_number")]
        ordering = ["-created_at"]

    def __str__(self):
        return self.case_number

    def legal_basis_problems(self) -> list[str]:
        """Why this case cannot yet be entrusted for disposal; empty when it can."""
        problems = []
        if not self.legal_basis:
            return [str(_("No legal basis for disposal is recorded."))]
        if not (self.basis_document_no and self.basis_date and self.basis_authority):
            problems.append(str(_("The basis document number, date and issuing authority are required.")))
        if self.legal_basis == LegalBasisKind.PRE_JUDGMENT:
            if not self.owner_consent:
                problems.append(str(_("Pre-judgment disposal needs the owner's consent.")))
            if not self.approval_level:
                problems.append(str(_("Pre-judgment disposal needs approval at county level or higher.")))
        return problems


class EvidenceKind(models.TextChoices):
    SEIZURE = "seizure", _("Seizure decision and list")
    BASIS = "basis", _("Judgment / confiscation decision / approval")
    CONSENT = "consent", _("Owner consent")
    AGREEMENT = "agreement", _("Disposal service agreement / entrustment letter")
    DETECTION = "detection", _("Detection report")
    RECORDING = "recording", _("Audio/video recording")
    BANK = "bank", _("Bank or FX document")
    OTHER = "other", _("Other")


def evidence_path(instance, filename):
    return f"evidence/{instance.case_id}/{instance.sha256[:2]}/{instance.sha256}-{filename}"


class EvidenceFile(models.Model):
    case = models.ForeignKey(Case, on_delete=models.PROTECT, related_name="evidence")
    entrustment = models.ForeignKey(
        "Entrustment", on_delete=models.PROTECT, null=True, blank=True, related_name="evidence"
    )
    kind = models.CharField(_("kind"), max_length=20, choices=EvidenceKind.choices)
    description = models.CharField(_("description"), max_length=200, blank=True)
    file = models.FileField(_("file"), upload_to=evidence_path)
    original_name = models.CharField(max_length=255)
    size = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64)
    uploaded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    uploaded_at = models.DateTimeField(auto_now_add=True)
    history = HistoricalRecords()

    def __str__(self):
        return f"{self.get_kind_display()}: {self.original_name} ({self.sha256[:12]}…)"

    @staticmethod
    def digest(fileobj) -> tuple[str, int]:
        h, size = hashlib.sha256(), 0
        for chunk in fileobj.chunks() if hasattr(fileobj, "chunks") else iter(lambda: fileobj.read(65536), b""):
            h.update(chunk)
            size += len(chunk)
        fileobj.seek(0)
        return h.hexdigest(), size


class HoldingStatus(models.TextChoices):
    DECLARED = "declared", _("Declared")
    VERIFIED = "verified", _("Verified on-chain")
    MISMATCH = "mismatch", _("Detection mismatch")
    IN_CUSTODY = "in_custody", _("In agency custody")
    AT_PLATFORM = "at_platform", _("At platform")


class Holding(models.Model):
    """A seized amount of one asset at one address, as declared by the bureau."""

    case = models.ForeignKey(Case, on_delete=models.PROTECT, related_name="holdings")
    entrustment = models.ForeignKey(
        "Entrustment", on_delete=models.PROTECT, null=True, blank=True, related_name="holdings"
    )
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="holdings")
    address = models.CharField(_("address"), max_length=120)
    declared_amount = BaseUnitsField(_("declared amount (base units)"))
    # What disposal proceeds from: the declared amount, or the detected one once a mismatch
    # has been accepted with a reason (never a silent correction).
    accepted_amount = BaseUnitsField(_("accepted amount (base units)"))
    location = models.CharField(_("where it sits (wallet, device, exchange)"), max_length=200)
    status = models.CharField(max_length=20, choices=HoldingStatus.choices, default=HoldingStatus.DECLARED)
    history = HistoricalRecords()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["case", "asset", "address"], name="unique_holding"),
            models.CheckConstraint(condition=models.Q(declared_amount__gt=0), name="holding_amount_positive"),
        ]
        ordering = ["asset__symbol", "id"]

    def __str__(self):
        return f"{self.asset.format_amount(self.declared_amount)} {self.asset.symbol} @ {self.address}"


# --------------------------------------------------------------------------- entrustment


class EntrustmentState(models.TextChoices):
    DRAFT = "draft", _("Draft")
    SUBMITTED = "submitted", _("Entrusted, awaiting BCE")
    RETURNED = "returned", _("Returned for correction")
    REFUSED = "refused", _("Refused")
    ACCEPTED = "accepted", _("Accepted by BCE")
    AGENCY_APPOINTED = "agency_appointed", _("Agency appointed, bond pending")
    BONDED = "bonded", _("Bond posted")
    DETECTED = "detected", _("Detected on-chain")
    DETECTION_MISMATCH = "detection_mismatch", _("Detection mismatch")
    IN_CUSTODY = "in_custody", _("Received into custody")
    RESERVE_SET = "reserve_set", _("Reserve price set")
    TRANSFERRING = "transferring", _("Transferring to HK platform")
    TRANSFER_FAILED = "transfer_failed", _("Transfer failed")
    AML_HOLD = "aml_hold", _("AML hold at platform")
    AT_PLATFORM = "at_platform", _("At HK platform, cleared")
    SELLING = "selling", _("Inquiry and sale")
    SOLD = "sold", _("Sold")
    PROCEEDS_RECEIVED = "proceeds_received", _("Fiat received offshore")
    FX_REJECTED = "fx_rejected", _("FX rejected")
    FX_CLEARED = "fx_cleared", _("FX approved and converted")
    CREDITED = "credited", _("Credited to special account")
    REMITTED = "remitted", _("Remitted to treasury")
    CLOSED = "closed", _("Closed and archived")
    CANCELLED = "cancelled", _("Cancelled")
    TERMINATED = "terminated", _("Terminated unsold")
    AGENCY_DEFAULT = "agency_default", _("Agency default")
    DISPUTED = "disputed", _("Disputed")


S = EntrustmentState
# Cancellation is only possible while no coin has moved.
BEFORE_CUSTODY = [S.DRAFT, S.SUBMITTED, S.RETURNED, S.ACCEPTED, S.AGENCY_APPOINTED, S.BONDED, S.DETECTED,
                  S.DETECTION_MISMATCH]
# An agency can default between posting its bond and handing the proceeds over.
AGENCY_ACTIVE = [S.BONDED, S.DETECTED, S.DETECTION_MISMATCH, S.IN_CUSTODY, S.RESERVE_SET, S.TRANSFERRING,
                 S.TRANSFER_FAILED, S.AML_HOLD, S.AT_PLATFORM, S.SELLING, S.SOLD]
TERMINAL = [S.REFUSED, S.CLOSED, S.CANCELLED, S.TERMINATED]
DISPUTABLE = [s for s in S.values if s not in TERMINAL + [S.DRAFT, S.DISPUTED]]
# The 24-hour clock of the Beijing model runs from detection (4) to the special-account credit (11).
SLA_RUNNING = [S.DETECTED, S.DETECTION_MISMATCH, S.IN_CUSTODY, S.RESERVE_SET, S.TRANSFERRING, S.TRANSFER_FAILED,
               S.AML_HOLD, S.AT_PLATFORM, S.SELLING, S.SOLD, S.PROCEEDS_RECEIVED, S.FX_REJECTED, S.FX_CLEARED]


class DisposalChannel(models.TextChoices):
    BCE_HK = "bce_hk", _("BCE + licensed HK platform")
    COURT_OFFSHORE = "court_offshore", _("Court-led offshore disposal")
    ISSUER_BUYBACK = "issuer_buyback", _("Issuer buy-back")
    LEGACY_THIRD_PARTY = "legacy_third_party", _("Third-party disposal company (record of old cases only)")


class Entrustment(ConcurrentTransitionMixin, models.Model):
    """One disposal: a bureau entrusts BCE with some holdings of a case."""

    number = models.CharField(_("number"), max_length=30, unique=True)
    case = models.ForeignKey(Case, on_delete=models.PROTECT, related_name="entrustments", verbose_name=_("case"))
    bureau = models.ForeignKey("agencies.Organisation", on_delete=models.PROTECT, related_name="entrustments",
                               verbose_name=_("case-handling bureau"))
    bce = models.ForeignKey("agencies.Organisation", on_delete=models.PROTECT, related_name="bce_entrustments",
                            verbose_name=_("equity exchange"))
    agency = models.ForeignKey(
        "agencies.Organisation", on_delete=models.PROTECT, null=True, blank=True, related_name="agency_entrustments",
        verbose_name=_("service agency"),
    )
    platform = models.ForeignKey(
        "agencies.Organisation", on_delete=models.PROTECT, null=True, blank=True, related_name="platform_entrustments",
        verbose_name=_("platform"),
    )
    policy = models.ForeignKey(DisposalPolicy, on_delete=models.PROTECT, related_name="entrustments",
                               verbose_name=_("disposal policy"))
    channel = models.CharField(_("disposal channel"), max_length=30, choices=DisposalChannel.choices,
                               default=DisposalChannel.BCE_HK)
    state = FSMField(_("state"), default=S.DRAFT, choices=S.choices, protected=True, db_index=True)
    # Where a dispute returns to once resolved.
    state_before_dispute = models.CharField(_("state before the dispute"), max_length=30, choices=S.choices,
                                            blank=True)
    prepared_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+",
                                    verbose_name=_("prepared by"))
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    state_changed_at = models.DateTimeField(_("state changed at"), default=timezone.now)
    sla_started_at = models.DateTimeField(_("24-hour clock started at"), null=True, blank=True)
    sla_stopped_at = models.DateTimeField(_("24-hour clock stopped at"), null=True, blank=True)
    history = HistoricalRecords(bases=FSM_HISTORY_BASES)

    class Meta:
        ordering = ["-created_at"]
        permissions = [("view_all_entrustments", "Can read every entrustment (supervision)")]
        # The list's default and alternative sorts, and the work queue's clock order.
        indexes = [
            models.Index(fields=["state_changed_at", "id"], name="entrustment_changed_idx"),
            models.Index(fields=["created_at", "id"], name="entrustment_created_idx"),
            models.Index(fields=["state", "sla_started_at"], name="entrustment_state_clock_idx"),
        ]

    def __str__(self):
        return self.number

    # --- guards: facts about this record only; who acts is the service's business

    def bond_covers(self) -> bool:
        bond = self.current_bond()
        return bond is not None and bond.covers

    def current_bond(self):
        from agencies.models import PerformanceBond

        return PerformanceBond.objects.filter(appointment__entrustment=self, appointment__is_current=True).first()

    def all_lots_reserved(self) -> bool:
        lots = self.lots.all()
        return lots.exists() and not lots.exclude(state=LotState.RESERVE_SET).exists()

    def sale_complete(self) -> bool:
        lots = self.lots.all()
        return (
            lots.exists()
            and not lots.exclude(state__in=LOT_FINAL).exists()
            and Fill.objects.filter(lot__entrustment=self).exists()
        )

    def nothing_sold(self) -> bool:
        lots = self.lots.all()
        return lots.exists() and not lots.exclude(state=LotState.EXHAUSTED).exists()

    def reconciled(self) -> bool:
        from .selectors import reconciliation

        return not reconciliation(self).problems

    # --- transitions

    @transition(field=state, source=[S.DRAFT, S.RETURNED], target=S.SUBMITTED)
    def submit(self):
        pass

    @transition(field=state, source=S.SUBMITTED, target=S.RETURNED)
    def return_for_correction(self):
        pass

    @transition(field=state, source=S.SUBMITTED, target=S.REFUSED)
    def refuse(self):
        pass

    @transition(field=state, source=[S.SUBMITTED, S.AGENCY_DEFAULT], target=S.ACCEPTED)
    def accept(self):
        pass

    @transition(field=state, source=S.ACCEPTED, target=S.AGENCY_APPOINTED)
    def appoint_agency(self):
        pass

    @transition(field=state, source=S.AGENCY_APPOINTED, target=S.BONDED, conditions=[bond_covers])
    def confirm_bond(self):
        pass

    @transition(field=state, source=[S.BONDED, S.DETECTION_MISMATCH], target=S.DETECTED)
    def record_detection(self):
        pass

    @transition(field=state, source=[S.BONDED, S.DETECTION_MISMATCH], target=S.DETECTION_MISMATCH)
    def record_mismatch(self):
        pass

    @transition(field=state, source=S.DETECTION_MISMATCH, target=S.DETECTED)
    def accept_detected_amounts(self):
        pass

    @transition(field=state, source=S.DETECTED, target=S.IN_CUSTODY, conditions=[bond_covers])
    def receive_into_custody(self):
        pass

    @transition(field=state, source=S.IN_CUSTODY, target=S.RESERVE_SET, conditions=[all_lots_reserved])
    def set_reserve(self):
        pass

    @transition(field=state, source=[S.RESERVE_SET, S.TRANSFER_FAILED], target=S.TRANSFERRING,
                conditions=[bond_covers])
    def instruct_transfer(self):
        pass

    @transition(field=state, source=S.TRANSFERRING, target=S.TRANSFER_FAILED)
    def fail_transfer(self):
        pass

    @transition(field=state, source=S.TRANSFERRING, target=S.AML_HOLD)
    def hold_for_aml(self):
        pass

    @transition(field=state, source=[S.TRANSFERRING, S.AML_HOLD], target=S.AT_PLATFORM)
    def clear_at_platform(self):
        pass

    @transition(field=state, source=S.AT_PLATFORM, target=S.SELLING)
    def start_selling(self):
        pass

    @transition(field=state, source=S.SELLING, target=S.SOLD, conditions=[sale_complete])
    def complete_sale(self):
        pass

    @transition(field=state, source=S.SELLING, target=S.TERMINATED, conditions=[nothing_sold])
    def terminate_unsold(self):
        pass

    @transition(field=state, source=[S.SOLD], target=S.PROCEEDS_RECEIVED)
    def receive_proceeds(self):
        pass

    @transition(field=state, source=S.PROCEEDS_RECEIVED, target=S.FX_REJECTED)
    def reject_fx(self):
        pass

    @transition(field=state, source=S.FX_REJECTED, target=S.PROCEEDS_RECEIVED)
    def resubmit_fx(self):
        pass

    @transition(field=state, source=S.PROCEEDS_RECEIVED, target=S.FX_CLEARED)
    def clear_fx(self):
        pass

    @transition(field=state, source=S.FX_CLEARED, target=S.CREDITED)
    def credit_special_account(self):
        pass

    @transition(field=state, source=S.CREDITED, target=S.REMITTED)
    def remit(self):
        pass

    @transition(field=state, source=S.REMITTED, target=S.CLOSED, conditions=[reconciled])
    def close(self):
        pass

    @transition(field=state, source=BEFORE_CUSTODY, target=S.CANCELLED)
    def cancel(self):
        pass

    @transition(field=state, source=AGENCY_ACTIVE, target=S.AGENCY_DEFAULT)
    def declare_agency_default(self):
        pass

    @transition(field=state, source=DISPUTABLE, target=S.DISPUTED)
    def open_dispute(self):
        self.state_before_dispute = self.state

    @transition(field=state, source=S.DISPUTED, target=RETURN_VALUE(*DISPUTABLE))
    def resolve_dispute(self):
        previous, self.state_before_dispute = self.state_before_dispute, ""
        return previous

    # --- clock

    @property
    def sla_deadline(self):
        if not self.sla_started_at:
            return None
        return self.sla_started_at + timezone.timedelta(hours=self.policy.sla_hours)


class Detection(models.Model):
    """What the agency and the technical witness saw on-chain for one holding."""

    holding = models.ForeignKey(Holding, on_delete=models.PROTECT, related_name="detections")
    observed_amount = BaseUnitsField(_("observed balance (base units)"))
    block_height = models.PositiveBigIntegerField(_("block height"))
    controlled = models.BooleanField(_("control of the address proven"))
    matches = models.BooleanField()
    witness = models.ForeignKey("agencies.Organisation", on_delete=models.PROTECT, null=True, blank=True,
                                related_name="+")
    recorded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    recorded_at = models.DateTimeField(auto_now_add=True)
    history = HistoricalRecords()


class TransferKind(models.TextChoices):
    TO_CUSTODY = "to_custody", _("Seizure address → agency custody")
    TO_PLATFORM = "to_platform", _("Custody → HK platform deposit")


class TransferStatus(models.TextChoices):
    INSTRUCTED = "instructed", _("Instructed")
    CONFIRMED = "confirmed", _("Confirmed")
    FAILED = "failed", _("Failed")


class CoinTransfer(models.Model):
    """A movement of coins. The portal records and verifies it; custody signs elsewhere."""

    entrustment = models.ForeignKey(Entrustment, on_delete=models.PROTECT, related_name="transfers")
    holding = models.ForeignKey(Holding, on_delete=models.PROTECT, null=True, blank=True, related_name="transfers")
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="+")
    kind = models.CharField(max_length=20, choices=TransferKind.choices)
    # The idempotency key carried to custody and the platform; a retry reuses it.
    reference = models.CharField(max_length=64, unique=True)
    from_address = models.CharField(max_length=120)
    to_address = models.CharField(max_length=120)
    amount = BaseUnitsField(_("amount (base units)"))
    network_fee = BaseUnitsField(_("network fee (base units)"), default=0)
    txid = models.CharField(max_length=100, blank=True)
    status = models.CharField(max_length=20, choices=TransferStatus.choices, default=TransferStatus.INSTRUCTED)
    recorded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    recorded_at = models.DateTimeField(auto_now_add=True)
    history = HistoricalRecords()

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(amount__gt=0), name="transfer_amount_positive"),
            models.CheckConstraint(condition=models.Q(network_fee__gte=0), name="transfer_fee_not_negative"),
        ]


# --------------------------------------------------------------------------- lots and sale


class LotState(models.TextChoices):
    PLANNED = "planned", _("Planned, reserve pending")
    RESERVE_SET = "reserve_set", _("Reserve set")
    INQUIRY = "inquiry", _("Inquiry open")
    AWARD_PENDING = "award_pending", _("Award awaiting approval")
    EXECUTING = "executing", _("Awarded, executing")
    EXECUTED = "executed", _("Executed")
    PARTIALLY_EXECUTED = "partially_executed", _("Partially executed")
    NO_DEAL = "no_deal", _("No deal")
    SUSPENDED = "suspended", _("Market suspension")
    EXHAUSTED = "exhausted", _("Unsold after the last round")


L = LotState
LOT_FINAL = [L.EXECUTED, L.PARTIALLY_EXECUTED, L.EXHAUSTED]


class Lot(ConcurrentTransitionMixin, models.Model):
    """A quantity of one asset sold in one inquiry (a tranche of a large holding)."""

    entrustment = models.ForeignKey(Entrustment, on_delete=models.PROTECT, related_name="lots")
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="+")
    sequence = models.PositiveIntegerField()
    quantity = BaseUnitsField(_("quantity (base units)"))
    quote_currency = models.CharField(_("quote currency"), max_length=4, default="USD")
    # A partial execution leaves its remainder to a new lot, which keeps the failed-round count.
    parent = models.ForeignKey("self", on_delete=models.PROTECT, null=True, blank=True, related_name="remainders")
    failed_rounds = models.PositiveSmallIntegerField(default=0)
    state = FSMField(default=L.PLANNED, choices=L.choices, protected=True)
    history = HistoricalRecords(bases=FSM_HISTORY_BASES)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["entrustment", "sequence"], name="unique_lot_sequence"),
            models.CheckConstraint(condition=models.Q(quantity__gt=0), name="lot_quantity_positive"),
        ]
        ordering = ["entrustment", "sequence"]

    def __str__(self):
        return f"{self.entrustment.number}/L{self.sequence} {self.asset.format_amount(self.quantity)} {self.asset.symbol}"

    def current_reserve(self):
        return self.reserves.filter(approved_at__isnull=False).order_by("-round_no").first()

    def current_round(self):
        return self.rounds.order_by("-number").first()

    def award_at_or_above_reserve(self) -> bool:
        rnd, reserve = self.current_round(), self.current_reserve()
        return bool(rnd and rnd.awarded_quote and reserve and rnd.awarded_quote.price >= reserve.price)

    def has_reserve(self) -> bool:
        reserve = self.current_reserve()
        return reserve is not None and reserve.round_no == self.failed_rounds + 1

    def rounds_left(self) -> bool:
        return self.failed_rounds < self.entrustment.policy.max_failed_rounds

    @transition(field=state, source=[L.PLANNED, L.NO_DEAL], target=L.RESERVE_SET, conditions=[has_reserve])
    def set_reserve(self):
        pass

    @transition(field=state, source=[L.RESERVE_SET, L.SUSPENDED], target=L.INQUIRY)
    def open_inquiry(self):
        pass

    @transition(field=state, source=L.INQUIRY, target=L.AWARD_PENDING, conditions=[award_at_or_above_reserve])
    def propose_award(self):
        pass

    @transition(field=state, source=L.AWARD_PENDING, target=L.EXECUTING, conditions=[award_at_or_above_reserve])
    def approve_award(self):
        pass

    @transition(field=state, source=L.INQUIRY, target=L.NO_DEAL)
    def record_no_deal(self):
        self.failed_rounds += 1

    @transition(field=state, source=[L.INQUIRY, L.AWARD_PENDING], target=L.SUSPENDED)
    def suspend(self):
        pass

    @transition(field=state, source=L.EXECUTING, target=L.EXECUTED)
    def complete_execution(self):
        pass

    @transition(field=state, source=L.EXECUTING, target=L.PARTIALLY_EXECUTED)
    def complete_partially(self):
        pass

    def nothing_filled(self) -> bool:
        return not self.fills.exists()

    @transition(field=state, source=L.EXECUTING, target=L.RESERVE_SET, conditions=[nothing_filled, has_reserve])
    def fail_execution(self):
        """The venue did not carry out the award (quote expired, order refused or ended unfilled): back to a new
        round under the same reserve — the reserve was met, the market was not refused. Not a failed round."""

    @transition(field=state, source=L.NO_DEAL, target=L.EXHAUSTED)
    def exhaust(self):
        pass


class ReservePrice(models.Model):
    """A reserve price with the rule applied and its inputs, kept as evidence (保留价确定书)."""

    lot = models.ForeignKey(Lot, on_delete=models.PROTECT, related_name="reserves")
    round_no = models.PositiveSmallIntegerField()
    rule = models.CharField(max_length=30, choices=ReserveRule.choices)
    price = models.DecimalField(_("reserve price per coin"), max_digits=28, decimal_places=8)
    currency = models.CharField(max_length=4)
    inputs = models.JSONField(_("inputs: reference prices, source, window"))
    proposed_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    proposed_at = models.DateTimeField(auto_now_add=True)
    approved_at = models.DateTimeField(null=True, blank=True)
    history = HistoricalRecords()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["lot", "round_no"], name="one_reserve_per_round"),
            models.CheckConstraint(condition=models.Q(price__gt=0), name="reserve_positive"),
        ]


class InquiryRound(models.Model):
    lot = models.ForeignKey(Lot, on_delete=models.PROTECT, related_name="rounds")
    number = models.PositiveSmallIntegerField()
    reserve = models.ForeignKey(ReservePrice, on_delete=models.PROTECT, related_name="rounds")
    opened_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    opened_at = models.DateTimeField(auto_now_add=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    awarded_quote = models.OneToOneField("Quote", on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    award_prepared_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    history = HistoricalRecords()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["lot", "number"], name="unique_round_number")]


class Quote(models.Model):
    round = models.ForeignKey(InquiryRound, on_delete=models.PROTECT, related_name="quotes")
    platform = models.ForeignKey("agencies.Organisation", on_delete=models.PROTECT, related_name="+")
    # The platform's quote id: accepting it twice must be the same acceptance.
    reference = models.CharField(max_length=100)
    price = models.DecimalField(_("price per coin"), max_digits=28, decimal_places=8)
    quantity = BaseUnitsField(_("quantity (base units)"))
    quoted_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    recorded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    history = HistoricalRecords()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["platform", "reference"], name="unique_quote_reference"),
            models.CheckConstraint(condition=models.Q(price__gt=0), name="quote_price_positive"),
        ]
        ordering = ["-price", "quoted_at"]


class Fill(models.Model):
    lot = models.ForeignKey(Lot, on_delete=models.PROTECT, related_name="fills")
    quote = models.ForeignKey(Quote, on_delete=models.PROTECT, related_name="fills")
    trade_id = models.CharField(max_length=100)
    quantity = BaseUnitsField(_("quantity (base units)"))
    price = models.DecimalField(max_digits=28, decimal_places=8)
    gross = models.DecimalField(_("gross proceeds"), max_digits=28, decimal_places=2)
    fee = models.DecimalField(_("platform fee"), max_digits=28, decimal_places=2)
    currency = models.CharField(max_length=4)
    executed_at = models.DateTimeField()
    recorded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    history = HistoricalRecords()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["quote", "trade_id"], name="unique_fill"),
            models.CheckConstraint(condition=models.Q(quantity__gt=0), name="fill_quantity_positive"),
            models.CheckConstraint(condition=models.Q(fee__gte=0), name="fill_fee_not_negative"),
        ]

    @property
    def net(self) -> Decimal:
        return self.gross - self.fee


def net_proceeds_by_currency(entrustment) -> dict[str, Decimal]:
    rows = (
        Fill.objects.filter(lot__entrustment=entrustment)
        .values("currency")
        .annotate(gross=Sum("gross"), fee=Sum("fee"))
    )
    return {r["currency"]: r["gross"] - r["fee"] for r in rows}


# --------------------------------------------------------------------------- address whitelist


class WhitelistPurpose(models.TextChoices):
    CUSTODY = "custody", _("Custody vault of the agency")
    PLATFORM_DEPOSIT = "platform_deposit", _("Deposit address at a licensed platform")


class WhitelistState(models.TextChoices):
    PROPOSED = "proposed", _("Proposed, awaiting approval")
    APPROVED = "approved", _("Approved")
    REVOKED = "revoked", _("Revoked")


W = WhitelistState


class WhitelistedAddress(FSMModelMixin, models.Model):
    """An address an agency may send coins to: its own custody vault, or its deposit address at a platform.

    Entries are proposed by the agency, approved by a quorum of BCE approvers (BCE supervises the
    agency), and usable only from `usable_from` (approval plus the policy's cooling period). Only
    `cases/whitelist.py` writes them.
    """

    organisation = models.ForeignKey("agencies.Organisation", on_delete=models.PROTECT,
                                      related_name="whitelisted_addresses", verbose_name=_("agency"))
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="+", verbose_name=_("asset"))
    address = models.CharField(_("address"), max_length=120)
    purpose = models.CharField(_("purpose"), max_length=20, choices=WhitelistPurpose.choices)
    platform = models.ForeignKey("agencies.Organisation", on_delete=models.PROTECT, null=True, blank=True,
                                 related_name="+", verbose_name=_("platform"))
    state = FSMField(_("state"), default=W.PROPOSED, choices=W.choices, protected=True)
    proposed_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+",
                                    verbose_name=_("proposed by"))
    proposed_at = models.DateTimeField(_("proposed at"), default=timezone.now)
    approved_at = models.DateTimeField(_("approved at"), null=True, blank=True)
    usable_from = models.DateTimeField(_("usable from"), null=True, blank=True)
    revoked_at = models.DateTimeField(_("revoked at"), null=True, blank=True)
    revoke_reason = models.TextField(_("reason for revocation"), blank=True)
    history = HistoricalRecords(bases=FSM_HISTORY_BASES)

    class Meta:
        verbose_name = _("whitelisted address")
        verbose_name_plural = _("whitelisted addresses")
        ordering = ["organisation", "asset", "address"]
        constraints = [
            # One live entry per address and use; a revoked one may be proposed again as a new entry.
            models.UniqueConstraint(fields=["organisation", "asset", "address"],
                                    condition=models.Q(purpose="custody") & ~models.Q(state="revoked"),
                                    name="one_live_custody_entry"),
            models.UniqueConstraint(fields=["organisation", "asset", "address", "platform"],
                                    condition=models.Q(purpose="platform_deposit") & ~models.Q(state="revoked"),
                                    name="one_live_deposit_entry"),
            models.CheckConstraint(
                condition=(models.Q(purpose="custody", platform__isnull=True)
                           | models.Q(purpose="platform_deposit", platform__isnull=False)),
                name="deposit_entries_name_their_platform"),
        ]

    def __str__(self):
        return f"{self.organisation} · {self.asset.symbol} · {self.address}"

    @transition(field=state, source=W.PROPOSED, target=W.APPROVED)
    def approve(self):
        pass

    @transition(field=state, source=[W.PROPOSED, W.APPROVED], target=W.REVOKED)
    def revoke(self):
        pass


# --------------------------------------------------------------------------- approvals and events


class Approval(models.Model):
    """One person's approval of one action on one subject, bound to the subject's content.

    `digest` is a hash of what was shown to the approver; approvals whose digest no longer
    matches the subject do not count (a change after approval voids it).
    """

    # Empty for approvals that belong to no entrustment (an organisation's address whitelist).
    entrustment = models.ForeignKey(Entrustment, on_delete=models.PROTECT, null=True, blank=True,
                                    related_name="approvals")
    action = models.CharField(max_length=30)
    subject = models.CharField(max_length=60)
    digest = models.CharField(max_length=64)
    approver = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    approved_at = models.DateTimeField(auto_now_add=True)
    history = HistoricalRecords()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["action", "subject", "digest", "approver"], name="one_approval_each")
        ]


class EventType(models.TextChoices):
    CASE_REGISTERED = "case_registered", _("Case registered")
    LEGAL_BASIS_RECORDED = "legal_basis_recorded", _("Legal basis recorded")
    HOLDING_REGISTERED = "holding_registered", _("Holding registered")
    EVIDENCE_ADDED = "evidence_added", _("Evidence added")
    ENTRUSTMENT_CREATED = "entrustment_created", _("Entrustment drafted")
    APPROVAL_GIVEN = "approval_given", _("Approval given")
    TRANSITION = "transition", _("State changed")
    LOT_TRANSITION = "lot_transition", _("Lot state changed")
    AGENCY_APPOINTED = "agency_appointed", _("Agency appointed")
    BOND_POSTED = "bond_posted", _("Bond posted")
    BOND_RELEASED = "bond_released", _("Bond released")
    BOND_FORFEITED = "bond_forfeited", _("Bond forfeited")
    DETECTION_RECORDED = "detection_recorded", _("Detection recorded")
    TRANSFER_RECORDED = "transfer_recorded", _("Transfer recorded")
    RESERVE_PROPOSED = "reserve_proposed", _("Reserve proposed")
    QUOTE_RECORDED = "quote_recorded", _("Quote recorded")
    FILL_RECORDED = "fill_recorded", _("Fill recorded")
    SETTLEMENT_RECORDED = "settlement_recorded", _("Settlement step recorded")
    SLA_WARNING = "sla_warning", _("SLA nearing breach")
    DOCUMENT_ISSUED = "document_issued", _("Document issued")
    DOCUMENT_REFUSED = "document_refused", _("Document could not be issued")
    EXCEPTION_RAISED = "exception_raised", _("Exception raised")
    EXCEPTION_RESOLVED = "exception_resolved", _("Exception resolved")
    ADDRESS_WHITELISTED = "address_whitelisted", _("Address whitelist changed")


class AppendOnlyQuerySet(models.QuerySet):
    def delete(self):
        raise PermissionError("Business events are append-only.")

    def update(self, **kwargs):
        raise PermissionError("Business events are append-only.")


class Event(models.Model):
    """The business record: who did what, why, with which facts. Never edited or deleted.

    The database refuses UPDATE and DELETE on this table too (see the migration's triggers),
    so the rule holds for raw SQL and the admin alike.
    """

    entrustment = models.ForeignKey(Entrustment, on_delete=models.PROTECT, null=True, blank=True,
                                    related_name="events")
    case = models.ForeignKey(Case, on_delete=models.PROTECT, related_name="events")
    type = models.CharField(max_length=40, choices=EventType.choices)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True,
                              related_name="+")
    actor_organisation = models.ForeignKey("agencies.Organisation", on_delete=models.PROTECT, null=True,
                                           blank=True, related_name="+")
    reason = models.TextField(blank=True)
    from_state = models.CharField(max_length=30, blank=True)
    to_state = models.CharField(max_length=30, blank=True)
    details = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self):
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.get_type_display()}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise PermissionError("Business events are append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise PermissionError("Business events are append-only.")


class Notification(models.Model):
    """One message to one person about one event; unique so a redelivered task sends nothing twice."""

    event = models.ForeignKey(Event, on_delete=models.PROTECT, related_name="notifications")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications")
    created_at = models.DateTimeField(auto_now_add=True)
    emailed_at = models.DateTimeField(null=True, blank=True)
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["event", "user"], name="one_notification_per_event")]
        ordering = ["-created_at"]
