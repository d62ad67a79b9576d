from django.apps import AppConfig


class CanaryConfig(AppConfig):
    name = "canary"
    verbose_name = "Canary rollouts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # /metrics reads rollouts by status and phase from the database.
        from canary.metrics import register_collector

        register_collector()
