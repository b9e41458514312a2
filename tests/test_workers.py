"""The workers' steps one by one, against the emulators over loopback, called in-process (no Celery).

Each bad answer from outside becomes a recorded exception or the process's own exception state, with the
entrustment left where it was: a balance that differs from the declaration, a platform crediting another
amount, a quote that arrives expired, a hand-over re-organised away after it was confirmed, a bond that the
market has outgrown.
"""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from agencies.models import PerformanceBond
from cases import services, whitelist
from cases.models import CoinTransfer, Entrustment, Lot, LotState, TransferKind
from counterparties import operations
from counterparties.models import ExceptionKind, OperationalException

from .test_e2e_counterparties import LiveFlow, plan_and_reserve, ready_agency

pytestmark = [pytest.mark.faults]


@pytest.fixture(scope="module")
def outside():
    from emulators.world import start_world

    world = start_world(block_time=0.2, chains=("litecoin", "ethereum"))
    yield world
    world.stop()


@pytest.fixture
def live(outside, monkeypatch, world):
    from django.test import override_settings

    for name, value in outside.settings().items():
        monkeypatch.setenv(name, value)
    ready_agency(world, outside, confirmations=2)
    with override_settings(CHAIN_NETWORK="regtest"):
        yield outside


def state(entrustment):
    return Entrustment.objects.get(pk=entrustment.pk).state


