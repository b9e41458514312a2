"""What the workers do on an entrustment, one function per step, each safe to run again at any time.

Every function takes ids, re-reads the state, does nothing when the step is not (or no longer) due, and acts
through the core's service functions as the responsible organisation's service account
(:func:`counterparties.automation.service_user`). Outward actions are :class:`Job` rows keyed by the
idempotency key the counterparty sees (custody transfer reference, RFQ client id, client order id), so a retry,
a redelivered task or a successor of a killed worker resumes the same action instead of repeating it.

What a worker must not decide becomes an exception on the entrustment (``record_exception``) and that line of
work stops: a balance that differs from the declaration, a deposit credited with another amount, a quote for
another asset or already expired, a fill in the wrong currency, a transfer re-organised away.

Transient errors (node or venue down, timeouts, rate limits) propagate to the task, which retries with bounded
backoff; permanent ones are recorded here.
"""

from __future__ import annotations

import logging
import uuid
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.utils import timezone
from django.utils.translation import gettext as _

from agencies.models import Organisation, OrgKind
from cases import services, whitelist
from cases.models import (
    CoinTransfer,
    Entrustment,
    EntrustmentState,
    Lot,
    LotState,
    TransferKind,
    TransferStatus,
    WhitelistPurpose,
)
from cases.workflow import DisposalError
from counterparties.automation import claimed, finish, recorder_for, remember, service_user
from counterparties.chains.base import TxState
from counterparties.chains.registry import asset_ref, chain_for_asset
from counterparties.custody import custody_for
from counterparties.errors import IndeterminateResult, PermanentError
from counterparties.exceptions import open_exceptions, record_exception
from counterparties.exchanges import registry as platforms
from counterparties.exchanges.base import DepositStatus
from counterparties.models import ExceptionKind, Job, JobState

log = logging.getLogger(__name__)

# What the venues call each chain (HashKey chainType / OSL network).
VENUE_CHAIN = {"bitcoin": "BTC", "litecoin": "LTC", "ethereum": "ETH", "tron": "TRC20"}


def _entrustment(entrustment_id: int) -> Entrustment:
    return Entrustment.objects.select_related("agency", "bce", "bureau", "policy", "platform", "case").get(
        pk=entrustment_id)


def _refused(entrustment, kind: str, key: str, exc: Exception, **details):
    """A service or a counterparty refused: say so on the entrustment, once per key.

    A service refusing because the entrustment has meanwhile moved on is no exception: another worker (or a
    person) took the step first — two dispatches of the same step racing is normal.
    """
    if isinstance(exc, DisposalError) and not isinstance(exc, PermanentError):
        current = Entrustment.objects.filter(pk=entrustment.pk).values_list("state", flat=True).first()
        if current != entrustment.state:
            log.info("%s: %s moved on (%s → %s), step done elsewhere", key, entrustment.number, entrustment.state,
                     current)
            return None
    if isinstance(exc, PermanentError):
        return record_exception(entrustment=entrustment, kind=kind, key=key, message=exc.message,
                                party=exc.party, code=exc.code, details=details)
    message = getattr(exc, "message", None) or "; ".join(
        f"{k}: {' '.join(map(str, v))}" for k, v in getattr(exc, "message_dict", {}).items()) or str(exc)
    return record_exception(entrustment=entrustment, kind=kind, key=key, message=message, details=details)


def automated(entrustment) -> bool:
    """True when the agency has a custody service configured: the workers then carry its steps."""
    return entrustment.agency is not None and custody_for(entrustment.agency) is not None


# --------------------------------------------------------------------------- detection


