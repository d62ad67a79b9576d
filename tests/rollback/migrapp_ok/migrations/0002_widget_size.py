from django.db import migrations, models


def fill_size(apps, schema_editor):
    Widget = apps.get_model("migrapp_ok", "Widget")
    for widget in Widget.objects.all():
        widget.size = len(widget.name)
        widget.save(update_fields=["size"])


def clear_size(apps, schema_editor):
    Widget = apps.get_model("migrapp_ok", "Widget")
    Widget.objects.update(size=0)


class Migration(migrations.Migration):
    dependencies = [("migrapp_ok", "0001_initial")]
    operations = [
        migrations.AddField("widget", "size", models.IntegerField(default=0)),
        migrations.RunPython(fill_size, reverse_code=clear_size),
    ]
