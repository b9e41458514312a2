"""A double-entry ledger of every coin and every yuan of a disposal.

Each movement the services record (seizure, custody receipt, deposit to the platform, network fee, sale,
platform fee, offshore receipt, conversion, special-account credit, remittance, return to victims) posts one
`Transaction` whose `Entry` rows sum to zero per commodity. A commodity is either an asset (coins, counted
in integer base units: satoshi, wei, sun) or a currency (money, counted in integer minor units: fen, cents;
every money column of the portal has two decimal places).

Sign: an entry is a debit when positive, a credit when negative. "Where the coins or money are" accounts
(custody, offshore, special account...) therefore carry positive balances; the counter-accounts that say
where they came from (declared seizure, sale proceeds) carry negative ones.

Chart of accounts
-----------------
Coins, per asset (base units):

=====================  =========  ==================================================================
kind                   scope      what it holds
=====================  =========  ==================================================================
seized                 case       coins still at one seizure address (one account per holding)
seizure_declared       case       counter-account: what the bureau declared seized (negative)
seizure_adjustment     case       counter-account: accepted − declared, when a detection mismatch is
                                  accepted with a reason (never a silent correction)
custody                entrust.   the agency's custody, one account per custody address
in_transit             entrust.   deposits instructed to the platform, amount and fee, until the
                                  platform credits them (or the transfer fails and they come back)
at_platform            entrust.   credited at the platform and not yet sold
sold                   entrust.   delivered to buyers (the fills)
network_fees           entrust.   expense: network fees of the transfers
=====================  =========  ==================================================================

Money, per currency (minor units), all per entrustment:

=====================  ==========================================================================
sale_proceeds          income counter-account: gross proceeds of the fills (negative)
proceeds_at_platform   gross proceeds, less platform fees, not yet paid out to the HK account
platform_fees          expense: the platform's fees on the fills
offshore               the agency's same-name HK bank account
fx_exchange            trading account of the conversion: the foreign currency sold (positive, in
                       that currency) and the CNY bought (negative, in CNY)
converted              CNY converted by the bank, not yet credited to the special account
special_account        the bureau's special case-funds account (涉案款专用账户)
treasury               remitted to the state treasury (上缴国库)
victims                returned to victims (发还)
=====================  ==========================================================================

Rows are never changed or deleted: the ORM refuses and so does the database (see migration 0001).
"""

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from cases.fields import BaseUnitsField

CNY = "CNY"


class AccountKind(models.TextChoices):
    # coins
    SEIZED = "seized", _("At the seizure address")
    SEIZURE_DECLARED = "seizure_declared", _("Declared seizure")
    SEIZURE_ADJUSTMENT = "seizure_adjustment", _("Accepted detection difference")
    CUSTODY = "custody", _("Agency custody")
    IN_TRANSIT = "in_transit", _("In transit to the platform")
    AT_PLATFORM = "at_platform", _("At the platform")
    SOLD = "sold", _("Sold (delivered to buyers)")
    NETWORK_FEES = "network_fees", _("Network fees")
    # money
    SALE_PROCEEDS = "sale_proceeds", _("Sale proceeds")
    PROCEEDS_AT_PLATFORM = "proceeds_at_platform", _("Proceeds at the platform")
    PLATFORM_FEES = "platform_fees", _("Platform fees")
    OFFSHORE = "offshore", _("Offshore account")
    FX_EXCHANGE = "fx_exchange", _("Currency conversion")
    CONVERTED = "converted", _("Converted, awaiting credit")
    SPECIAL_ACCOUNT = "special_account", _("Special case-funds account")
    TREASURY = "treasury", _("State treasury")
    VICTIMS = "victims", _("Returned to victims")


K = AccountKind
COIN_KINDS = {K.SEIZED, K.SEIZURE_DECLARED, K.SEIZURE_ADJUSTMENT, K.CUSTODY, K.IN_TRANSIT, K.AT_PLATFORM, K.SOLD,
              K.NETWORK_FEES}
