"""One link per row. On SQLite, adding the constraint rebuilds the table, which drops its triggers:
put the append-only triggers of 0002 back."""

import importlib

from django.db import migrations, models

append_only = importlib.import_module("audit.migrations.0002_links_append_only")


def sqlite_triggers_again(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        for statement in append_only.SQLITE_DOWN + append_only.SQLITE_UP:
            schema_editor.execute(statement)


class Migration(migrations.Migration):

    dependencies = [
        ('audit', '0002_links_append_only'),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name='chainlink',
            name='audit_link_row',
        ),
        migrations.AddConstraint(
            model_name='chainlink',
            constraint=models.UniqueConstraint(fields=('label', 'object_pk'), name='one_link_per_row'),
        ),
        migrations.RunPython(sqlite_triggers_again, migrations.RunPython.noop),
    ]
