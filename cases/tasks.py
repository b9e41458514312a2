"""Thin tasks: take ids, claim the work in the database, call services or send mail."""

import logging

from celery import shared_task
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.utils import timezone

from agencies.models import Membership, Role

from .models import SLA_RUNNING, Entrustment, Event, EventType, Notification
from .workflow import emit

log = logging.getLogger(__name__)


@shared_task(acks_late=True)
def notify_event(event_id: int) -> int:
    """Tell the parties to an entrustment that it changed state. Idempotent per (event, person)."""
    event = Event.objects.select_related("entrustment").filter(pk=event_id).first()
    if event is None or event.entrustment is None or event.type not in (EventType.TRANSITION,
                                                                        EventType.SLA_WARNING):
        return 0
    e = event.entrustment
    orgs = [o for o in (e.bureau_id, e.bce_id, e.agency_id) if o]
    members = (
        Membership.objects.filter(organisation_id__in=orgs, is_active=True, role__in=[Role.OFFICER, Role.APPROVER])
        .exclude(user=event.actor)
        .select_related("user")
    )
    sent = 0
    for membership in members:
        user = membership.user
        try:
            with transaction.atomic():
                notification = Notification.objects.create(event=event, user=user)
        except IntegrityError:
            continue  # already notified by an earlier delivery of this task
        if user.email:
            send_mail(
                subject=f"[{e.number}] {event.get_type_display()}: {e.get_state_display()}",
                message=f"{e.number} ({e.case.case_number}): {event.from_state} → {event.to_state}\n{event.reason}",
                from_email=None,
                recipient_list=[user.email],
            )
            Notification.objects.filter(pk=notification.pk).update(emailed_at=timezone.now())
        sent += 1
    return sent


@shared_task(acks_late=True)
def sla_scan() -> int:
    """Warn once per entrustment when the detection-to-credit clock nears its deadline."""
    warned = 0
    now = timezone.now()
    running = Entrustment.objects.filter(state__in=SLA_RUNNING, sla_started_at__isnull=False,
                                         sla_stopped_at__isnull=True).select_related("policy", "case")
    for e in running:
        warn_at = e.sla_deadline - timezone.timedelta(hours=e.policy.sla_warn_hours)
        if now < warn_at or e.events.filter(type=EventType.SLA_WARNING).exists():
            continue
        with transaction.atomic():
            locked = Entrustment.objects.select_for_update().get(pk=e.pk)
            if locked.events.filter(type=EventType.SLA_WARNING).exists():
                continue
            emit(case=e.case, entrustment=locked, type=EventType.SLA_WARNING,
                 details={"deadline": e.sla_deadline.isoformat(), "state": locked.state,
                          "breached": now >= e.sla_deadline})
        warned += 1
    return warned
