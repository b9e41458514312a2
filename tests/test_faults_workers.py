"""Faults with real workers: a worker killed mid-order, a platform that times out, messages delivered twice.

The same lifecycle as the end-to-end test, made hostile. What must hold: the sale completes, and nothing is
done twice at a counterparty — one custody transfer per reference, one execution per client order id.
"""

from __future__ import annotations

import time

import pytest
from django.db import connection

from cases import services
from cases.models import CoinTransfer, Entrustment, Lot, LotState
from counterparties.models import Job, OperationalException
from emulators.world import start_world

from .test_e2e_counterparties import (
    LiveFlow,
    Workers,
    approving_fx,
    approving_whitelist,
    plan_and_reserve,
    ready_agency,
    sold,
    state_of,
)

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
    ready_agency(world, outside)
    flow = LiveFlow(world, outside)
    entrustment = flow.to("bonded")
    workers.until(approving_whitelist(world, lambda: state_of(entrustment) == "in_custody"),
                  what="detection and hand-over")
    plan_and_reserve(world, flow, entrustment)
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


# ------------------------------------------------------------------------------------- a kill in every task kind

# The outside parties' URLs the portal is configured with, and the party name the proxy rules see.
PARTIES = {"PORTAL_CHAIN_LITECOIN_URL": "litecoin", "PORTAL_CHAIN_ETHEREUM_URL": "ethereum",
           "PORTAL_CUSTODY_URL": "custody", "PORTAL_PLATFORM_HASHKEY_URL": "hashkey", "PORTAL_BANK_URL": "bank"}


@pytest.fixture
def proxied(outside, monkeypatch):
    """The world behind holding proxies (tests/holding_proxy.py), with a short job lease."""
    from django.test import override_settings

    from .holding_proxy import Proxies

    proxies = Proxies(outside.settings(), PARTIES)
    for name, value in proxies.settings.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PORTAL_JOB_LEASE_SECONDS", "4")
    with override_settings(CHAIN_NETWORK="regtest"):
        yield outside, proxies
    proxies.stop()


def _is(party, method=None, path="", body=b""):
    """A proxy rule: a request to `party` (with `method`, a path containing `path`, a body containing `body`)."""
    return lambda r: (r.party == party and (method is None or r.method == method) and path in r.path
                      and body in r.body)


