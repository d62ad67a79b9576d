from django.apps import AppConfig


class ChangesConfig(AppConfig):
    name = "flags.changes"
    label = "changes"
    verbose_name = "Change management"
    default_auto_field = "django.db.models.BigAutoField"
