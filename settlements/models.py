"""The money side: offshore receipt, FX, the special account, the treasury and victims."""

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.utils.translation import gettext_lazy as _
from simple_history.models import HistoricalRecords

MONEY = {"max_digits": 24, "decimal_places": 2}


class OffshoreReceipt(models.Model):
    """A bank credit advice for sale proceeds in the agency's same-name HK account."""

    entrustment = models.ForeignKey("cases.Entrustment", on_delete=models.PROTECT, related_name="offshore_receipts")
    currency = models.CharField(_("currency"), max_length=3)
    amount = models.DecimalField(_("amount"), **MONEY)
    bank = models.ForeignKey("agencies.Organisation", on_delete=models.PROTECT, related_name="+")
    bank_reference = models.CharField(_("bank reference"), max_length=100)
    value_date = models.DateField(_("value date"))
    recorded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    recorded_at = models.DateTimeField(auto_now_add=True)
    history = HistoricalRecords()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["bank", "bank_reference"], name="unique_offshore_receipt"),
            models.CheckConstraint(condition=models.Q(amount__gt=0), name="receipt_positive"),
        ]


class FxOutcome(models.TextChoices):
    APPROVED = "approved", _("Approved and converted")
    REJECTED = "rejected", _("Rejected")


class FxConversion(models.Model):
    """SAFE approval, balance-of-payments declaration and the conversion slip (结汇水单)."""

    entrustment = models.ForeignKey("cases.Entrustment", on_delete=models.PROTECT, related_name="fx_conversions")
    outcome = models.CharField(max_length=10, choices=FxOutcome.choices)
    approval_reference = models.CharField(_("SAFE approval reference"), max_length=100, blank=True)
    bop_declaration_no = models.CharField(_("BoP declaration number"), max_length=100, blank=True)
    currency = models.CharField(_("currency"), max_length=3)
    amount_foreign = models.DecimalField(_("foreign amount"), **MONEY)
    rate = models.DecimalField(_("rate (CNY per unit)"), max_digits=16, decimal_places=6, null=True, blank=True)
    amount_cny = models.DecimalField(_("CNY amount"), null=True, blank=True, **MONEY)
    slip_reference = models.CharField(_("conversion slip"), max_length=100, blank=True)
    reason = models.TextField(blank=True)
    recorded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    recorded_at = models.DateTimeField(auto_now_add=True)
    history = HistoricalRecords()


class SpecialAccountCredit(models.Model):
    entrustment = models.OneToOneField("cases.Entrustment", on_delete=models.PROTECT, related_name="credit")
    account_no = models.CharField(_("special account"), max_length=40)
    amount_cny = models.DecimalField(_("CNY amount"), **MONEY)
    slip_reference = models.CharField(_("credit slip"), max_length=100)
    recorded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    recorded_at = models.DateTimeField(auto_now_add=True)
    history = HistoricalRecords()


# [0-9], not \d: \d also matches full-width and other scripts' digits.
payment_code_validator = RegexValidator(r"^[0-9]{20}$", _("The payment code has exactly 20 digits."))


class TreasuryRemittance(models.Model):
    """Payment by the General Payment Form for Non-tax Revenue (非税收入一般缴款书)."""

    entrustment = models.OneToOneField("cases.Entrustment", on_delete=models.PROTECT, related_name="remittance")
    payment_code = models.CharField(_("payment code"), max_length=20, unique=True,
                                    validators=[payment_code_validator])
    amount_cny = models.DecimalField(_("CNY amount"), **MONEY)
    treasury_receipt = models.CharField(_("treasury receipt"), max_length=100, blank=True)
    prepared_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    prepared_at = models.DateTimeField(auto_now_add=True)
    # Set when the approvers' quorum authorises the payment. When the bank pays it, the receipt comes later
    # with the bank's booking (remittance_confirm); when an approver enters the receipt, both are set at once.
    approved_at = models.DateTimeField(_("authorised at"), null=True, blank=True)
    remitted_at = models.DateTimeField(null=True, blank=True)
    history = HistoricalRecords()


class VictimReturn(models.Model):
    """A return to victims ordered by the judgment (发还); approved before it counts."""

    entrustment = models.ForeignKey("cases.Entrustment", on_delete=models.PROTECT, related_name="victim_returns")
    recipient = models.CharField(_("recipient"), max_length=200)
    recipient_account = models.CharField(_("recipient account"), max_length=60)
    amount_cny = models.DecimalField(_("CNY amount"), **MONEY)
    basis = models.CharField(_("basis (judgment item)"), max_length=200)
    prepared_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    prepared_at = models.DateTimeField(auto_now_add=True)
    approved_at = models.DateTimeField(null=True, blank=True)
    history = HistoricalRecords()

    class Meta:
        constraints = [models.CheckConstraint(condition=models.Q(amount_cny__gt=0), name="return_positive")]