# Accounts that hold something real: a negative balance means more left than was ever there.
HOLDING_KINDS = {K.SEIZED, K.CUSTODY, K.IN_TRANSIT, K.AT_PLATFORM, K.PROCEEDS_AT_PLATFORM, K.OFFSHORE, K.CONVERTED,
                 K.SPECIAL_ACCOUNT}


class TransactionKind(models.TextChoices):
    SEIZURE = "seizure", _("Seizure declared")
    SEIZURE_ADJUSTMENT = "seizure_adjustment", _("Detected amount accepted")
    CUSTODY_RECEIPT = "custody_receipt", _("Received into custody")
    PLATFORM_TRANSFER = "platform_transfer", _("Deposit to the platform instructed")
    PLATFORM_DEPOSIT = "platform_deposit", _("Deposit credited by the platform")
    TRANSFER_FAILED = "transfer_failed", _("Deposit failed, back in custody")
    FILL = "fill", _("Sale fill and platform fee")
    OFFSHORE_RECEIPT = "offshore_receipt", _("Proceeds received offshore")
    CONVERSION = "conversion", _("Conversion into CNY")
    SPECIAL_ACCOUNT_CREDIT = "special_account_credit", _("Special-account credit")
    VICTIM_RETURN = "victim_return", _("Return to victims")
    REMITTANCE = "remittance", _("Treasury remittance")


class AppendOnlyQuerySet(models.QuerySet):
    def delete(self):
        raise PermissionError("The ledger is append-only.")

    def update(self, **kwargs):
        raise PermissionError("The ledger is append-only.")


class AppendOnly(models.Model):
    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        abstract = True

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise PermissionError("The ledger is append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise PermissionError("The ledger is append-only.")


class Account(AppendOnly):
    """One line of the chart of accounts, for one case or entrustment and one commodity."""

    case = models.ForeignKey("cases.Case", on_delete=models.PROTECT, related_name="+")
    # Empty for the seizure accounts: coins are seized by a case before any entrustment exists.
    entrustment = models.ForeignKey("cases.Entrustment", on_delete=models.PROTECT, null=True, blank=True,
                                    related_name="ledger_accounts")
    asset = models.ForeignKey("cases.Asset", on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    currency = models.CharField(max_length=3, blank=True)
    kind = models.CharField(max_length=30, choices=AccountKind.choices)
    address = models.CharField(max_length=120, blank=True)
    # The identity above as one unique string: the nullable columns would let a plain unique constraint
    # admit duplicates, and concurrent get_or_create needs something unique to collide on.
    key = models.CharField(max_length=250, unique=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(asset__isnull=False, currency="")
                | (models.Q(asset__isnull=True) & ~models.Q(currency="")),
                name="ledger_account_one_commodity"),
        ]

    def __str__(self):
        where = f" {self.address}" if self.address else ""
        return f"{self.get_kind_display()} {self.commodity_label}{where}"

    @property
    def commodity(self) -> tuple:
        return ("asset", self.asset_id) if self.asset_id else ("currency", self.currency)

    @property
    def commodity_label(self) -> str:
        return self.asset.symbol if self.asset_id else self.currency


class Transaction(AppendOnly):
    """One movement, posted once: `key` is unique, so a retried service or worker cannot post it twice."""

    key = models.CharField(max_length=200, unique=True)
    case = models.ForeignKey("cases.Case", on_delete=models.PROTECT, related_name="+")
    entrustment = models.ForeignKey("cases.Entrustment", on_delete=models.PROTECT, null=True, blank=True,
                                    related_name="ledger_transactions")
    kind = models.CharField(max_length=30, choices=TransactionKind.choices)
    description = models.CharField(max_length=200)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self):
        return f"{self.get_kind_display()} ({self.key})"


class Entry(AppendOnly):
    transaction = models.ForeignKey(Transaction, on_delete=models.PROTECT, related_name="entries")
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="entries")
    # Signed, in base units (coins) or minor units (money): debit > 0, credit < 0.
    amount = BaseUnitsField()

    class Meta:
        verbose_name_plural = "entries"
        ordering = ["id"]
