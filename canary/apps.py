from django.apps import AppConfig


class CanaryConfig(AppConfig):
    name = "canary"
    verbose_name = "Canary rollouts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # /metrics reads rollouts by status and phase from the database.
        from canary.metrics import register_collector

        register_collector()
        # Gated and scheduled rollout starts (flags.changes, a layer below)
        from canary.services import rollout_get, rollout_start_checked
        from canary.services.releases import release_get, release_start
        from flags.changes import rollouts

        rollouts.register(
            get=rollout_get,
            start=rollout_start_checked,
            release_get=release_get,
            release_start=release_start,
        )
