"""Beat runs the workers' dispatcher and the bank statement poll every few seconds, the re-org re-check every
ten minutes."""

import os

from django.db import migrations


def schedule(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every = int(float(os.environ.get("PORTAL_WORKER_POLL_SECONDS", "5")))
    often, _ = IntervalSchedule.objects.get_or_create(every=max(1, every), period="seconds")
    ten_minutes, _ = IntervalSchedule.objects.get_or_create(every=600, period="seconds")
    PeriodicTask.objects.get_or_create(name="Workers: dispatch the steps entrustments wait for",
                                       defaults={"task": "counterparties.tasks.dispatch", "interval": often})
    PeriodicTask.objects.get_or_create(name="Bank: read new statements and notifications",
                                       defaults={"task": "counterparties.bank_tasks.poll_bank_statements",
                                                 "interval": often})
    hourly, _ = IntervalSchedule.objects.get_or_create(every=3600, period="seconds")
    PeriodicTask.objects.get_or_create(name="Bonds: mark to market, call a top-up under the ratio",
                                       defaults={"task": "counterparties.tasks.remark_bonds", "interval": hourly})
    PeriodicTask.objects.get_or_create(name="Chains: re-check confirmed transfers for re-organisations",
                                       defaults={"task": "counterparties.tasks.recheck_transfers",
                                                 "interval": ten_minutes})


def unschedule(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(
        task__in=["counterparties.tasks.dispatch", "counterparties.tasks.recheck_transfers",
                  "counterparties.tasks.remark_bonds",
                  "counterparties.bank_tasks.poll_bank_statements"]).delete()


class Migration(migrations.Migration):
    dependencies = [("counterparties", "0001_initial"), ("django_celery_beat", "0019_alter_periodictasks_options")]
    operations = [migrations.RunPython(schedule, unschedule)]
