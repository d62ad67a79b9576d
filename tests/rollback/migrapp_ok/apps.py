from django.apps import AppConfig


class MigrappOkConfig(AppConfig):
    name = "tests.rollback.migrapp_ok"
    label = "migrapp_ok"
    default_auto_field = "django.db.models.BigAutoField"
