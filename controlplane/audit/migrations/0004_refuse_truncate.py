"""On PostgreSQL, refuse TRUNCATE of the audit table in the database too.

TRUNCATE fires no row trigger, so the append-only trigger of 0002 cannot see
it; a BEFORE TRUNCATE statement trigger calls the same refusing function.
A superuser can still bypass every trigger (session_replication_role), which
is why the application's role must not be one (docs/audit.md); checkpoints
catch what gets past anyway.
"""
from django.db import migrations

CREATE = """
DROP TRIGGER IF EXISTS audit_event_no_truncate ON audit_auditevent;
CREATE TRIGGER audit_event_no_truncate
    BEFORE TRUNCATE ON audit_auditevent
    FOR EACH STATEMENT EXECUTE FUNCTION audit_event_append_only();
"""

DROP = """
DROP TRIGGER IF EXISTS audit_event_no_truncate ON audit_auditevent;
"""


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE, params=None)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP, params=None)


class Migration(migrations.Migration):
    dependencies = [("audit", "0003_canonical_text")]
    operations = [migrations.RunPython(forwards, backwards)]
