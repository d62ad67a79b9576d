from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("migrapp_ok", "0002_widget_size")]
    operations = [
        migrations.AddIndex(
            "widget", models.Index(fields=["name", "size"], name="migrapp_ok_widget_name_size")
        ),
    ]