class Killer:
    """SIGKILLs the worker while it is blocked inside a chosen call, lets the call reach its party (which acts;
    the answer is lost), and starts a successor. Keeps what was killed where, for the assertions."""

    def __init__(self, workers, proxies):
        self.workers, self.proxies, self.killed = workers, proxies, {}

    def inside(self, task: str, rule, people=lambda predicate: predicate, before=lambda: None):
        """Hold the next call matching `rule`; `people` wraps the wait with what people do meanwhile (approvals),
        `before()` sends what beat would send (a task off the test's dispatch loop)."""
        self.proxies.hold(rule)
        before()
        self.workers.until(people(lambda: self.proxies.held() is not None), what=f"the worker inside {task}")
        self.workers.kill()  # SIGKILL inside the call: no cleanup; the lease, the message and the call remain
        self.proxies.release()
        self.killed[task] = len(self.proxies.seen())  # what passed before the successor
        self.workers.start()

    def asked_again(self, task: str, rule) -> bool:
        """The successor made a call matching `rule` after the kill in `task`."""
        return any(rule(r) for r in self.proxies.seen()[self.killed[task]:])


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_inside_each_kind_of_task_leaves_nothing_lost_or_done_twice(world, proxied):
    """One disposal, bond to remittance, with the worker SIGKILLed once inside every task that calls out:
    detect, hand_over, remark_bonds, deposit, watch_deposits, run_inquiry, execute, poll_bank_statements,
    request_fx, pay_treasury, recheck_transfers. (``dispatch`` calls no one and writes nothing: killing it is a
    beat tick that did not happen.) A successor finds what its predecessor left — a lease it waits out, a state
    committed before the call — and resumes under the same key; the disposal completes, reconciles, and every
    party acted once."""
    assert connection.vendor == "postgresql"
    outside, proxies = proxied
    from settlements import services as money

    ready_agency(world, outside)
    outside.exchange.set_quote_ttl(120)  # quotes outlive a kill and a lease
    treasury_before = outside.bank.balance(outside.treasury_account)
    workers = Workers()
    killer = Killer(workers, proxies)
    workers.start()
    try:
        flow = LiveFlow(world, outside)
        entrustment = flow.to("bonded")
        whitelisting = lambda predicate: approving_whitelist(world, predicate)  # noqa: E731
        chain = lambda r: r.party in ("litecoin", "ethereum")  # noqa: E731

        killer.inside("detect", chain)
        killer.inside("hand_over", _is("custody", "POST", "/v1/transfers", b"-C"), people=whitelisting)
        workers.until(whitelisting(lambda: state_of(entrustment) == "in_custody"), what="hand-over after kills")

        def send(task):
            return lambda: workers.client.send_task(task, queue=workers.queue)

        marking = _is("hashkey", "POST", "create-rfq")
        killer.inside("remark_bonds", lambda r: marking(r) and (b"MARK-" in r.body or "MARK-" in r.path),
                      before=send("counterparties.tasks.remark_bonds"))
        send("counterparties.tasks.remark_bonds")()
        declined = lambda r: r.party == "hashkey" and "decline" in r.path.lower()  # noqa: E731
        workers.until(lambda: killer.asked_again("remark_bonds", declined), what="bonds marked after the kill")

        plan_and_reserve(world, flow, entrustment)
        killer.inside("deposit", _is("custody", "POST", "/v1/transfers"), people=whitelisting)
        killer.inside("watch_deposits", _is("hashkey", "GET", "depositOrders"), people=whitelisting)
        killer.inside("run_inquiry", lambda r: marking(r) and b"MARK-" not in r.body and "MARK-" not in r.path)
        workers.until(lambda: not Lot.objects.filter(entrustment=entrustment).exclude(
            state=LotState.AWARD_PENDING).exists(), what="inquiries after the kills")

        for lot in Lot.objects.filter(entrustment=entrustment):
            services.award_approve(actor=world.bce_approver, lot=lot)
        killer.inside("execute", _is("hashkey", "POST", "accept-quote"))
        workers.until(lambda: sold(entrustment), what="execution after the kill")
        fx = lambda predicate: approving_fx(world, entrustment, predicate)  # noqa: E731
        killer.inside("request_fx", _is("bank", "POST", "/payments"), people=fx)
        # The FX order's bookings arrive as new statements: the worker dies fetching them.
        killer.inside("poll_bank_statements", _is("bank", "GET", "/statements/"))
        workers.until(fx(lambda: state_of(entrustment) == "credited"), what="FX and credit after the kills",
                      timeout=90)

        money.remittance_prepare(actor=world.shunyi_officer, entrustment=entrustment,
                                 payment_code="11010000000000000001")
        money.remittance_approve(actor=world.shunyi_approver, entrustment=entrustment, treasury_receipt="")
        killer.inside("pay_treasury", _is("bank", "POST", "/payments"))
        workers.until(lambda: state_of(entrustment) == "remitted", what="treasury payment after the kill",
                      timeout=90)

        killer.inside("recheck_transfers", chain, before=send("counterparties.tasks.recheck_transfers"))
        send("counterparties.tasks.recheck_transfers")()
        workers.until(lambda: killer.asked_again("recheck_transfers", chain), what="re-check after the kill")
    finally:
        log = workers.stop()

    assert set(killer.killed) == {"detect", "hand_over", "remark_bonds", "deposit", "watch_deposits", "run_inquiry",
                                  "execute", "poll_bank_statements", "request_fx", "pay_treasury",
                                  "recheck_transfers"}
    assert not OperationalException.objects.filter(entrustment=entrustment).exists(), log
    from cases.selectors import reconciliation
    from ledger import invariants

    entrustment = Entrustment.objects.get(pk=entrustment.pk)
    assert not reconciliation(entrustment).problems
    invariants.check(entrustment)
    _nothing_twice(outside, entrustment)
    # Custody moved each coin once: every transfer the portal recorded has its own reference, custody knows
    # each under exactly the request first made, and no request was refused as a conflicting reuse.
    transfers = CoinTransfer.objects.filter(entrustment=entrustment)
    assert sorted(outside.custody.transfers[t.reference]["answer"]["txid"] for t in transfers) == \
        sorted(t.txid for t in transfers)
    assert transfers.count() == len({t.reference for t in transfers}) == 4  # 2 hand-overs + 2 deposits
    assert not [r for r in proxies.seen("custody") if r.status == 409], "a reference reused for another transfer"
    # The bank: no order under a second MsgId (a retry under a new id would pay twice), and the treasury
    # received the remittance exactly once.
    currencies = sorted(set(entrustment.offshore_receipts.values_list("currency", flat=True)))
    assert sorted(m for m in outside.bank.orders if m.startswith(entrustment.number)) == sorted(
        [f"{entrustment.number}-FX-{c}" for c in currencies] + [f"{entrustment.number}-TR"])
    remitted = entrustment.remittance.amount_cny
    assert outside.bank.balance(outside.treasury_account) - treasury_before == remitted
