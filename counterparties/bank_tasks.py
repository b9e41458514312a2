"""Celery tasks of the bank side: thin — take ids, call `settling`, retry transient errors with a bound.

``poll_bank_statements`` belongs on the beat schedule (every minute or so); ``request_fx`` and ``pay_treasury``
are enqueued by the state-driven dispatcher (``counterparties.tasks.dispatch`` calls :func:`dispatch_bank`).
Each step re-checks the state and claims its work, so a duplicate, late or redelivered task does nothing twice.
"""

from __future__ import annotations

import logging

from celery import shared_task

from cases.models import Entrustment
from counterparties import settling
from counterparties.automation import MAX_RETRIES, backoff
from counterparties.banks.registry import bank_for
from counterparties.errors import TransientError
from counterparties.exceptions import open_exceptions, record_exception
from counterparties.models import ExceptionKind

log = logging.getLogger(__name__)


def _step(task, fn, *args, entrustment_id: int | None = None):
    """Run one step; a transient failure is retried with backoff, and recorded as an outage once exhausted."""
    try:
        return fn(*args)
    except TransientError as exc:
        if task.request.retries >= MAX_RETRIES:
            entrustment = Entrustment.objects.filter(pk=entrustment_id).first() if entrustment_id else None
            record_exception(entrustment=entrustment, kind=ExceptionKind.OUTAGE,
                             key=f"outage:{exc.party}:{fn.__name__}:{entrustment_id or ''}", party=exc.party,
                             code=exc.code, message=str(exc))
            log.warning("%s(%s) gave up after %s retries: %s", fn.__name__, args, MAX_RETRIES, exc)
            return "outage recorded"
        raise task.retry(countdown=backoff(task.request.retries, exc.retry_after), exc=exc,
                         max_retries=MAX_RETRIES)


@shared_task(bind=True, acks_late=True, max_retries=MAX_RETRIES)
def poll_bank_statements(self):
    return _step(self, settling.poll_bank_statements)


@shared_task(bind=True, acks_late=True, max_retries=MAX_RETRIES)
def request_fx(self, entrustment_id: int):
    return _step(self, settling.request_fx, entrustment_id, entrustment_id=entrustment_id)


@shared_task(bind=True, acks_late=True, max_retries=MAX_RETRIES)
def pay_treasury(self, entrustment_id: int):
    return _step(self, settling.pay_treasury, entrustment_id, entrustment_id=entrustment_id)


def dispatch_bank() -> int:
    """Enqueue the FX orders and treasury payments that are due; returns how many were sent. Called by
    ``counterparties.tasks.dispatch``; an entrustment with an open exception waits for a person."""
    from celery import current_app

    if bank_for() is None:
        return 0
    fx_due, treasury_due = settling.due_entrustments()
    sent = 0
    for name, ids in (("request_fx", fx_due), ("pay_treasury", treasury_due)):
        for entrustment_id in ids:
            if open_exceptions(entrustment_id).exclude(kind=ExceptionKind.OUTAGE).exists():
                continue
            current_app.send_task(f"counterparties.bank_tasks.{name}", args=[entrustment_id])
            sent += 1
    return sent
