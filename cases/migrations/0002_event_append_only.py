"""The business record is append-only in the database itself, not only in the ORM."""

from django.db import migrations

PG_UP = """
CREATE OR REPLACE FUNCTION cases_event_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'cases_event is append-only: % refused', TG_OP;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER cases_event_no_update BEFORE UPDATE OR DELETE ON cases_event
    FOR EACH ROW EXECUTE FUNCTION cases_event_append_only();
"""
PG_DOWN = """
DROP TRIGGER IF EXISTS cases_event_no_update ON cases_event;
DROP FUNCTION IF EXISTS cases_event_append_only();
"""
SQLITE_UP = [
    "CREATE TRIGGER cases_event_no_update BEFORE UPDATE ON cases_event "
    "BEGIN SELECT RAISE(ABORT, 'cases_event is append-only: UPDATE refused'); END;",
    "CREATE TRIGGER cases_event_no_delete BEFORE DELETE ON cases_event "
    "BEGIN SELECT RAISE(ABORT, 'cases_event is append-only: DELETE refused'); END;",
]
SQLITE_DOWN = ["DROP TRIGGER IF EXISTS cases_event_no_update;", "DROP TRIGGER IF EXISTS cases_event_no_delete;"]


def up(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(PG_UP, params=None)
    elif vendor == "sqlite":
        for statement in SQLITE_UP:
            schema_editor.execute(statement)


def down(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(PG_DOWN)
    elif vendor == "sqlite":
        for statement in SQLITE_DOWN:
            schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [("cases", "0001_initial")]
    operations = [migrations.RunPython(up, down)]
