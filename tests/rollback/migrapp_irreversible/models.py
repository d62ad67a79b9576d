from django.db import models


class Gadget(models.Model):
    name = models.CharField(max_length=100)

    class Meta:
        app_label = "migrapp_irreversible"
