"""One audit chain per environment plus one for the rest (issue 10, item 6).

Existing events get the column default ``global`` and no position: they stay
the start of the ``global`` chain, verified in id order as before, and the
first new ``global`` event links to the last of them. Adding a column with a
constant default updates no row (PostgreSQL keeps the default in the
catalog), so the append-only trigger is not involved.
"""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('audit', '0004_refuse_truncate'),
    ]

    operations = [
        migrations.AddField(
            model_name='auditevent',
            name='chain',
            field=models.CharField(default='global', editable=False, max_length=80),
        ),
        migrations.AddField(
            model_name='auditevent',
            name='chain_seq',
            field=models.BigIntegerField(blank=True, editable=False, null=True),
        ),
        migrations.AddConstraint(
            model_name='auditevent',
            constraint=models.UniqueConstraint(condition=models.Q(('chain_seq__isnull', False)), fields=('chain', 'chain_seq'), name='audit_event_chain_position'),
        ),
    ]
