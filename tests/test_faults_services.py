"""The broker and the database restarted in the middle of a disposal: the lifecycle completes, once.

Redis keeps nothing on disk here, so its restart loses every queued message: what must survive is in
PostgreSQL (states, jobs and their leases), and beat's next dispatch re-sends what is due. PostgreSQL's
restart cuts every connection, the worker's included: a task that fails on it is simply sent again.
Needs to run as root (it restarts the machine's services, as CI does); it fails otherwise — it does not skip.
"""

from __future__ import annotations

import glob
import os
import subprocess
import time

import pytest
from django.db import connection, connections

from cases import services
from cases.models import Lot, LotState
from counterparties.models import OperationalException
from emulators.world import start_world

from .test_e2e_counterparties import LiveFlow, Workers, approving_whitelist, plan_and_reserve, ready_agency, state_of

pytestmark = [pytest.mark.faults, pytest.mark.e2e]


def restart_redis():
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
    subprocess.run(["redis-cli", "-u", url, "shutdown", "nosave"], capture_output=True, timeout=30)
    subprocess.run(["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", "6379",
                    "--save", "", "--appendonly", "no", "--dir", "/tmp"], check=True, timeout=30)
    _wait(lambda: subprocess.run(["redis-cli", "-u", url, "ping"], capture_output=True, text=True)
          .stdout.strip() == "PONG", "Redis back")


def restart_postgresql():
    version = os.path.basename(sorted(glob.glob("/etc/postgresql/*"))[-1])
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"], check=True,
                   timeout=120)
    connections.close_all()
    _wait(lambda: subprocess.run(["pg_isready", "-h", "127.0.0.1"], capture_output=True).returncode == 0,
          "PostgreSQL back")


def _wait(predicate, what, timeout=60):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def outside():
    world = start_world(block_time=0.3, chains=("litecoin", "ethereum"))
    yield world
    world.stop()


@pytest.mark.django_db(transaction=True)
def test_redis_and_postgresql_restarted_mid_disposal_it_completes_with_nothing_twice(world, outside, monkeypatch):
    from django.test import override_settings

    from settlements import services as money

    assert connection.vendor == "postgresql"
    for name, value in outside.settings().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PORTAL_JOB_LEASE_SECONDS", "4")
    with override_settings(CHAIN_NETWORK="regtest"):
        ready_agency(world, outside)
        flow = LiveFlow(world, outside)
        entrustment = flow.to("bonded")
        workers = Workers()
        workers.start()
        try:
            workers.until(approving_whitelist(world, lambda: state_of(entrustment) == "in_custody"),
                          what="detection and hand-over")
            restart_redis()  # every queued message is gone
            plan_and_reserve(world, flow, entrustment)
            workers.until(approving_whitelist(world, lambda: not Lot.objects.filter(entrustment=entrustment).exclude(
                state=LotState.AWARD_PENDING).exists()), what="deposit and inquiry after the Redis restart")
            for lot in Lot.objects.filter(entrustment=entrustment):
                services.award_approve(actor=world.bce_approver, lot=lot)
            restart_postgresql()  # the worker's connection and ours are cut

            def settle():
                if state_of(entrustment) == "proceeds_received" and hasattr(money, "fx_application_approve") \
                        and not money.fx_application_approved(entrustment):
                    money.fx_application_approve(actor=world.agency_approver, entrustment=entrustment)
                return state_of(entrustment) == "credited"

            workers.until(settle, what="sale, settlement and FX after the PostgreSQL restart", timeout=180)
            money.remittance_prepare(actor=world.shunyi_officer, entrustment=entrustment,
                                     payment_code="11010000000000000002")
            money.remittance_approve(actor=world.shunyi_approver, entrustment=entrustment, treasury_receipt="")
            workers.until(lambda: state_of(entrustment) == "remitted", what="treasury payment", timeout=90)
        finally:
            log = workers.stop()
    assert not OperationalException.objects.filter(entrustment=entrustment).exclude(kind="outage").exists(), log
    executions = [e.client_id for e in outside.exchange.executions("hashkey")
                  if e.client_id.startswith(entrustment.number)]
    assert len(executions) == len(set(executions)) == Lot.objects.filter(entrustment=entrustment).count()
    references = [ref for ref in outside.custody.transfers if ref.startswith(entrustment.number)]
    assert len(references) == len(set(references))