def detect(entrustment_id: int) -> str:
    """Bond posted → read each seizure address's balance on its chain and ask custody whether it holds the key."""
    entrustment = _entrustment(entrustment_id)
    if entrustment.state != EntrustmentState.BONDED or not automated(entrustment):
        return "not due"
    holdings = list(entrustment.holdings.select_related("asset"))
    chains = {h.pk: chain_for_asset(h.asset) for h in holdings}
    if any(c is None for c in chains.values()):
        return "no node for some chain: detection stays manual"
    custody = custody_for(entrustment.agency)
    observations = []
    for holding in holdings:
        ref = asset_ref(holding.asset)
        balance = chains[holding.pk].balance(holding.address, ref)
        observations.append(services.Observation(holding=holding, observed_amount=balance.amount,
                                                 block_height=balance.height,
                                                 controlled=custody.controls(ref, holding.address)))
    try:
        services.detection_record(actor=service_user(entrustment.agency), entrustment=entrustment,
                                  observations=observations)
    except (DisposalError, ValidationError) as exc:
        _refused(entrustment, ExceptionKind.CHAIN, f"detect:{entrustment.number}", exc)
        return "refused"
    return "recorded"


# --------------------------------------------------------------------------- hand-over into custody


def _confirmed(chain, ref, txid: str, *, to_address: str, required: int, seen_block_hash: str = ""):
    """(done, status, arrived) — done when the transaction has its confirmations and paid `to_address`."""
    status = chain.transaction(txid, ref, seen_block_hash)
    arrived = sum(t.amount for t in status.transfers if t.to_address.lower() == to_address.lower())
    done = status.state == TxState.CONFIRMED and (status.confirmations >= required or status.finalized)
    return done, status, arrived


def _whitelisted(entrustment, asset, address: str, *, purpose: str, platform=None) -> bool:
    """Propose `address` for the agency's whitelist if it is not there; True once it is usable.

    Checked before any coin moves: the services refuse a non-whitelisted destination too, but by then the
    coins would already be on their way.
    """
    entry = whitelist.whitelist_propose(actor=service_user(entrustment.agency), organisation=entrustment.agency,
                                        asset=asset, address=address, purpose=purpose, platform=platform,
                                        entrustment=entrustment)
    return whitelist.is_usable(entry.organisation, asset, entry.address, purpose=purpose, platform=platform)


def hand_over(entrustment_id: int) -> str:
    """Detected → custody moves each holding to its vault; once confirmed on-chain, record the receipt."""
    entrustment = _entrustment(entrustment_id)
    if entrustment.state != EntrustmentState.DETECTED or not automated(entrustment):
        return "not due"
    custody = custody_for(entrustment.agency)
    assets = {h.asset for h in entrustment.holdings.select_related("asset")}
    usable = [_whitelisted(entrustment, asset, custody.vault_address(asset_ref(asset)),
                           purpose=WhitelistPurpose.CUSTODY) for asset in sorted(assets, key=lambda a: a.pk)]
    if not all(usable):
        return "waiting for the vault addresses' whitelisting"
    records, waiting = [], False
    for holding in entrustment.holdings.select_related("asset").order_by("pk"):
        ref, chain = asset_ref(holding.asset), chain_for_asset(holding.asset)
        reference = f"{entrustment.number}-C{holding.pk}"
        with claimed(reference, "custody_transfer", entrustment) as found:
            if found is None:
                found = Job.objects.get(key=reference)
                if found.state != JobState.DONE:
                    waiting = True
                    continue
            elif "txid" not in found.result:
                vault = custody.vault_address(ref)
                native = not ref.contract
                try:
                    sent = custody.transfer(reference=reference, asset=ref, from_address=holding.address,
                                            to_address=vault, amount=holding.accepted_amount, subtract_fee=native)
                except IndeterminateResult:
                    sent = custody.transfer_status(reference)
                    if sent is None:
                        raise
                except PermanentError as exc:
                    _refused(entrustment, ExceptionKind.CUSTODY, f"custody:{reference}", exc)
                    finish(found, state=JobState.FAILED, error=exc.message)
                    return "refused"
                remember(found, txid=sent.txid, vault=vault, fee=sent.fee, amount=sent.amount)
            done, status, arrived = _confirmed(chain, ref, found.result["txid"], to_address=found.result["vault"],
                                               required=holding.asset.confirmations_required)
            if status.state in (TxState.FAILED, TxState.REORGED):
                record_exception(entrustment=entrustment, kind=ExceptionKind.CHAIN, key=f"chain:{reference}",
                                 message=_("Transfer %(ref)s (%(tx)s) is %(state)s on the chain.")
                                 % {"ref": reference, "tx": found.result["txid"], "state": status.state},
                                 details={"txid": found.result["txid"]})
                finish(found, state=JobState.FAILED, error=str(status.state))
                return "refused"
            if not done:
                waiting = True
                continue
            if arrived != found.result["amount"]:
                record_exception(entrustment=entrustment, kind=ExceptionKind.CHAIN, key=f"amount:{reference}",
                                 message=_("Transfer %(ref)s paid %(got)s to the vault, custody reported %(want)s.")
                                 % {"ref": reference, "got": arrived, "want": found.result["amount"]})
                finish(found, state=JobState.FAILED, error="amount differs")
                return "refused"
            remember(found, block_hash=status.block_hash, height=status.height)
            finish(found)
        fee = found.result["fee"] if not ref.contract else 0  # a token's gas is paid in the native coin
        records.append(services.TransferRecord(holding=holding, asset=holding.asset,
                                               to_address=found.result["vault"], amount=found.result["amount"],
                                               network_fee=fee, txid=found.result["txid"],
                                               from_address=holding.address))
    if waiting:
        return "waiting for confirmations"
    try:
        services.custody_receive(actor=service_user(entrustment.agency), entrustment=entrustment, transfers=records)
    except (DisposalError, ValidationError) as exc:
        _refused(entrustment, ExceptionKind.CUSTODY, f"custody:{entrustment.number}", exc)
        return "refused"
    return "received"


