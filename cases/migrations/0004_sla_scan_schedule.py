"""Beat runs the SLA scan every minute; the schedule lives in the database (django-celery-beat)."""

from django.db import migrations


def schedule(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every_minute, _ = IntervalSchedule.objects.get_or_create(every=60, period="seconds")
    PeriodicTask.objects.get_or_create(name="SLA clock: warn before the 24-hour breach",
                                       defaults={"task": "cases.tasks.sla_scan", "interval": every_minute})


def unschedule(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(task="cases.tasks.sla_scan").delete()


class Migration(migrations.Migration):
    dependencies = [("cases", "0003_approval_history"), ("django_celery_beat", "0019_alter_periodictasks_options")]
    operations = [migrations.RunPython(schedule, unschedule)]
