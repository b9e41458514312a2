"""`manage.py ledger_backfill`: post the history recorded before the ledger existed, once.

Replays every case's and entrustment's movements from the record, in the order they happen, under the same
idempotency keys the services use: what is already posted is left as it is, so running it twice, or on a
database that was always posted, changes nothing. Each entrustment is then checked; a difference is reported
(it is a difference in the record itself), not hidden.
"""

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils.translation import gettext as _

from cases.models import Case, Entrustment, TransferKind, TransferStatus
from ledger import invariants, postings


class Command(BaseCommand):
    help = "Post to the ledger every movement recorded before it existed (idempotent), then check."

    def handle(self, *args, **options):
        for case in Case.objects.order_by("id"):
            with transaction.atomic(), postings.checks_deferred():
                for holding in case.holdings.select_related("case", "asset"):
                    postings.post_seizure(holding)
        breaches = 0
        for entrustment in Entrustment.objects.select_related("case").order_by("id"):
            with transaction.atomic():
                with postings.checks_deferred():
                    replay(entrustment)
                try:
                    invariants.check(entrustment)
                except invariants.InvariantBreach as breach:
                    breaches += 1
                    self.stderr.write(breach.message)
        if breaches:
            raise CommandError(_("%(n)s entrustment(s) differ from the record after the backfill.") % {"n": breaches})
        self.stdout.write(_("Ledger backfilled; every entrustment agrees with the record."))


def replay(entrustment) -> None:
    for holding in entrustment.holdings.select_related("case", "asset"):
        if holding.accepted_amount != holding.declared_amount:
            postings.post_seizure_adjustment(holding, entrustment=entrustment)
    postings.post_custody_receipts(entrustment)
    for transfer in entrustment.transfers.filter(kind=TransferKind.TO_PLATFORM).order_by("id"):
        postings.post_platform_transfer(transfer)
        if transfer.status == TransferStatus.CONFIRMED:
            postings.post_platform_deposit(transfer)
        elif transfer.status == TransferStatus.FAILED:
            postings.post_transfer_failed(transfer)
    for lot in entrustment.lots.order_by("sequence"):
        postings.post_fills(lot)
    for receipt in entrustment.offshore_receipts.order_by("id"):
        postings.post_offshore_receipt(receipt)
    for fx in entrustment.fx_conversions.order_by("id"):
        postings.post_conversion(fx)
    if hasattr(entrustment, "credit"):
        postings.post_special_account_credit(entrustment.credit)
    for victim_return in entrustment.victim_returns.order_by("id"):
        postings.post_victim_return(victim_return)
    if hasattr(entrustment, "remittance"):
        postings.post_remittance(entrustment.remittance)