# --------------------------------------------------------------------------- deposit at the platform


def default_platform() -> Organisation | None:
    for platform in Organisation.objects.filter(kind=OrgKind.PLATFORM, is_active=True).order_by("code"):
        if platforms.is_enabled(platform):
            return platform
    return None


def deposit(entrustment_id: int) -> str:
    """Reserve set → instruct the deposit of every lot's coins at the platform and have custody broadcast it."""
    entrustment = _entrustment(entrustment_id)
    if entrustment.state not in (EntrustmentState.RESERVE_SET, EntrustmentState.TRANSFERRING) \
            or not automated(entrustment):
        return "not due"
    agent = service_user(entrustment.agency)
    custody = custody_for(entrustment.agency)
    if entrustment.state == EntrustmentState.RESERVE_SET:
        platform = default_platform()
        if platform is None:
            return "no platform enabled: the transfer stays manual"
        exchange = platforms.exchange_for(platform, recorder=recorder_for(entrustment))
        lot_assets = sorted({lot.asset for lot in entrustment.lots.filter(parent__isnull=True).select_related("asset")},
                            key=lambda a: a.pk)
        addresses = {a.pk: exchange.deposit_address(a.symbol, VENUE_CHAIN[a.chain]) for a in lot_assets}
        usable = [_whitelisted(entrustment, a, addresses[a.pk], purpose=WhitelistPurpose.PLATFORM_DEPOSIT,
                               platform=platform) for a in lot_assets]
        if not all(usable):
            return "waiting for the deposit addresses' whitelisting"
        deposits = []
        for lot_asset in lot_assets:
            ref = asset_ref(lot_asset)
            planned = sum(int(q) for q in entrustment.lots.filter(asset=lot_asset, parent__isnull=True)
                          .values_list("quantity", flat=True))
            deposits.append(services.TransferRecord(
                holding=None, asset=lot_asset, to_address=addresses[lot_asset.pk], amount=planned, network_fee=0,
                txid="", from_address=custody.vault_address(ref)))
        try:
            services.platform_transfer_instruct(actor=agent, entrustment=entrustment, platform=platform,
                                                deposits=deposits)
        except (DisposalError, ValidationError) as exc:
            _refused(entrustment, ExceptionKind.DEPOSIT, f"instruct:{entrustment.number}", exc)
            return "refused"
    for transfer in CoinTransfer.objects.filter(entrustment=entrustment, kind=TransferKind.TO_PLATFORM,
                                                status=TransferStatus.INSTRUCTED, txid="").select_related("asset"):
        ref = asset_ref(transfer.asset)
        with claimed(transfer.reference, "platform_deposit", entrustment) as found:
            if found is None:
                continue
            try:
                sent = custody.transfer(reference=transfer.reference, asset=ref, from_address=transfer.from_address,
                                        to_address=transfer.to_address, amount=transfer.amount)
            except IndeterminateResult:
                sent = custody.transfer_status(transfer.reference)
                if sent is None:
                    raise
            except PermanentError as exc:
                _refused(entrustment, ExceptionKind.CUSTODY, f"custody:{transfer.reference}", exc)
                finish(found, state=JobState.FAILED, error=exc.message)
                continue
            remember(found, txid=sent.txid, fee=sent.fee)
            try:
                services.transfer_record_broadcast(actor=agent, transfer=transfer, txid=sent.txid,
                                                   network_fee=sent.fee if not ref.contract else 0)
            except (DisposalError, ValidationError) as exc:
                _refused(entrustment, ExceptionKind.DEPOSIT, f"broadcast:{transfer.reference}", exc)
            finish(found)
    return "broadcast"


