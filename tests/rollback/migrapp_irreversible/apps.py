from django.apps import AppConfig


class MigrappIrreversibleConfig(AppConfig):
    name = "tests.rollback.migrapp_irreversible"
    label = "migrapp_irreversible"
    default_auto_field = "django.db.models.BigAutoField"
