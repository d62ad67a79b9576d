from django.db import migrations


def uppercase(apps, schema_editor):
    Gadget = apps.get_model("migrapp_irreversible", "Gadget")
    for gadget in Gadget.objects.all():
        gadget.name = gadget.name.upper()
        gadget.save(update_fields=["name"])


class Migration(migrations.Migration):
    dependencies = [("migrapp_irreversible", "0001_initial")]
    # No reverse_code: the original case is lost, so this cannot be undone.
    operations = [migrations.RunPython(uppercase)]