def watch_deposits(entrustment_id: int) -> str:
    """Transferring → the platform credits each deposit: confirm, hold for AML, or fail — never guess."""
    entrustment = _entrustment(entrustment_id)
    if entrustment.state != EntrustmentState.TRANSFERRING or not automated(entrustment) or entrustment.platform is None:
        return "not due"
    exchange = platforms.exchange_for(entrustment.platform, recorder=recorder_for(entrustment))
    if exchange is None:
        return "platform not enabled"
    agent = service_user(entrustment.agency)
    pending = list(CoinTransfer.objects.filter(entrustment=entrustment, kind=TransferKind.TO_PLATFORM,
                                               status=TransferStatus.INSTRUCTED).select_related("asset"))
    if not pending:
        return "waiting for broadcast"
    if any(not t.txid for t in pending):
        # Instructed but not broadcast: the worker doing it died inside the custody call (the instruction is
        # committed before custody is asked). Finish it under the same reference; custody acts once per reference.
        return deposit(entrustment_id)
    credited = 0
    for transfer in pending:
        seen = exchange.deposit_status(transfer.txid)
        key = f"deposit:{transfer.reference}"
        if seen.status == DepositStatus.CREDITED:
            got = seen.amount_base_units(transfer.asset.decimals)
            if got != int(transfer.amount) or seen.asset.upper() != transfer.asset.symbol:
                record_exception(entrustment=entrustment, kind=ExceptionKind.DEPOSIT, key=key + ":amount",
                                 party=exchange.party,
                                 message=_("The platform credited %(got)s %(asset)s for %(ref)s; %(want)s was sent.")
                                 % {"got": transfer.asset.format_amount(got), "asset": seen.asset,
                                    "ref": transfer.reference, "want": transfer.asset.format_amount(int(transfer.amount))})
                return "refused"
            credited += 1
        elif seen.status == DepositStatus.HELD_UNVERIFIED:
            reason = _("The platform holds deposit %(ref)s: %(why)s") % {"ref": transfer.reference,
                                                                         "why": seen.reason or seen.venue_status}
            record_exception(entrustment=entrustment, kind=ExceptionKind.DEPOSIT, key=key + ":held",
                             party=exchange.party, message=reason)
            services.platform_aml_hold(actor=agent, entrustment=entrustment, reason=reason)
            return "held"
        elif seen.status == DepositStatus.REJECTED:
            reason = _("The platform rejected deposit %(ref)s: %(why)s") % {"ref": transfer.reference,
                                                                             "why": seen.reason or seen.venue_status}
            record_exception(entrustment=entrustment, kind=ExceptionKind.DEPOSIT, key=key + ":rejected",
                             party=exchange.party, message=reason)
            services.platform_transfer_fail(actor=agent, entrustment=entrustment, reason=reason)
            return "rejected"
    if credited < len(pending):
        return "waiting for the platform"
    services.platform_deposit_confirm(actor=agent, entrustment=entrustment, txids={})
    return "credited"


