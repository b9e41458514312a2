"""Two people acting on one entrustment at the same moment: exactly one wins.

Runs on PostgreSQL with real threads and real transactions (row locks), not mocks.
"""

import threading

import pytest
from django.db import connection, connections

from cases import services
from cases.models import Event, EventType, Lot
from cases.workflow import DisposalError

pytestmark = [pytest.mark.concurrency, pytest.mark.django_db(transaction=True)]


def race(n, action):
    """Run `action()` in n threads released together; return (successes, refusals, other errors)."""
    barrier = threading.Barrier(n)
    results = []

    def worker():
        try:
            barrier.wait()
            action()
            results.append("ok")
        except DisposalError as exc:
            results.append(("refused", exc.message))
        except Exception as exc:  # noqa: BLE001 - any other error is a test failure, reported below
            results.append(("error", repr(exc)))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def test_it_runs_on_postgresql():
    assert connection.vendor == "postgresql", "concurrency is proven on PostgreSQL; set DATABASE_URL"


def test_two_concurrent_accept_and_refuse_cannot_both_win(world, flow):
    entrustment = flow.to("submitted")
    actions = [
        lambda: services.entrustment_accept(actor=world.bce_approver, entrustment=entrustment),
        lambda: services.entrustment_refuse(actor=world.bce_approver_2, entrustment=entrustment, reason="late"),
    ]
    counter = iter(range(2))
    results = race(2, lambda: actions[next(counter)]())
    assert results.count("ok") == 1, results
    assert not [r for r in results if r[0] == "error"], results
    entrustment.refresh_from_db()
    assert entrustment.state in ("accepted", "refused")
    transitions = Event.objects.filter(entrustment=entrustment, type=EventType.TRANSITION, from_state="submitted")
    assert transitions.count() == 1
    assert entrustment.history.filter(state__in=["accepted", "refused"]).count() == 1


def test_many_concurrent_award_approvals_approve_once(world, flow):
    entrustment = flow.to("selling")
    lot = Lot.objects.filter(entrustment=entrustment).order_by("sequence").first()
    reserve = lot.current_reserve().price
    flow.quote(lot, world.osl, reserve + 10, "q1")
    flow.quote(lot, world.hashkey, reserve + 5, "q2")
    services.inquiry_close(actor=world.agency_officer, lot=lot)
    approvers = [world.bce_approver, world.bce_approver_2] * 5
    counter = iter(range(len(approvers)))
    lock = threading.Lock()

    def approve():
        with lock:
            who = approvers[next(counter)]
        services.award_approve(actor=who, lot=lot)

    results = race(len(approvers), approve)
    assert results.count("ok") == 1, results
    assert not [r for r in results if r[0] == "error"], results
    lot.refresh_from_db()
    assert lot.state == "executing"
    assert Event.objects.filter(type=EventType.LOT_TRANSITION, to_state="executing").count() == 1


def test_fifty_people_approving_one_award_give_one_transition_and_fifty_workers_one_order(world, flow, monkeypatch):
    """50 BCE approvers press "approve" on the same award at once; then 50 workers pick up the execution at once.

    Exactly one transition, and exactly one order at the platform (the emulator over loopback, through the
    real OSL adapter): the row lock decides the first race, the job lease and the client order id the second.
    """
    from agencies.models import Membership, Role
    from counterparties import operations
    from counterparties.models import Job
    from emulators.custody import CustodyEmulator
    from emulators.exchange import start_exchange_emulator

    from .factories import UserFactory

    exchange_url, exchange = start_exchange_emulator()
    custody = CustodyEmulator({})
    custody.start()
    creds = exchange.credentials["osl"]
    for name, value in {"PORTAL_PLATFORM_OSL_KIND": "osl", "PORTAL_PLATFORM_OSL_URL": exchange.osl_url,
                        "PORTAL_PLATFORM_OSL_API_KEY": creds.api_key, "PORTAL_PLATFORM_OSL_API_SECRET": creds.secret,
                        "PORTAL_PLATFORM_OSL_PASSPHRASE": creds.passphrase, "PORTAL_CUSTODY_URL": custody.url,
                        "PORTAL_CUSTODY_TOKEN": custody.token}.items():
        monkeypatch.setenv(name, value)
    try:
        entrustment = flow.to("at_platform")
        # OSL deals as one dealer (one quote per request): one quote is enough for this round.
        entrustment.policy.min_quotes = 1
        entrustment.policy.save()
        lot = Lot.objects.filter(entrustment=entrustment).order_by("sequence").first()
        assert operations.run_inquiry(lot.pk) == "award_pending"
        approvers = []
        for i in range(50):
            user = UserFactory(username=f"bce_approver_c{i}")
            Membership.objects.create(user=user, organisation=world.bce, role=Role.APPROVER)
            approvers.append(user)
        counter = iter(range(50))
        lock = threading.Lock()

        def approve():
            with lock:
                who = approvers[next(counter)]
            services.award_approve(actor=who, lot=lot)

        results = race(50, approve)
        assert results.count("ok") == 1, results
        assert not [r for r in results if r[0] == "error"], results
        assert Event.objects.filter(type=EventType.LOT_TRANSITION, to_state="executing").count() == 1

        outcomes = []
        results = race(50, lambda: outcomes.append(operations.execute(lot.pk)))
        assert not [r for r in results if r[0] == "error"], results
        lot.refresh_from_db()
        assert lot.state in ("executed", "partially_executed")
        assert outcomes.count("executed") == 1, outcomes
        orders = [e for e in exchange.executions("osl") if e.client_id.startswith(entrustment.number)]
        assert len(orders) == 1
        assert lot.fills.count() == len(orders[0].fills)
        assert Job.objects.get(key__startswith=f"order:{entrustment.number}").attempts >= 1
    finally:
        exchange.stop()
        custody.stop()
