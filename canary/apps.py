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
        # (a pipeline's stage started so moves its pipeline)
        from canary.services import rollout_get
        from canary.services.pipeline_flow import (
            gated_release_start,
            gated_rollout_start,
        )
        from canary.services.releases import release_get
        from flags.changes import rollouts

        rollouts.register(
            get=rollout_get,
            start=gated_rollout_start,
            release_get=release_get,
            release_start=gated_release_start,
        )