# --------------------------------------------------------------------------- inquiry and execution


def client_ref(lot: Lot, round_number: int) -> str:
    return f"{lot.entrustment.number}-L{lot.sequence}-R{round_number}"


def run_inquiry(lot_id: int) -> str:
    """A reserved lot at the platform → one RFQ round: record every valid quote, then close the round.

    The core decides: the best quote at or above the reserve becomes an award awaiting BCE's approval,
    otherwise the round ends without a deal.
    """
    lot = Lot.objects.select_related("entrustment__agency", "entrustment__platform", "asset").get(pk=lot_id)
    entrustment = lot.entrustment
    if lot.state not in (LotState.RESERVE_SET, LotState.INQUIRY) or \
            entrustment.state not in (EntrustmentState.AT_PLATFORM, EntrustmentState.SELLING):
        return "not due"
    if not automated(entrustment) or entrustment.platform is None or not platforms.is_enabled(entrustment.platform):
        return "not automated"
    agent = service_user(entrustment.agency)
    # An open round is resumed, not opened again: its opener died after opening it (the round is committed
    # before the venue is asked). Its RFQ keeps the round's client id, which the venue treats as the same RFQ.
    resuming = lot.state == LotState.INQUIRY
    round_number = lot.current_round().number if resuming else lot.rounds.count() + 1
    reference = client_ref(lot, round_number)
    if resuming and not Job.objects.filter(key=f"rfq:{reference}").exists():
        return "round opened by a person"  # quotes taken by hand are not the worker's to close
    with claimed(f"rfq:{reference}", "rfq", entrustment) as found:
        if found is None:
            return "claimed elsewhere"
        exchange = platforms.exchange_for(entrustment.platform, recorder=recorder_for(entrustment))
        if not resuming:
            services.inquiry_open(actor=agent, lot=lot)
        recorded = set(lot.current_round().quotes.values_list("reference", flat=True))
        symbol = f"{lot.asset.symbol}/{lot.quote_currency}"
        try:
            quotes = exchange.request_quotes(symbol, "sell", int(lot.quantity), lot.asset.decimals, reference)
        except PermanentError as exc:
            quotes = []
            _refused(entrustment, ExceptionKind.INQUIRY, f"rfq:{reference}", exc)
        now = timezone.now()
        for quote in quotes:
            if quote.quote_id[:100] in recorded:
                continue  # recorded before the predecessor died
            problem = None
            if quote.symbol.replace("-", "/").upper() != symbol.upper():
                problem = _("quote %(id)s is for %(sym)s, not %(want)s") % {"id": quote.quote_id, "sym": quote.symbol,
                                                                             "want": symbol}
            elif str(quote.side) != "sell":
                problem = _("quote %(id)s is not a bid for our sale") % {"id": quote.quote_id}
            elif quote.is_expired(now):
                problem = _("quote %(id)s had already expired when it arrived") % {"id": quote.quote_id}
            elif quote.quantity != int(lot.quantity):
                problem = _("quote %(id)s is for another quantity") % {"id": quote.quote_id}
            if problem:
                record_exception(entrustment=entrustment, kind=ExceptionKind.INQUIRY,
                                 key=f"quote:{entrustment.platform.code}:{quote.quote_id}", party=exchange.party,
                                 message=_("A quote was set aside: %(why)s.") % {"why": problem})
                continue
            try:
                services.quote_record(actor=agent, lot=lot, platform=entrustment.platform,
                                      reference=quote.quote_id[:100], price=quote.price, quantity=quote.quantity,
                                      quoted_at=quote.quoted_at, expires_at=quote.expires_at)
            except (DisposalError, ValidationError) as exc:
                _refused(entrustment, ExceptionKind.INQUIRY, f"quote:{quote.quote_id}", exc)
        lot.refresh_from_db()
        moved = _market_move(exchange, lot, symbol, reference, quotes)
        if moved is not None:
            services.lot_suspend(actor=agent, lot=lot, reason=moved)
        else:
            services.inquiry_close(actor=agent, lot=lot)
        finish(found)
    lot.refresh_from_db()
    return lot.state


