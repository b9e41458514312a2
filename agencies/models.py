"""Organisations, the people in them, and the service agency's appointment and bond."""

from decimal import ROUND_CEILING, Decimal

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _
from django_fsm import FSMField, FSMModelMixin, transition
from simple_history.models import HistoricalRecords


class OrgKind(models.TextChoices):
    BUREAU = "bureau", _("Case-handling bureau")
    LEGAL_CORPS = "legal_corps", _("Legal Affairs Corps")
    BCE = "bce", _("Beijing Equity Exchange")
    AGENCY = "agency", _("Service agency")
    WITNESS = "witness", _("Technical witness")
    PLATFORM = "platform", _("Licensed HK platform")
    BANK = "bank", _("Bank")
    FINANCE = "finance", _("Finance bureau / treasury")
    SUPERVISOR = "supervisor", _("Supervisor / auditor")


class Role(models.TextChoices):
    # Four eyes: an officer prepares, a different approver approves.
    OFFICER = "officer", _("Officer")
    APPROVER = "approver", _("Approver")
    # Reads everything the organisation may see and changes nothing.
    AUDITOR = "auditor", _("Auditor")


class Organisation(models.Model):
    kind = models.CharField(_("kind"), max_length=20, choices=OrgKind.choices)
    code = models.SlugField(_("code"), max_length=40, unique=True)
    name = models.CharField(_("name"), max_length=200)
    name_en = models.CharField(_("English name"), max_length=200, blank=True)
    jurisdiction = models.ForeignKey(
        "cases.Jurisdiction", on_delete=models.PROTECT, null=True, blank=True, related_name="organisations"
    )
    # A bureau's single compliant account for case funds (涉案款专用账户).
    special_account_no = models.CharField(_("special case-funds account"), max_length=40, blank=True)
    # An agency's same-name offshore account (同名境外账户) at the receiving bank: the platform settles the sale
    # proceeds into it and the FX settlement (结汇) pays out of it into the bureau's special account.
    offshore_account_no = models.CharField(_("offshore account (same name)"), max_length=40, blank=True)
    # SFC licence reference for platforms, business licence for agencies.
    licence_ref = models.CharField(_("licence reference"), max_length=100, blank=True)
    is_active = models.BooleanField(_("active"), default=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["kind", "code"]
        verbose_name = _("organisation")
        verbose_name_plural = _("organisations")

    def __str__(self):
        return self.name


class Membership(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    organisation = models.ForeignKey(Organisation, on_delete=models.PROTECT, related_name="memberships")
    role = models.CharField(_("role"), max_length=20, choices=Role.choices)
    is_active = models.BooleanField(_("active"), default=True)
    history = HistoricalRecords()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "organisation", "role"], name="unique_membership_role")
        ]
        verbose_name = _("membership")
        verbose_name_plural = _("memberships")

    def __str__(self):
        return f"{self.user} · {self.organisation} · {self.get_role_display()}"

    @property
    def can_prepare(self) -> bool:
        return self.role == Role.OFFICER

    @property
    def can_approve(self) -> bool:
        return self.role == Role.APPROVER

    @property
    def is_read_only(self) -> bool:
        return self.role == Role.AUDITOR or self.organisation.kind == OrgKind.SUPERVISOR


class Appointment(models.Model):
    """BCE's selection of the service agency for one entrustment (服务机构确认)."""

    entrustment = models.ForeignKey("cases.Entrustment", on_delete=models.PROTECT, related_name="appointments")
    agency = models.ForeignKey(
        Organisation, on_delete=models.PROTECT, related_name="appointments", limit_choices_to={"kind": OrgKind.AGENCY}
    )
    qualification_note = models.TextField(_("qualification"))
    capacity_note = models.TextField(_("capacity"))
    conflicts_declared = models.TextField(_("conflicts declared"), help_text=_("'none' when there are none"))
    # CNY value of the holdings when the agency is appointed; the bond is sized from it.
    valuation_cny = models.DecimalField(_("valuation (CNY)"), max_digits=24, decimal_places=2)
    valuation_source = models.CharField(_("valuation source"), max_length=200)
    appointed_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    appointed_at = models.DateTimeField(auto_now_add=True)
    is_current = models.BooleanField(default=True)
    history = HistoricalRecords()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["entrustment"], condition=models.Q(is_current=True), name="one_current_appointment"
            )
        ]

    def __str__(self):
        return f"{self.agency} → {self.entrustment}"


class BondState(models.TextChoices):
    POSTED = "posted", _("Posted")
    RELEASED = "released", _("Released")
    FORFEITED = "forfeited", _("Forfeited")


class PerformanceBond(FSMModelMixin, models.Model):
    """The agency's performance bond (履约保证金); posted before any coin moves."""

    appointment = models.OneToOneField(Appointment, on_delete=models.PROTECT, related_name="bond")
    ratio = models.DecimalField(_("ratio"), max_digits=6, decimal_places=4)
    required_cny = models.DecimalField(_("required (CNY)"), max_digits=24, decimal_places=2)
    posted_cny = models.DecimalField(_("posted (CNY)"), max_digits=24, decimal_places=2)
    reference = models.CharField(_("bank guarantee / receipt reference"), max_length=100)
    recorded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    posted_at = models.DateTimeField(auto_now_add=True)
    state = FSMField(default=BondState.POSTED, choices=BondState.choices, protected=True)
    history = HistoricalRecords(bases=[FSMModelMixin, models.Model])

    def __str__(self):
        return f"{self.reference} ({self.posted_cny} CNY)"

    @staticmethod
    def required_for(valuation_cny: Decimal, ratio: Decimal) -> Decimal:
        # Round up to the fen: a bond one fen short of the ratio does not cover it.
        return (valuation_cny * ratio).quantize(Decimal("0.01"), rounding=ROUND_CEILING)

    @property
    def covers(self) -> bool:
        return self.state == BondState.POSTED and self.posted_cny >= self.required_cny

    @transition(field=state, source=BondState.POSTED, target=BondState.RELEASED)
    def release(self):
        pass

    @transition(field=state, source=BondState.POSTED, target=BondState.FORFEITED)
    def forfeit(self):
        pass
