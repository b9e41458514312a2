"""Faults with real workers: a worker killed mid-order, a platform that times out, messages delivered twice.

The same lifecycle as the end-to-end test, made hostile. What must hold: the sale completes, and nothing is
done twice at a counterparty — one custody transfer per reference, one execution per client order id.
"""

from __future__ import annotations

import time

import pytest
from django.db import connection

from cases import services
from cases.models import Asset, Lot, LotState
from counterparties.models import Job, OperationalException
from emulators.world import start_world

from .test_e2e_counterparties import LiveFlow, Workers, approving_whitelist, sold, state_of

pytestmark = [pytest.mark.faults, pytest.mark.e2e]


@pytest.fixture(scope="module")
def outside():
    world = start_world(block_time=0.3, chains=("litecoin", "ethereum"))
    yield world
    world.stop()


@pytest.fixture
def configured(outside, monkeypatch):
    from django.test import override_settings

    for name, value in outside.settings().items():
        monkeypatch.setenv(name, value)
    # A short lease, so that a killed worker's job is taken over within seconds rather than minutes.
    monkeypatch.setenv("PORTAL_JOB_LEASE_SECONDS", "4")
    with override_settings(CHAIN_NETWORK="regtest"):
        yield outside


def _to_award(world, outside, workers):
    from .factories import ltc

    ltc()
    world.agency.offshore_account_no = outside.offshore_account
    world.agency.save()
    Asset.objects.filter(symbol__in=["ETH", "LTC"]).update(confirmations_required=3)
    flow = LiveFlow(world, outside)
    entrustment = flow.to("bonded")
    workers.until(approving_whitelist(world, lambda: state_of(entrustment) == "in_custody"),
                  what="detection and hand-over")
    ltc_asset, eth = flow.asset("LTC"), flow.asset("ETH")
    services.lots_plan(actor=world.bce_officer, entrustment=entrustment,
                       fee_allowances={ltc_asset.pk: 1_000_000, eth.pk: 10**16})
    for lot in Lot.objects.filter(entrustment=entrustment):
        services.reserve_propose(actor=world.bce_officer, lot=lot, price="10",
                                 inputs={"reference_prices": ["10", "10", "10"], "source": "test floor"})
        services.reserve_approve(actor=world.bce_approver, lot=lot)
    workers.until(approving_whitelist(world, lambda: not Lot.objects.filter(entrustment=entrustment).exclude(
        state=LotState.AWARD_PENDING).exists()), what="deposit and inquiry")
    return entrustment


def _nothing_twice(outside, entrustment):
    executions = [e.client_id for e in outside.exchange.executions("hashkey")
                  if e.client_id.startswith(entrustment.number)]
    assert len(executions) == len(set(executions)) == Lot.objects.filter(entrustment=entrustment).count()
    references = [ref for ref in outside.custody.transfers if ref.startswith(entrustment.number)]
    assert len(references) == len(set(references))


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_while_accepting_a_quote_neither_loses_nor_repeats_the_order(world, configured):
    assert connection.vendor == "postgresql"
    outside = configured
    workers = Workers()
    workers.start()
    # Quotes that outlive the kill and the lease, so that the successor may still accept (a venue's real TTL
    # is shorter: then the successor finds the order by its id, or the lot stops with a recorded exception).
    outside.exchange.set_quote_ttl(120)
    try:
        entrustment = _to_award(world, outside, workers)
        # Every answer of the platform now takes 3 s: the worker is inside accept_quote when it dies.
        outside.exchange.set_latency(3.0)
        for lot in Lot.objects.filter(entrustment=entrustment):
            services.award_approve(actor=world.bce_approver, lot=lot)
        deadline = time.monotonic() + 60
        while not Job.objects.filter(key__startswith=f"order:{entrustment.number}",
                                     claimed_until__isnull=False).exists():
            workers.client.send_task("counterparties.tasks.dispatch", queue=workers.queue)
            assert time.monotonic() < deadline, workers.log()[-3000:]
            time.sleep(0.2)
        time.sleep(1.0)
        workers.kill()  # SIGKILL: no cleanup, the lease and the message are left behind
        outside.exchange.set_latency(0.0)
        workers.start()
        workers.until(lambda: sold(entrustment), what="execution after the kill")
    finally:
        log = workers.stop()
    assert not OperationalException.objects.filter(entrustment=entrustment).exists(), log
    _nothing_twice(outside, entrustment)


@pytest.mark.django_db(transaction=True)
def test_a_platform_timing_out_on_the_accept_is_resolved_by_the_order_id_not_by_a_second_order(world, configured):
    outside = configured
    workers = Workers()
    workers.start()
    try:
        entrustment = _to_award(world, outside, workers)
        # The venue executes, then the connection drops (indeterminate), twice; then it is down for a while.
        outside.exchange.fail_next("indeterminate", venue="hashkey", count=2)
        outside.exchange.fail_next("server_error", venue="hashkey", count=3)
        for lot in Lot.objects.filter(entrustment=entrustment):
            services.award_approve(actor=world.bce_approver, lot=lot)
        # Duplicate deliveries on top: every dispatch round sends each lot's task again.
        for lot in Lot.objects.filter(entrustment=entrustment):
            for _ in range(3):
                workers.client.send_task("counterparties.tasks.execute", args=[lot.pk], queue=workers.queue)
        workers.until(lambda: sold(entrustment), what="execution through faults")
    finally:
        log = workers.stop()
    assert not OperationalException.objects.filter(entrustment=entrustment).exclude(kind="outage").exists(), log
    _nothing_twice(outside, entrustment)
