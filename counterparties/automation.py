"""The plumbing every worker shares: who acts, claiming work, keeping the evidence, retrying.

Who acts. A worker acts for an organisation through that organisation's *service account*: a user that cannot
sign in (no usable password) with an officer membership, created by :func:`service_user`. So every step a
worker takes goes through the same service functions, permission checks, history rows and events as a
person's, and the record says "svc-<org>" did it.

Claiming. Outward work (a custody transfer, an accepted quote, a payment order) is a :class:`Job` keyed by the
idempotency key the counterparty also sees. :func:`claim` takes a lease on it with one conditional UPDATE, so
two workers (or a redelivered task) never run the same job at once; a worker killed mid-job lets the lease run
out and the next one resumes with the same key, which the counterparty treats as the same action.

Retrying. Only transient errors are retried, with bounded exponential backoff (:func:`backoff`); a permanent
error, or a transient one that outlasts the retries, becomes an exception on the entrustment.
"""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from datetime import datetime, timedelta
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from agencies.models import Membership, Role

from .models import CounterpartyMessage, Job, JobState

LEASE = timedelta(seconds=int(os.environ.get("PORTAL_JOB_LEASE_SECONDS", "120")))
MAX_RETRIES = int(os.environ.get("PORTAL_TASK_MAX_RETRIES", "8"))


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def service_user(organisation):
    """The organisation's service account (an officer that cannot sign in), created on first use."""
    User = get_user_model()
    user, created = User.objects.get_or_create(
        username=f"svc-{organisation.code}"[:150],
        defaults={"first_name": "Automation", "last_name": organisation.code, "is_active": True})
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    Membership.objects.get_or_create(user=user, organisation=organisation, role=Role.OFFICER,
                                     defaults={"is_active": True})
    return user


def is_service_user(user) -> bool:
    return bool(user and user.username.startswith("svc-") and not user.has_usable_password())


def job(key: str, kind: str, entrustment=None) -> Job:
    """The job for `key`, created pending the first time."""
    found, _ = Job.objects.get_or_create(key=key, defaults={"kind": kind, "entrustment": entrustment})
    return found


def claim(found: Job) -> bool:
    """Take the lease on a pending job; False when another worker holds it or it is finished."""
    now = timezone.now()
    taken = Job.objects.filter(
        Q(claimed_until__isnull=True) | Q(claimed_until__lt=now), pk=found.pk, state=JobState.PENDING,
    ).update(claimed_until=now + LEASE, claimed_by=worker_name(), attempts=found.attempts + 1)
    if taken:
        found.refresh_from_db()
    return bool(taken)


def remember(found: Job, **result) -> None:
    """Keep what the counterparty answered, before acting on it, so a successor can resume from it."""
    found.result = {**found.result, **result}
    Job.objects.filter(pk=found.pk).update(result=found.result, updated_at=timezone.now())


def finish(found: Job, *, state: str = JobState.DONE, error: str = "") -> None:
    Job.objects.filter(pk=found.pk).update(state=state, last_error=error[:2000], claimed_until=None,
                                           updated_at=timezone.now())


def release(found: Job, error: str = "") -> None:
    """Give the lease back after a transient failure: the next attempt may start at once."""
    Job.objects.filter(pk=found.pk).update(claimed_until=None, last_error=error[:2000], updated_at=timezone.now())


@contextmanager
def claimed(key: str, kind: str, entrustment=None):
    """`with claimed(key, kind) as found:` → the job when this worker holds it, else None."""
    found = job(key, kind, entrustment)
    if found.state != JobState.PENDING or not claim(found):
        yield None
        return
    try:
        yield found
    except BaseException as exc:
        release(found, f"{type(exc).__name__}: {exc}")
        raise
    else:
        found.refresh_from_db()
        if found.state == JobState.PENDING:
            release(found)


def recorder_for(entrustment):
    """A recorder for the adapters that stores every message with the entrustment, committed at once.

    Messages are written outside any business transaction on purpose: what was sent to a counterparty is
    evidence even if the step that sent it fails afterwards.
    """

    def record(message) -> None:
        fields = message.__dict__
        CounterpartyMessage.objects.create(
            entrustment=entrustment, party=fields["party"][:40], operation=fields["operation"][:60],
            method=fields["method"][:10], url=fields["url"], request_headers=dict(fields["request_headers"]),
            request_body=fields["request_body"] or "", response_status=fields["response_status"],
            response_headers=dict(fields["response_headers"] or {}), response_body=fields["response_body"],
            started_at=datetime.fromisoformat(fields["started_at"]),
            elapsed_ms=Decimal(str(fields["elapsed_ms"])), error=fields["error"],
            idempotency_key=(fields["idempotency_key"] or None), sha256=fields["sha256"])

    return record


def backoff(retries: int, retry_after: float | None = None) -> float:
    """Seconds before the next try: the counterparty's Retry-After when it gave one, else 2^n capped at 5 min."""
    if retry_after:
        return min(float(retry_after), 300.0)
    return float(min(2 ** retries, 300))


def on_commit(fn) -> None:
    transaction.on_commit(fn, robust=True)
