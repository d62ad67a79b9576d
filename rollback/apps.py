from django.apps import AppConfig


class RollbackConfig(AppConfig):
    name = "rollback"
    verbose_name = "Rollback"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from rollback import checks  # noqa: F401  (registers the system checks)
