"""The daily comparison of what the ledger says custody holds with what the chains say."""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import date

from celery import shared_task
from django.utils import timezone
from django.utils.translation import gettext as _

from .models import Account, AccountKind, Entry

log = logging.getLogger(__name__)


def custody_positions() -> dict[tuple, dict]:
    """{(asset, address): {entrustment: balance}} for every custody address with a non-zero ledger balance.

    One custody address may hold the coins of several entrustments (the agency's wallet): the chain is
    compared with their total.
    """
    positions: dict[tuple, dict] = defaultdict(lambda: defaultdict(int))
    accounts = {a.pk: a for a in Account.objects.filter(kind=AccountKind.CUSTODY).select_related("asset",
                                                                                                  "entrustment")}
    for account_id, amount in Entry.objects.filter(account__in=list(accounts)).values_list("account_id", "amount"):
        a = accounts[account_id]
        positions[(a.asset, a.address)][a.entrustment] += amount
    return {where: {e: n for e, n in held.items() if n} for where, held in positions.items()
            if sum(held.values())}


@shared_task
def compare_onchain(on: str | None = None) -> dict:
    """Ask each configured chain for each custody address's balance; any difference, or a chain that does
    not answer, is an exception for a person (never a crash, never a correction)."""
    from counterparties.chains import registry
    from counterparties.errors import PermanentError, TransientError
    from counterparties.exceptions import record_exception
    from counterparties.models import ExceptionKind

    day = date.fromisoformat(on) if on else timezone.localdate()
    counts = {"equal": 0, "different": 0, "unreachable": 0, "not_watched": 0}
    for (asset, address), held in custody_positions().items():
        expected = sum(held.values())
        entrustments = sorted(held, key=lambda e: e.number)
        # An exception belongs on the entrustment's page when one entrustment alone is concerned.
        owner = entrustments[0] if len(entrustments) == 1 else None
        where = f"{asset.symbol}@{asset.chain}:{address}"
        details = {"asset": asset.symbol, "chain": asset.chain, "address": address, "ledger": str(expected),
                   "date": day.isoformat(), "entrustments": {e.number: str(n) for e, n in held.items()}}
        chain = registry.chain_for_asset(asset)
        if chain is None:
            counts["not_watched"] += 1  # no node configured: the registry's documented "not watched"
            continue
        try:
            seen = chain.balance(address, registry.asset_ref(asset))
        except TransientError as exc:
            counts["unreachable"] += 1
            record_exception(entrustment=owner, kind=ExceptionKind.OUTAGE, key=f"onchain-outage:{where}:{day}",
                             party=exc.party, code=str(exc.code),
                             message=_("The %(chain)s node did not answer for custody address %(address)s: %(error)s")
                             % {"chain": asset.chain, "address": address, "error": exc}, details=details)
            continue
        except PermanentError as exc:
            counts["unreachable"] += 1
            record_exception(entrustment=owner, kind=ExceptionKind.CHAIN, key=f"onchain-error:{where}:{day}",
                             party=exc.party, code=str(exc.code),
                             message=_("The %(chain)s node refused the balance of custody address %(address)s: "
                                       "%(error)s")
                             % {"chain": asset.chain, "address": address, "error": exc}, details=details)
            continue
        if seen.amount == expected:
            counts["equal"] += 1
            continue
        counts["different"] += 1
        log.warning("custody %s: ledger %s, chain %s at height %s", where, expected, seen.amount, seen.height)
        record_exception(
            entrustment=owner, kind=ExceptionKind.RECONCILIATION, key=f"onchain:{where}:{day}", party=asset.chain,
            message=_("Custody address %(address)s holds %(chain)s %(sym)s on-chain at height %(height)s; the ledger "
                      "says %(ledger)s (difference %(diff)s).")
            % {"address": address, "chain": asset.format_amount(seen.amount), "sym": asset.symbol,
               "height": seen.height, "ledger": asset.format_amount(expected),
               "diff": asset.format_amount(seen.amount - expected)},
            details={**details, "chain_balance": str(seen.amount), "height": seen.height,
                     "difference": str(seen.amount - expected)})
    return counts