def _market_move(exchange, lot: Lot, symbol: str, reference: str, quotes) -> str | None:
    """Ask once more at the end of the round (an indicative RFQ, declined): a reason to suspend when the best
    price moved beyond the policy's limit while the round was open, else None."""
    limit = lot.entrustment.policy.max_market_move
    first = max((q.price for q in quotes), default=None)
    if not limit or first is None:
        return None
    try:
        check = exchange.request_quotes(symbol, "sell", int(lot.quantity), lot.asset.decimals, f"{reference}-CHK")
    except PermanentError:
        return None  # no second look possible: the round is judged on its quotes, as without a limit
    for quote in check:
        try:
            exchange.decline_quote(quote.quote_id)
        except PermanentError:
            pass  # an indicative quote that cannot be declined simply expires
    last = max((q.price for q in check), default=None)
    if last is None:
        return None
    move = abs(last - first) / first
    if move > limit:
        return _("The market moved %(move)s%% during the round (best %(first)s → %(last)s), beyond the policy's "
                 "%(limit)s%%: the round is suspended instead of awarded.") % {
            "move": (move * 100).quantize(Decimal("0.01")), "first": first, "last": last,
            "limit": (limit * 100).normalize()}
    return None


def execute(lot_id: int) -> str:
    """An approved award → accept the quote under the client order id; record the fills once the order is final.

    The client order id is the idempotency key: after a lost answer the order is looked up by it, and the
    venue treats a repeated accept with it as the same order. Nothing is ever accepted under a new id.
    """
    lot = Lot.objects.select_related("entrustment__agency", "entrustment__platform", "asset").get(pk=lot_id)
    entrustment = lot.entrustment
    if lot.state != LotState.EXECUTING or not automated(entrustment) or entrustment.platform is None:
        return "not due"
    inquiry = lot.current_round()
    quote = inquiry.awarded_quote
    order_id = client_ref(lot, inquiry.number)
    with claimed(f"order:{order_id}", "order", entrustment) as found:
        if found is None:
            return "claimed elsewhere"
        exchange = platforms.exchange_for(quote.platform, recorder=recorder_for(entrustment))
        if exchange is None:
            return "platform not enabled"
        try:
            order = None
            if found.result.get("accepted"):
                # An accept whose outcome was unknown: the venue's record under our id decides. When it has
                # nothing executed under it, accepting again with the same id is safe (it cannot fill twice).
                order = _existing_order(exchange, order_id)
                if order is None:
                    remember(found, accepted=False)
            if order is None:
                try:
                    order = exchange.accept_quote(quote.reference, order_id)
                except IndeterminateResult:
                    remember(found, accepted=True)  # it may have been carried out: from now on only ask
                    raise
                except PermanentError as refused:
                    # A predecessor killed mid-call may have placed the order before the quote expired: the
                    # venue's record under our order id decides, not the refusal of the repeated accept.
                    order = _existing_order(exchange, order_id)
                    if order is None:
                        return _not_carried_out(found, lot, order_id, f"order:{order_id}", refused.message,
                                                exchange.party, quote=quote.reference)
                remember(found, accepted=True)
        except PermanentError as exc:
            _refused(entrustment, ExceptionKind.EXECUTION, f"order:{order_id}", exc, quote=quote.reference)
            finish(found, state=JobState.FAILED, error=exc.message)
            return "refused"
        if not order.final:
            return "order open"
        # Only an order with no fill at all was not carried out; a final order with fills (even one the venue
        # calls failed or cancelled) sold what it filled, and that is recorded — never sold a second time.
        if not order.fills:
            return _not_carried_out(found, lot, order_id, f"order:{order_id}:failed",
                                    _("Order %(id)s ended without a fill.") % {"id": order_id}, exchange.party)
        wrong = [f for f in order.fills if f.fee and f.fee_currency.upper() != lot.quote_currency.upper()]
        if wrong:
            record_exception(entrustment=entrustment, kind=ExceptionKind.EXECUTION, key=f"order:{order_id}:fee",
                             party=exchange.party,
                             message=_("Order %(id)s charged fees in %(cur)s, not %(want)s.")
                             % {"id": order_id, "cur": wrong[0].fee_currency, "want": lot.quote_currency})
            finish(found, state=JobState.FAILED, error="fee currency")
            return "refused"
        fills = [services.FillRecord(trade_id=f.trade_id, quantity=f.quantity, price=f.price, gross=f.gross,
                                     fee=f.fee, executed_at=f.executed_at) for f in order.fills]
        try:
            services.execution_record(actor=service_user(entrustment.agency), lot=lot, fills=fills)
        except (DisposalError, ValidationError) as exc:
            _refused(entrustment, ExceptionKind.EXECUTION, f"fills:{order_id}", exc)
            finish(found, state=JobState.FAILED, error=str(exc))
            return "refused"
        finish(found)
    return "executed"


