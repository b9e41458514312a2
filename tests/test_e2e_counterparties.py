"""The whole disposal with real workers: chains, custody, platform and bank emulators, Redis and PostgreSQL.

People give the approvals through the services (as the portal's forms do); everything else is done by a real
Celery worker process reaching the emulators through the real adapters over loopback: detection on-chain,
hand-over into custody with confirmations, deposit at the platform, RFQ round, execution, settlement into the
offshore account, FX, special-account credit and the treasury payment.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
import redis
from django.db import connection
from django.test import override_settings

from cases import services
from cases.models import Asset, CoinTransfer, Entrustment, Lot, LotState, TransferKind
from counterparties.models import CounterpartyMessage, OperationalException
from emulators.world import start_world

from .flow import Flow

pytestmark = [pytest.mark.e2e]
ROOT = Path(__file__).resolve().parent.parent
CELERY = [sys.executable, "-m", "celery", "-A", "portal", "worker", "--pool", "solo", "-l", "warning",
          "--without-heartbeat", "--without-gossip", "--without-mingle"]
# What beat sends on its schedule (counterparties/migrations/0002_worker_schedule.py).
BEAT = ("counterparties.tasks.dispatch", "counterparties.bank_tasks.poll_bank_statements")
LTC_SEIZED = 250_000_000  # 2.5 LTC
ETH_SEIZED = 10 * 10**18


@pytest.fixture(scope="module")
def outside():
    world = start_world(block_time=0.3, chains=("litecoin", "ethereum"))
    yield world
    world.stop()


@pytest.fixture
def configured(outside, monkeypatch):
    for name, value in outside.settings().items():
        monkeypatch.setenv(name, value)
    with override_settings(CHAIN_NETWORK="regtest"):
        yield outside


class LiveFlow(Flow):
    """The test lifecycle, with holdings at addresses that really hold the coins on the emulated chains."""

    def __init__(self, world, outside):
        super().__init__(world, holdings=(("LTC", "2.5"), ("ETH", "10")), case_number="顺公立字〔2026〕700号")
        self.addresses = {"LTC": outside.seize("litecoin", "LTC", LTC_SEIZED),
                          "ETH": outside.seize("ethereum", "ETH", ETH_SEIZED)}
        # The emulators outlive each test's database, and custody keys transfers by reference (the entrustment
        # number): start this database's numbering somewhere no earlier test of the module has been.
        import random

        from django.utils import timezone

        from cases.models import Sequence

        Sequence.objects.update_or_create(series="entrustment", year=timezone.localdate().year,
                                          defaults={"last": random.randint(100_000, 899_999)})

    def asset(self, symbol):
        return Asset.objects.get(symbol=symbol, chain={"LTC": "litecoin", "ETH": "ethereum"}[symbol])

    def _draft(self):
        from .factories import BASIS_DATE, SEIZED_AT

        w = self.w
        case = services.case_register(actor=w.shunyi_officer, bureau=w.shunyi, case_number=self.case_number,
                                      title="网络赌博案", seized_at=SEIZED_AT, seizure_decision_no="顺扣〔2026〕7号",
                                      custodian="涉案财物管理中心")
        services.case_record_legal_basis(actor=w.shunyi_officer, case=case, kind="confiscation",
                                         document_no="顺没〔2026〕7号", basis_date=BASIS_DATE, authority="顺义分局")
        holdings = [services.holding_register(actor=w.shunyi_officer, case=case, asset=self.asset(symbol),
                                              address=self.addresses[symbol], amount=amount, location="冷钱包")
                    for symbol, amount in self.holdings_spec]
        self.case = case
        self.entrustment = services.entrustment_create(actor=w.shunyi_officer, case=case, holdings=holdings,
                                                       bce=w.bce)


def ready_agency(world, outside, confirmations: int = 3):
    """The agency banks where the world settles its sales; few confirmations, so that a test does not wait for
    64 blocks (the rule is the same)."""
    from .factories import ltc

    ltc()
    world.agency.offshore_account_no = outside.offshore_account
    world.agency.save()
    Asset.objects.filter(symbol__in=["ETH", "LTC"]).update(confirmations_required=confirmations)


def plan_and_reserve(world, flow, entrustment, price: str = "10"):
    """BCE plans the lots (leaving room for the deposit's network fee) and sets every lot's reserve."""
    ltc, eth = flow.asset("LTC"), flow.asset("ETH")
    services.lots_plan(actor=world.bce_officer, entrustment=entrustment,
                       fee_allowances={ltc.pk: 1_000_000, eth.pk: 10**16})
    for lot in Lot.objects.filter(entrustment=entrustment):
        services.reserve_propose(actor=world.bce_officer, lot=lot, price=price,
                                 inputs={"reference_prices": [price] * 3, "source": "test floor"})
        services.reserve_approve(actor=world.bce_approver, lot=lot)


def _database_url():
    s = connection.settings_dict
    return f"postgres://{s['USER']}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


class Workers:
    """A real worker process on Redis with this run's own queue; the test plays beat by sending `dispatch`."""

    def __init__(self):
        url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
        redis.Redis.from_url(url).ping()  # no Redis: the test fails here, it does not skip
        self.queue = f"e2e-{uuid.uuid4().hex[:8]}"
        self.env = {**os.environ, "DATABASE_URL": _database_url(), "CELERY_BROKER_URL": url,
                    "CELERY_RESULT_BACKEND": url, "CELERY_TASK_DEFAULT_QUEUE": self.queue,
                    "PORTAL_CHAIN_NETWORK": "regtest"}
        from celery import Celery

        self.client = Celery("e2e-client", broker=url)  # the test plays beat: it only sends
        self.proc = None

    def start(self):
        import tempfile

        self.logfile = self.logfile if self.proc else tempfile.NamedTemporaryFile(prefix="worker-", suffix=".log")
        self.proc = subprocess.Popen(CELERY, cwd=ROOT, env=self.env, stdout=self.logfile, stderr=subprocess.STDOUT)

    def log(self) -> str:
        self.logfile.flush()
        return Path(self.logfile.name).read_text(errors="replace")

    def kill(self):
        self.proc.kill()
        self.proc.wait(timeout=20)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.log()

    def until(self, predicate, timeout=120, what=""):
        """Send beat's tasks every half second (faster than beat does) until `predicate()` holds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for task in BEAT:
                self.client.send_task(task, queue=self.queue)
            if predicate():
                return
            time.sleep(0.5)
        problems = list(OperationalException.objects.values_list("message", flat=True))
        raise AssertionError(f"timed out waiting for {what}; exceptions: {problems}\n{self.log()[-6000:]}")


def state_of(entrustment):
    return Entrustment.objects.get(pk=entrustment.pk).state


def sold(entrustment) -> bool:
    """Every lot executed. The bank's statements are polled alongside, so the proceeds may already be received
    by the time the test looks; FX waits there for its approval, so no later state is seen before that."""
    return state_of(entrustment) in ("sold", "proceeds_received")


def approving_whitelist(world, predicate):
    """BCE's approver approves what the agency's worker proposed for the whitelist, as a person would on the
    page, while waiting for `predicate`."""
    from cases import whitelist

    def check():
        for entry in whitelist.pending_for(world.agency):
            whitelist.whitelist_approve(actor=world.bce_approver, entry=entry)
        return predicate()

    return check


def approving_fx(world, entrustment, predicate):
    """The agency's approver approves the FX application, as a person would on the page, once the proceeds are
    received offshore (the worker orders the FX settlement only then), while waiting for `predicate`."""
    from settlements import services as money

    def check():
        current = Entrustment.objects.get(pk=entrustment.pk)
        if current.state == "proceeds_received" and not money.fx_application_approved(current):
            money.fx_application_approve(actor=world.agency_approver, entrustment=current)
        return predicate()

    return check


@pytest.mark.django_db(transaction=True)
def test_an_entrustment_moves_by_itself_from_bond_to_remittance(world, configured):
    assert connection.vendor == "postgresql"
    ready_agency(world, configured)
    flow = LiveFlow(world, configured)
    entrustment = flow.to("bonded")
    workers = Workers()
    workers.start()
    try:
        workers.until(approving_whitelist(world, lambda: state_of(entrustment) == "in_custody"),
                      what="detection, whitelisting and hand-over")
        plan_and_reserve(world, flow, entrustment)
        workers.until(approving_whitelist(world, lambda: not Lot.objects.filter(entrustment=entrustment).exclude(
            state=LotState.AWARD_PENDING).exists()), what="deposit and inquiry")
        for lot in Lot.objects.filter(entrustment=entrustment):
            services.award_approve(actor=world.bce_approver, lot=lot)
        workers.until(lambda: sold(entrustment), what="execution")
        # The platform settles into the offshore account; the bank's notifications drive FX and the credit.
        workers.until(approving_fx(world, entrustment, lambda: state_of(entrustment) == "credited"),
                      what="settlement, FX approval, FX and credit", timeout=90)
        from settlements import services as money

        money.remittance_prepare(actor=world.shunyi_officer, entrustment=entrustment,
                                 payment_code="11010000000000000001")
        money.remittance_approve(actor=world.shunyi_approver, entrustment=entrustment, treasury_receipt="")
        workers.until(lambda: state_of(entrustment) == "remitted", what="treasury payment", timeout=90)
    finally:
        log = workers.stop()
    assert not OperationalException.objects.filter(entrustment=entrustment).exists(), log
    # Every coin and every yuan reconciles, in the record and in the double-entry ledger.
    from cases.selectors import reconciliation
    from ledger import invariants

    assert not reconciliation(Entrustment.objects.get(pk=entrustment.pk)).problems
    invariants.check(Entrustment.objects.get(pk=entrustment.pk))
    # Exactly one execution per lot at the venue, and every message with the platform kept as evidence.
    executions = configured.exchange.executions("hashkey")
    numbers = [e.client_id for e in executions if e.client_id.startswith(entrustment.number)]
    assert sorted(numbers) == sorted(f"{entrustment.number}-L{lot.sequence}-R1"
                                     for lot in Lot.objects.filter(entrustment=entrustment))
    messages = CounterpartyMessage.objects.filter(entrustment=entrustment)
    assert messages.filter(party="hashkey").exists()
    assert all(m.sha256 and len(m.sha256) == 64 for m in messages)
    # What custody moved is what the chain shows: each hand-over landed in the vault.
    for transfer in CoinTransfer.objects.filter(entrustment=entrustment, kind=TransferKind.TO_CUSTODY):
        assert transfer.txid and transfer.amount > 0
    assert Decimal(0) < sum(lot.fills.count() for lot in Lot.objects.filter(entrustment=entrustment))
