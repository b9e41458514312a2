"""Celery tasks of the workers: thin — take ids, call `operations`, retry transient errors with a bound.

``dispatch`` runs on the beat schedule (every few seconds, see the migration that schedules it) and enqueues
the step each entrustment or lot is waiting for; the step functions re-check the state and claim their work,
so a duplicate, late or redelivered task does nothing twice. ``acks_late`` (set for every task in settings)
means a worker killed mid-task leaves the message to be delivered again after the broker's visibility timeout.
"""

from __future__ import annotations

import logging

from celery import shared_task

from cases.models import Entrustment, EntrustmentState, Lot, LotState
from counterparties import bank_tasks, operations
from counterparties.automation import MAX_RETRIES, backoff
from counterparties.errors import TransientError
from counterparties.exceptions import record_exception
from counterparties.models import ExceptionKind

log = logging.getLogger(__name__)

ENTRUSTMENT_STEPS = {
    EntrustmentState.BONDED: "counterparties.tasks.detect",
    EntrustmentState.DETECTED: "counterparties.tasks.hand_over",
    EntrustmentState.RESERVE_SET: "counterparties.tasks.deposit",
    EntrustmentState.TRANSFERRING: "counterparties.tasks.watch_deposits",
}


def _step(task, fn, object_id: int, entrustment_id: int | None = None):
    """Run one step; a transient failure is retried with backoff, and recorded as an outage once exhausted."""
    try:
        return fn(object_id)
    except TransientError as exc:
        if task.request.retries >= MAX_RETRIES:
            entrustment = Entrustment.objects.filter(pk=entrustment_id or object_id).first()
            record_exception(entrustment=entrustment, kind=ExceptionKind.OUTAGE,
                             key=f"outage:{exc.party}:{fn.__name__}:{object_id}", party=exc.party, code=exc.code,
                             message=str(exc))
            log.warning("%s(%s) gave up after %s retries: %s", fn.__name__, object_id, MAX_RETRIES, exc)
            return "outage recorded"
        raise task.retry(countdown=backoff(task.request.retries, exc.retry_after), exc=exc)


@shared_task(bind=True, acks_late=True, max_retries=MAX_RETRIES)
def detect(self, entrustment_id: int):
    return _step(self, operations.detect, entrustment_id)


@shared_task(bind=True, acks_late=True, max_retries=MAX_RETRIES)
def hand_over(self, entrustment_id: int):
    return _step(self, operations.hand_over, entrustment_id)


@shared_task(bind=True, acks_late=True, max_retries=MAX_RETRIES)
def deposit(self, entrustment_id: int):
    return _step(self, operations.deposit, entrustment_id)


@shared_task(bind=True, acks_late=True, max_retries=MAX_RETRIES)
def watch_deposits(self, entrustment_id: int):
    return _step(self, operations.watch_deposits, entrustment_id)


@shared_task(bind=True, acks_late=True, max_retries=MAX_RETRIES)
def run_inquiry(self, lot_id: int):
    lot = Lot.objects.only("entrustment_id").get(pk=lot_id)
    return _step(self, operations.run_inquiry, lot_id, lot.entrustment_id)


@shared_task(bind=True, acks_late=True, max_retries=MAX_RETRIES)
def execute(self, lot_id: int):
    lot = Lot.objects.only("entrustment_id").get(pk=lot_id)
    return _step(self, operations.execute, lot_id, lot.entrustment_id)


@shared_task(bind=True, acks_late=True, max_retries=MAX_RETRIES)
def remark_bonds(self) -> int:
    """Bonds marked to the market; a bond under the ratio raises a top-up call on its entrustment."""
    try:
        return operations.remark_bonds()
    except TransientError as exc:
        raise self.retry(countdown=backoff(self.request.retries, exc.retry_after), exc=exc)


@shared_task(acks_late=True)
def recheck_transfers() -> int:
    return operations.recheck_transfers()


@shared_task(acks_late=True)
def dispatch() -> int:
    """Enqueue the step every automated entrustment and lot is waiting for; returns how many were sent."""
    from celery import current_app

    sent = 0
    for entrustment in Entrustment.objects.filter(state__in=list(ENTRUSTMENT_STEPS)).select_related("agency"):
        if operations.automated(entrustment) and not operations.blocked(entrustment):
            current_app.send_task(ENTRUSTMENT_STEPS[entrustment.state], args=[entrustment.pk])
            sent += 1
    # An open inquiry is dispatched too: a round whose worker died is resumed by run_inquiry.
    lots = Lot.objects.filter(state__in=[LotState.RESERVE_SET, LotState.INQUIRY, LotState.EXECUTING],
                              entrustment__state__in=[EntrustmentState.AT_PLATFORM, EntrustmentState.SELLING]) \
        .select_related("entrustment__agency")
    for lot in lots:
        if operations.automated(lot.entrustment) and not operations.blocked(lot.entrustment):
            name = "execute" if lot.state == LotState.EXECUTING else "run_inquiry"
            current_app.send_task(f"counterparties.tasks.{name}", args=[lot.pk])
            sent += 1
    # The bank side: FX orders and treasury payments that are due (statements are polled on their own).
    sent += bank_tasks.dispatch_bank()
    return sent