# --------------------------------------------------------------------------- after the threshold


def _not_carried_out(found, lot: Lot, order_id: str, key: str, why: str, party: str, **details) -> str:
    """The venue refused the award's order, or ended it unfilled, and holds nothing executed under our id: the
    lot goes back for a new round (new client order id, new award, new approval), and the exception stops the
    automated line until a person has looked at why."""
    entrustment = lot.entrustment
    record_exception(entrustment=entrustment, kind=ExceptionKind.EXECUTION, key=key, party=party,
                     message=_("Order %(id)s was not carried out: %(why)s") % {"id": order_id, "why": why},
                     details=details)
    finish(found, state=JobState.FAILED, error=why)
    try:
        services.execution_fail(actor=service_user(entrustment.agency), lot=lot,
                                reason=_("The platform did not carry out order %(id)s: %(why)s")
                                % {"id": order_id, "why": why})
    except (DisposalError, ValidationError) as exc:
        _refused(entrustment, ExceptionKind.EXECUTION, f"{key}:record", exc)
        return "refused"
    return "not carried out"


def _existing_order(exchange, order_id: str):
    """The venue's order under our client order id, or None when it has none."""
    from counterparties.errors import ErrorCode

    try:
        return exchange.order_status(order_id)
    except PermanentError as exc:
        if exc.code == ErrorCode.UNKNOWN_ORDER:
            return None
        raise


def recheck_transfers(hours: int = 24) -> int:
    """Ask the chain again about recent confirmed hand-overs: a re-organisation after the threshold is caught."""
    since = timezone.now() - timezone.timedelta(hours=hours)
    flagged = 0
    for found in Job.objects.filter(kind="custody_transfer", state=JobState.DONE, updated_at__gte=since) \
            .select_related("entrustment"):
        if "block_hash" not in found.result:
            continue
        transfer = CoinTransfer.objects.filter(reference=found.key).select_related("asset").first()
        if transfer is None:
            continue
        chain = chain_for_asset(transfer.asset)
        if chain is None:
            continue
        status = chain.transaction(found.result["txid"], asset_ref(transfer.asset), found.result["block_hash"])
        if status.state in (TxState.REORGED, TxState.UNKNOWN, TxState.FAILED):
            record_exception(entrustment=found.entrustment, kind=ExceptionKind.CHAIN, key=f"reorg:{found.key}",
                             message=_("Transfer %(ref)s (%(tx)s), recorded as confirmed, is no longer on the main "
                                       "chain (%(state)s).") % {"ref": found.key, "tx": found.result["txid"],
                                                                 "state": status.state},
                             details={"txid": found.result["txid"], "block_hash": found.result["block_hash"]})
            flagged += 1
    return flagged


