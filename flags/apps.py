from django.apps import AppConfig


class FlagsConfig(AppConfig):
    name = "flags"
    verbose_name = "Flags"
    default_auto_field = "django.db.models.BigAutoField"
