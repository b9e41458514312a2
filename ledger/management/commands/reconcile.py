"""`manage.py reconcile [--entrustment WT-…]`: the ledger against the record, every invariant, as a table.

Exits non-zero when any line differs, so that a cron job or CI notices.
"""

from django.core.management.base import BaseCommand, CommandError
from django.utils.translation import gettext as _

from cases.models import Entrustment
from ledger.reconcile import reconcile


class Command(BaseCommand):
    help = "Recompute every ledger invariant and transaction balance; exit non-zero on any difference."

    def add_arguments(self, parser):
        parser.add_argument("--entrustment", metavar="WT-YYYY-NNNNNN", help="only this entrustment (and its case)")
        parser.add_argument("--differences-only", action="store_true", help="print only the lines that differ")

    def handle(self, *args, entrustment=None, differences_only=False, **options):
        try:
            lines = reconcile(entrustment_number=entrustment)
        except Entrustment.DoesNotExist:
            raise CommandError(_("No entrustment numbered %(n)s.") % {"n": entrustment})
        header = (_("entrustment / case"), _("commodity"), _("figure"), _("ledger"), _("record"), _("difference"))
        rows = [(line.scope, line.commodity, line.name, line.ledger_text, line.domain_text,
                 "" if line.ok else line.difference_text)
                for line in lines if not (differences_only and line.ok)]
        widths = [max([len(str(h))] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
        for row in [tuple(map(str, header))] + rows:
            self.stdout.write("  ".join(cell.rjust(w) if i >= 3 else cell.ljust(w)
                                        for i, (cell, w) in enumerate(zip(row, widths))).rstrip())
        bad = [line for line in lines if not line.ok]
        if bad:
            raise CommandError(_("%(n)s ledger line(s) differ from the record.") % {"n": len(bad)})
        self.stdout.write(_("Reconciled: %(n)s lines, no difference.") % {"n": len(lines)})