# States in which the agency holds (or is about to hold) the coins under its bond, before they are sold.
BOND_AT_RISK = (EntrustmentState.BONDED, EntrustmentState.DETECTED, EntrustmentState.IN_CUSTODY,
                EntrustmentState.RESERVE_SET, EntrustmentState.TRANSFERRING, EntrustmentState.AML_HOLD,
                EntrustmentState.AT_PLATFORM, EntrustmentState.SELLING)


def reference_rate() -> Decimal:
    """CNY per USD for marking bonds: the bureau's reference rate of the day, configured (not a quote)."""
    from portal.secrets import secret

    return Decimal(secret("PORTAL_USDCNY_REFERENCE_RATE", "7.10") or "7.10")


def remark_bonds() -> int:
    """Mark every bond at risk to the market: when what the agency holds is now worth more than the bond
    covers at the policy's ratio, raise a top-up call on the entrustment (an exception BCE must act on).

    The price is an indicative RFQ at the first enabled platform for each asset (declined at once), in USD,
    converted at the configured reference rate. One price per asset per run, however many entrustments.
    """
    from agencies.models import PerformanceBond

    platform = default_platform()
    if platform is None:
        return 0
    exchange = platforms.exchange_for(platform)
    prices: dict[int, Decimal | None] = {}
    calls = 0
    # A fresh RFQ client id per run: the venue treats a repeated one as the same (already declined) RFQ.
    stamp = f"{timezone.now():%Y%m%d%H%M%S}-{uuid.uuid4().hex[:6]}"
    for entrustment in Entrustment.objects.filter(state__in=BOND_AT_RISK).select_related("policy", "agency"):
        bond = entrustment.current_bond()
        if bond is None or bond.state != "posted":
            continue
        value = Decimal(0)
        for holding in entrustment.holdings.select_related("asset"):
            asset = holding.asset
            if asset.pk not in prices:
                try:
                    quote = exchange.request_quote(f"{asset.symbol}/USD", "sell", asset.unit, asset.decimals,
                                                   f"MARK-{stamp}-{asset.symbol}")
                    exchange.decline_quote(quote.quote_id)
                    prices[asset.pk] = quote.price
                except PermanentError:
                    prices[asset.pk] = None  # the platform does not price it: cannot mark, say so below
            if prices[asset.pk] is None:
                record_exception(entrustment=entrustment, kind=ExceptionKind.BOND, key=f"mark:{entrustment.number}:"
                                 f"{asset.symbol}", message=_("The bond cannot be marked to market: no price for "
                                                             "%(sym)s.") % {"sym": asset.symbol})
                break
            amount = int(holding.accepted_amount or holding.declared_amount)
            value += Decimal(amount) / asset.unit * prices[asset.pk] * reference_rate()
        else:
            required = PerformanceBond.required_for(value, entrustment.policy.bond_ratio)
            if required > bond.posted_cny:
                record_exception(
                    entrustment=entrustment, kind=ExceptionKind.BOND,
                    key=f"topup:{entrustment.number}:{bond.reference}",
                    message=_("Top-up call: the coins are now worth %(value)s CNY; at %(ratio)s the bond must be "
                              "%(required)s CNY, %(posted)s CNY is posted.")
                    % {"value": value.quantize(Decimal("0.01")), "ratio": entrustment.policy.bond_ratio,
                       "required": required, "posted": bond.posted_cny},
                    details={"value_cny": str(value.quantize(Decimal("0.01"))), "required_cny": str(required),
                             "posted_cny": str(bond.posted_cny), "rate": str(reference_rate())})
                calls += 1
    return calls


def blocked(entrustment) -> bool:
    """An open exception stops the automated line of work until a person resolves it."""
    return open_exceptions(entrustment).exclude(kind=ExceptionKind.OUTAGE).exists()
