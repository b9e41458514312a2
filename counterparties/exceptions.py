"""Raising and resolving the exceptions workers record on an entrustment.

A worker that meets something it must not decide (a wrong amount credited, a deposit from an unexpected
address, a quote below the reserve, a re-organised transfer, a bank outage that outlasts the retries) calls
:func:`record_exception` and stops that line of work. People see it on the entrustment's page and resolve it.
"""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.translation import gettext as _

from cases.models import EventType
from cases.workflow import emit, reason_required, require

from .models import OperationalException


def record_exception(*, entrustment, kind: str, key: str, message: str, party: str = "", code: str = "",
                     details: dict | None = None) -> OperationalException:
    """Open an exception under `key`, or count another sighting of the open one. Idempotent per key."""
    with transaction.atomic():
        current = OperationalException.objects.select_for_update().filter(key=key, resolved_at__isnull=True).first()
        if current is not None:
            OperationalException.objects.filter(pk=current.pk).update(
                occurrences=F("occurrences") + 1, last_seen_at=timezone.now())
            current.refresh_from_db()
            return current
        try:
            with transaction.atomic():
                exception = OperationalException.objects.create(
                    entrustment=entrustment, kind=kind, key=key[:200], party=party, code=str(code or ""),
                    message=message, details=details or {})
        except IntegrityError:  # another worker opened it a moment ago
            return OperationalException.objects.get(key=key, resolved_at__isnull=True)
        if entrustment is not None:
            emit(case=entrustment.case, entrustment=entrustment, type=EventType.EXCEPTION_RAISED,
                 reason=message, details={"exception": exception.pk, "kind": kind, "party": party,
                                          "code": str(code or ""), **(details or {})})
        return exception


def open_exceptions(entrustment, *, kind: str | None = None, prefix: str | None = None):
    rows = OperationalException.objects.filter(entrustment=entrustment, resolved_at__isnull=True)
    if kind:
        rows = rows.filter(kind=kind)
    if prefix:
        rows = rows.filter(key__startswith=prefix)
    return rows


@transaction.atomic
def resolve_exception(*, actor, exception: OperationalException, resolution: str) -> OperationalException:
    """A person who may act for the agency or BCE says how the exception was dealt with."""
    resolution = reason_required(resolution)
    exception = OperationalException.objects.select_for_update().get(pk=exception.pk)
    entrustment = exception.entrustment
    if entrustment is None:
        raise PermissionError("Exceptions without an entrustment are resolved in the admin.")
    from agencies.models import Role
    from cases.workflow import DisposalError

    try:
        membership = require(actor, entrustment.agency, Role.OFFICER, Role.APPROVER)
    except DisposalError:
        membership = require(actor, entrustment.bce, Role.OFFICER, Role.APPROVER)
    if exception.resolved_at is not None:
        raise DisposalError(_("This exception is already resolved."))
    exception.resolved_at, exception.resolved_by, exception.resolution = timezone.now(), actor, resolution
    exception._history_user = actor
    exception.save()
    emit(case=entrustment.case, entrustment=entrustment, actor=actor, membership=membership,
         type=EventType.EXCEPTION_RESOLVED, reason=resolution,
         details={"exception": exception.pk, "kind": exception.kind})
    return exception
