"""Existing policies get a quorum for the actions that only now ask for approvals.

Only missing keys are added, at 1 (what `DisposalPolicy.quorum` already assumed for them), so a
jurisdiction that had set its own numbers keeps them and nothing becomes easier or harder to approve.
"""

from django.db import migrations

NEW_ACTIONS = ("fx", "bond_release", "bond_forfeit", "whitelist")


def add_missing(apps, schema_editor):
    DisposalPolicy = apps.get_model("cases", "DisposalPolicy")
    for policy in DisposalPolicy.objects.all():
        quorums = dict(policy.quorums or {})
        missing = {action: 1 for action in NEW_ACTIONS if action not in quorums}
        if missing:
            # update(): the historical model has no simple-history manager here; the migration is the record.
            DisposalPolicy.objects.filter(pk=policy.pk).update(quorums={**quorums, **missing})


class Migration(migrations.Migration):
    dependencies = [("cases", "0010_whitelist_and_quorums")]
    operations = [migrations.RunPython(add_missing, migrations.RunPython.noop)]
