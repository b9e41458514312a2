import hashlib
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError

from django.core import mail
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from cases import services
from cases.models import Entrustment, Event, EventType, Notification
from cases.tasks import notify_event, sla_scan


def test_the_sla_scan_is_scheduled_for_beat(db):
    assert PeriodicTask.objects.filter(task="cases.tasks.sla_scan", enabled=True).exists()


def test_the_clock_starts_at_detection_and_warns_once_before_the_deadline(flow):
    entrustment = flow.to("detected")
    assert entrustment.sla_started_at is not None
    assert sla_scan() == 0  # 24 h left: nothing to say yet
    started = timezone.now() - timedelta(hours=21)
    Entrustment.objects.filter(pk=entrustment.pk).update(sla_started_at=started)  # the clock, not the state
    assert sla_scan() == 1
    assert sla_scan() == 0
    warning = Event.objects.get(entrustment=entrustment, type=EventType.SLA_WARNING)
    assert warning.details["breached"] is False


def test_the_clock_stops_at_the_special_account_credit(flow):
    entrustment = flow.to("credited")
    assert entrustment.sla_stopped_at is not None
    assert sla_scan() == 0


def test_a_notification_is_sent_once_per_person_however_often_the_task_runs(flow, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    entrustment = flow.to("submitted")
    event = Event.objects.get(entrustment=entrustment, type=EventType.TRANSITION)
    first = notify_event(event.pk)
    again = notify_event(event.pk)
    assert first > 0 and again == 0
    assert Notification.objects.filter(event=event).count() == first == len(mail.outbox)
    assert not Notification.objects.filter(event=event, user=event.actor).exists()


def test_evidence_is_stored_with_its_sha256(flow, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    entrustment = flow.to("draft")
    upload = SimpleUploadedFile("扣押决定书.pdf", b"%PDF-1.7 seizure decision", content_type="application/pdf")
    evidence = services.evidence_add(actor=flow.w.shunyi_officer, case=entrustment.case, kind="seizure",
                                     upload=upload)
    assert evidence.sha256 == hashlib.sha256(b"%PDF-1.7 seizure decision").hexdigest()
    assert evidence.size == 25
    assert Event.objects.filter(type=EventType.EVIDENCE_ADDED, details__sha256=evidence.sha256).exists()


def test_evidence_over_the_size_limit_is_refused_and_nothing_saved(flow, settings, tmp_path):
    settings.MEDIA_ROOT, settings.EVIDENCE_MAX_BYTES = tmp_path, 10
    entrustment = flow.to("draft")
    with pytest.raises(ValidationError) as exc:
        services.evidence_add(actor=flow.w.shunyi_officer, case=entrustment.case, kind="seizure",
                              upload=SimpleUploadedFile("big.pdf", b"x" * 11))
    assert "file" in exc.value.message_dict
    assert not entrustment.case.evidence.exists()
    assert not any(tmp_path.iterdir())
