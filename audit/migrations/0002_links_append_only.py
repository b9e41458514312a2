"""Chain links are append-only in the database itself, as cases_event is (cases 0002): raw SQL and the
admin are refused UPDATE and DELETE too. The head row is created here so appenders only ever lock it."""

from django.db import migrations

PG_UP = """
CREATE OR REPLACE FUNCTION audit_chainlink_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit_chainlink is append-only: % refused', TG_OP;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER audit_chainlink_no_update BEFORE UPDATE OR DELETE ON audit_chainlink
    FOR EACH ROW EXECUTE FUNCTION audit_chainlink_append_only();
"""
PG_DOWN = """
DROP TRIGGER IF EXISTS audit_chainlink_no_update ON audit_chainlink;
DROP FUNCTION IF EXISTS audit_chainlink_append_only();
"""
SQLITE_UP = [
    "CREATE TRIGGER audit_chainlink_no_update BEFORE UPDATE ON audit_chainlink "
    "BEGIN SELECT RAISE(ABORT, 'audit_chainlink is append-only: UPDATE refused'); END;",
    "CREATE TRIGGER audit_chainlink_no_delete BEFORE DELETE ON audit_chainlink "
    "BEGIN SELECT RAISE(ABORT, 'audit_chainlink is append-only: DELETE refused'); END;",
]
SQLITE_DOWN = ["DROP TRIGGER IF EXISTS audit_chainlink_no_update;",
               "DROP TRIGGER IF EXISTS audit_chainlink_no_delete;"]


def up(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(PG_UP, params=None)
    elif vendor == "sqlite":
        for statement in SQLITE_UP:
            schema_editor.execute(statement)
    apps.get_model("audit", "ChainHead").objects.using(schema_editor.connection.alias).get_or_create(pk=1)


def down(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(PG_DOWN)
    elif vendor == "sqlite":
        for statement in SQLITE_DOWN:
            schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [("audit", "0001_initial")]
    operations = [migrations.RunPython(up, down)]
