from django.db import models


class Widget(models.Model):
    name = models.CharField(max_length=100)
    size = models.IntegerField(default=0)

    class Meta:
        app_label = "migrapp_ok"
        indexes = [
            models.Index(fields=["name", "size"], name="migrapp_ok_widget_name_size")
        ]