def poll(step, object_id, until, world, timeout=60):
    """Run a worker step again and again (as beat would), approving the whitelist as BCE would, until done."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in whitelist.pending_for(world.agency):
            whitelist.whitelist_approve(actor=world.bce_approver, entry=entry)
        step(object_id)
        if until():
            return
        time.sleep(0.2)
    raise AssertionError(f"{step.__name__} did not get there; exceptions: "
                         f"{list(OperationalException.objects.values_list('message', flat=True))}")


@pytest.mark.django_db
def test_a_balance_that_differs_from_the_declaration_is_a_mismatch_not_a_correction(world, live):
    flow = LiveFlow(world, live)
    flow.holdings_spec = (("LTC", "3"), ("ETH", "10"))  # 2.5 LTC were seized, 3 declared
    entrustment = flow.to("bonded")
    assert operations.detect(entrustment.pk) == "recorded"
    assert state(entrustment) == "detection_mismatch"
    holding = entrustment.holdings.get(asset__symbol="LTC")
    assert holding.detections.get().observed_amount == 250_000_000 and holding.declared_amount == 300_000_000


def _at_custody(world, live):
    flow = LiveFlow(world, live)
    entrustment = flow.to("bonded")
    operations.detect(entrustment.pk)
    poll(operations.hand_over, entrustment.pk, lambda: state(entrustment) == "in_custody", world)
    return flow, entrustment


@pytest.mark.django_db
def test_a_hand_over_reorganised_away_after_its_confirmations_is_caught_by_the_recheck(world, live):
    from counterparties.models import Job

    _flow, entrustment = _at_custody(world, live)
    holding = entrustment.holdings.get(asset__symbol="LTC")
    mined_at = Job.objects.get(key=f"{entrustment.number}-C{holding.pk}").result["height"]
    litecoin = live.chains["litecoin"]
    litecoin.set_block_time(None)  # hold the tip still: the re-org must reach the hand-over's block however
    try:                           # many blocks came since (a fixed depth missed it on a slow machine)
        litecoin.reorg(int(litecoin.node.call("getblockcount")) - mined_at + 1)
    finally:
        litecoin.set_block_time(0.2)
    assert operations.recheck_transfers() >= 1
    exception = OperationalException.objects.get(entrustment=entrustment, kind=ExceptionKind.CHAIN)
    assert exception.key.startswith("reorg:") and exception.details["txid"] in exception.message
    assert operations.blocked(entrustment)


def _reserved(world, live, price="10"):
    flow, entrustment = _at_custody(world, live)
    plan_and_reserve(world, flow, entrustment, price=price)
    return flow, entrustment


def _at_platform(world, live, price="10"):
    flow, entrustment = _reserved(world, live, price=price)
    poll(operations.deposit, entrustment.pk, lambda: state(entrustment) == "transferring", world)
    poll(operations.watch_deposits, entrustment.pk, lambda: state(entrustment) == "at_platform", world)
    return flow, entrustment, Lot.objects.filter(entrustment=entrustment).order_by("sequence").first()


@pytest.mark.django_db
def test_a_platform_crediting_another_amount_is_an_exception_and_nothing_is_confirmed(world, live):
    _flow, entrustment = _reserved(world, live)
    poll(operations.deposit, entrustment.pk, lambda: CoinTransfer.objects.filter(
        entrustment=entrustment, kind=TransferKind.TO_PLATFORM).exclude(txid="").count() == 2, world)
    transfer = CoinTransfer.objects.filter(entrustment=entrustment, kind=TransferKind.TO_PLATFORM,
                                           asset__symbol="LTC").get()
    # The venue books one litoshi less than was sent.
    wrong = Decimal(int(transfer.amount) - 1).scaleb(-8)
    live.exchange.add_deposit("hashkey", asset="LTC", chain="LTC", txid=transfer.txid, amount=wrong,
                              sender=transfer.from_address, status="credited")
    deadline = time.monotonic() + 30
    while operations.watch_deposits(entrustment.pk) not in ("refused",):
        assert time.monotonic() < deadline
        time.sleep(0.3)
    exception = OperationalException.objects.get(entrustment=entrustment, kind=ExceptionKind.DEPOSIT)
    assert transfer.reference in exception.message
    assert state(entrustment) == "transferring"


@pytest.mark.django_db
def test_quotes_below_the_reserve_end_the_round_without_a_sale(world, live):
    # Expired quotes never reach this point: the adapters drop them on arrival (tests/test_exchange_adapters.py).
    _flow, entrustment, lot = _at_platform(world, live, price="100000000")
    operations.run_inquiry(lot.pk)
    lot.refresh_from_db()
    assert lot.state == LotState.NO_DEAL and lot.failed_rounds == 1
    assert lot.rounds.get().quotes.count() >= 2  # quoted, but below the reserve
    assert not live.exchange.executions("hashkey") or all(
        not e.client_id.startswith(entrustment.number) for e in live.exchange.executions("hashkey"))


@pytest.mark.django_db
def test_a_bond_the_market_has_outgrown_gets_a_top_up_call(world, live, monkeypatch):
    flow = LiveFlow(world, live)
    entrustment = flow.to("bonded")
    PerformanceBond.objects.filter(appointment__entrustment=entrustment).update(posted_cny=Decimal("100.00"))
    monkeypatch.setenv("PORTAL_USDCNY_REFERENCE_RATE", "7.10")
    assert operations.remark_bonds() == 1
    call = OperationalException.objects.get(entrustment=entrustment, kind=ExceptionKind.BOND)
    assert call.key.startswith("topup:") and call.details["posted_cny"] == "100.00" and "100.00" in call.message
    assert Decimal(call.details["required_cny"]) > Decimal("100.00")
    assert operations.remark_bonds() == 1  # the same call again: one open exception, seen twice
    assert OperationalException.objects.get(entrustment=entrustment, kind=ExceptionKind.BOND).occurrences == 2


@pytest.mark.django_db
def test_a_market_moving_beyond_the_policy_limit_during_a_round_suspends_it(world, live, monkeypatch):
    _flow, entrustment, lot = _at_platform(world, live)
    entrustment.policy.max_market_move = Decimal("0.0050")  # 0.5 %
    entrustment.policy.save()
    # The replayed day falls through the round: the quotes come at its opening minute, the second look at its
    # close (the real BTC/USD day of 2025-01-07 lost several per cent; the other assets follow it).
    original = operations._market_move

    def later(*args, **kwargs):
        live.exchange.set_market_minute(1439)
        return original(*args, **kwargs)

    monkeypatch.setattr(operations, "_market_move", later)
    live.exchange.set_market_minute(0)
    try:
        assert operations.run_inquiry(lot.pk) == LotState.SUSPENDED
    finally:
        live.exchange.set_market_minute(None)
    lot.refresh_from_db()
    # The reason (in the portal's language) names the policy's limit and both prices.
    assert "0.5" in lot.history.filter(state=LotState.SUSPENDED).first().history_change_reason
    assert not lot.fills.exists()


@pytest.mark.django_db
def test_a_round_whose_worker_died_after_opening_it_is_resumed_not_opened_again(world, live):
    from django.utils import timezone

    from counterparties.automation import service_user
    from counterparties.models import Job

    _flow, entrustment, lot = _at_platform(world, live)
    # What a worker killed inside the RFQ call leaves: the round opened, its job claimed by a lease run out.
    services.inquiry_open(actor=service_user(entrustment.agency), lot=lot)
    reference = operations.client_ref(lot, 1)
    Job.objects.create(key=f"rfq:{reference}", kind="rfq", entrustment=entrustment, claimed_by="dead:1",
                       claimed_until=timezone.now() - timezone.timedelta(seconds=1), attempts=1)
    assert operations.run_inquiry(lot.pk) == LotState.AWARD_PENDING
    assert lot.rounds.count() == 1 and lot.rounds.get().quotes.count() >= 2
    assert Job.objects.get(key=f"rfq:{reference}").state == "done"


@pytest.mark.django_db
def test_a_round_a_person_opened_by_hand_is_left_to_them(world, live):
    _flow, entrustment, lot = _at_platform(world, live)
    services.inquiry_open(actor=world.agency_officer, lot=lot)
    assert operations.run_inquiry(lot.pk) == "round opened by a person"
    lot.refresh_from_db()
    assert lot.state == LotState.INQUIRY and not lot.rounds.get().quotes.exists()


@pytest.mark.django_db
def test_a_deposit_instructed_but_never_broadcast_is_sent_by_the_watcher(world, live, monkeypatch):
    """A worker killed inside custody's call leaves the entrustment transferring with no txid: the watcher,
    which is what the dispatcher sends in that state, finishes the broadcast under the same reference."""
    _flow, entrustment = _reserved(world, live)

    class Dies(Exception):
        pass

    def dying(*args, **kwargs):
        raise Dies

    from counterparties import custody

    with monkeypatch.context() as patched:
        patched.setattr(custody.HttpCustody, "transfer", dying)
        with pytest.raises(Dies):
            poll(operations.deposit, entrustment.pk, lambda: False, world)
    assert state(entrustment) == "transferring"
    assert not CoinTransfer.objects.filter(entrustment=entrustment, kind=TransferKind.TO_PLATFORM).exclude(
        txid="").exists()
    operations.watch_deposits(entrustment.pk)
    assert CoinTransfer.objects.filter(entrustment=entrustment, kind=TransferKind.TO_PLATFORM).exclude(
        txid="").count() == 2
    poll(operations.watch_deposits, entrustment.pk, lambda: state(entrustment) == "at_platform", world)


@pytest.mark.django_db
def test_a_quote_that_expired_before_the_accept_sends_the_lot_to_a_new_round_once_a_person_has_looked(world, live):
    from counterparties.exceptions import resolve_exception

    _flow, entrustment, lot = _at_platform(world, live)
    live.exchange.set_quote_ttl(3)
    try:
        assert operations.run_inquiry(lot.pk) == LotState.AWARD_PENDING
        services.award_approve(actor=world.bce_approver, lot=lot)
        time.sleep(3.5)  # the award was approved after its quote expired
        assert operations.execute(lot.pk) == "not carried out"
    finally:
        live.exchange.set_quote_ttl(10)
    lot.refresh_from_db()
    assert lot.state == LotState.RESERVE_SET and lot.failed_rounds == 0
    exception = OperationalException.objects.get(entrustment=entrustment, kind=ExceptionKind.EXECUTION)
    assert operations.client_ref(lot, 1) in exception.message
    assert operations.blocked(entrustment)  # the next round waits for a person
    resolve_exception(actor=world.agency_officer, exception=exception, resolution="Approved too late; ask again.")
    assert operations.run_inquiry(lot.pk) == LotState.AWARD_PENDING
    services.award_approve(actor=world.bce_approver, lot=lot)
    assert operations.execute(lot.pk) == "executed"
    prefix = operations.client_ref(lot, 1)[:-1]  # "...-L<n>-R"
    executed = [e.client_id for e in live.exchange.executions("hashkey") if e.client_id.startswith(prefix)]
    assert executed == [operations.client_ref(lot, 2)]  # the expired round's order id was never executed


@pytest.mark.django_db
@pytest.mark.parametrize("filled", [0, 1], ids=["nothing filled", "half filled"])
def test_a_final_order_is_judged_by_its_fills_not_by_the_status_the_venue_gives_it(world, live, monkeypatch, filled):
    """A venue may end an order "failed" or "cancelled" after filling part of it: what it filled is sold and is
    recorded (a remainder lot for the rest); only an order with no fill at all sends the lot to a new round."""
    from django.utils import timezone

    from counterparties.exchanges.base import Fill, Order, OrderStatus
    from counterparties.exchanges.hashkey import HashKeyExchange

    _flow, entrustment, lot = _at_platform(world, live)
    assert operations.run_inquiry(lot.pk) == LotState.AWARD_PENDING
    services.award_approve(actor=world.bce_approver, lot=lot)
    lot.refresh_from_db()
    half, price = int(lot.quantity) // 2, lot.current_round().awarded_quote.price
    gross = (Decimal(half) / lot.asset.unit * price).quantize(Decimal("0.01"))
    fills = (Fill(trade_id="T-half", quantity=half, price=price, gross=gross, fee=Decimal("0.01"),
                  fee_currency=lot.quote_currency, executed_at=timezone.now()),) if filled else ()

    def ended(self, quote_id, client_order_id):
        return Order(party="hashkey", client_order_id=client_order_id, status=OrderStatus.FAILED,
                     requested_base_units=int(lot.quantity), filled_base_units=half if filled else 0,
                     avg_price=price if filled else None, fees=Decimal("0.01") if filled else Decimal(0),
                     fee_currency=lot.quote_currency, fills=fills, final=True)

    monkeypatch.setattr(HashKeyExchange, "accept_quote", ended)
    outcome = operations.execute(lot.pk)
    lot.refresh_from_db()
    if filled:
        assert outcome == "executed" and lot.state == LotState.PARTIALLY_EXECUTED
        assert lot.fills.get().quantity == half and lot.remainders.get().quantity == lot.quantity - half
    else:
        assert outcome == "not carried out" and lot.state == LotState.RESERVE_SET and not lot.fills.exists()
